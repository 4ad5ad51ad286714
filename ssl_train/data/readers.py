"""File readers shared by the scanner and the dataset: DICOM pixels, NIfTI volumes, PNG / JPEG samples.

Pixel decoding goes through pydicom's pixel handlers (GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle,
Pillow). For *JPEG Extended* (1.2.840.10008.1.2.4.51) with 12-bit samples, which no permissively licensed
pydicom plugin decodes, the node's GDCM-based reader (:func:`orthonode.inference.loading.decode_pixels`) is
used when it is importable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGExtended12Bit

__all__ = ["read_dicom_pixels", "read_nifti_volume", "read_raster"]

_RASTER_MODES = ("L", "I;16", "I;16L", "I;16B", "I", "RGB", "RGBA")


def read_dicom_pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """The dataset and its stored pixel values (before any LUT), frames first for multi-frame instances.

    Raises:
        Exception: whatever pydicom (or the GDCM fallback) raises for an undecodable file.
    """
    ds = dcmread(path)
    try:
        return ds, np.asarray(ds.pixel_array)
    except Exception as exc:
        if ds.file_meta.get("TransferSyntaxUID") != JPEGExtended12Bit:
            raise
        try:
            from orthonode.inference.loading import decode_pixels
        except ImportError:
            raise exc from None
        return ds, np.asarray(decode_pixels(Path(path)))


def read_nifti_volume(path: Path) -> np.ndarray:
    """A NIfTI file as ``[slices, rows, cols]`` (SimpleITK's z, y, x order; a 2-D image is one slice)."""
    import SimpleITK as sitk  # noqa: N813

    array = np.asarray(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    return array[None] if array.ndim == 2 else array


def read_raster(path: Path) -> np.ndarray:
    """The samples of a PNG / JPEG: ``[H, W]`` (8- or 16-bit) or ``[H, W, 3|4]``; palettes become gray."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in _RASTER_MODES:
            return np.asarray(image.convert("L"))
        return np.asarray(image)
