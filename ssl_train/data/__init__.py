"""Pretraining data: corpus scanner and manifest, per-modality intensity handling, the manifest dataset.

* :mod:`ssl_train.data.scan` -- DICOM / NIfTI / PNG / JPEG folders to a manifest of 2-D images with hashed
  patient keys and patient-level train / val splits (:mod:`ssl_train.data.headers` reads each file,
  :mod:`ssl_train.data.manifest` holds the rows, splits and CSV).
* :mod:`orthonode.inference.intensity` -- stored pixels to float32 ``[0, 1]`` (DICOM PS3.3 C.11 LUTs,
  MONOCHROME1, per-volume percentile windows for MR, ``/255`` for 8-bit rasters).
* :mod:`ssl_train.data.dataset` -- a torch ``Dataset`` of ``[1, H, W]`` tensors with a decoded-slice cache.
* :mod:`ssl_train.data.batches` -- a run's multi-crop dataset and each process's batches of an iteration.
* :mod:`ssl_train.data.masking` -- the iBOT block masks of each iteration's student global crops.
"""

from ssl_train.data.dataset import (
    ImageTransform,
    ManifestDataset,
    SampleDecodeError,
    decode_frames,
    item_seed,
)
from ssl_train.data.manifest import (
    MANIFEST_COLUMNS,
    ManifestRow,
    SplitLeakError,
    assign_split,
    read_manifest,
    verify_patient_split,
    write_manifest,
)
from ssl_train.data.scan import ScanConfig, ScanResult, SkippedFile, SliceSampling, scan_corpus

__all__ = [
    "MANIFEST_COLUMNS",
    "ImageTransform",
    "ManifestDataset",
    "ManifestRow",
    "SampleDecodeError",
    "ScanConfig",
    "ScanResult",
    "SkippedFile",
    "SliceSampling",
    "SplitLeakError",
    "assign_split",
    "decode_frames",
    "item_seed",
    "read_manifest",
    "scan_corpus",
    "verify_patient_split",
    "write_manifest",
]
