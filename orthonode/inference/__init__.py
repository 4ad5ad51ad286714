"""Inference: pixels from DICOM, the foundation encoder, task heads, and the pipeline that runs a job."""
