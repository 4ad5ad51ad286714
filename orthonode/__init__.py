"""OrthoFoundation node: a DICOM node that receives musculoskeletal studies from PACS, runs a foundation
model with task heads, and sends the findings back as DICOM Structured Reports and Secondary Captures."""

__version__ = "0.1.0"
