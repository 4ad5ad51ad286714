"""DICOM Conformance Statement of the node and validation of the objects it emits."""
