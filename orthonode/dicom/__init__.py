"""Receiving: the DICOM upper layer side of the node (PS3.7, PS3.8) -- AE wiring, thin handlers, storage."""
