"""Pixels from stored DICOM files.

Decoding goes through pydicom's pixel handlers (GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle,
Pillow). One gap remains with permissively licensed decoders: *JPEG Extended* (1.2.840.10008.1.2.4.51)
with 12-bit samples, which pydicom only decodes through the GPL-licensed pylibjpeg-libjpeg. GDCM itself
decodes it (its 12-bit IJG build), so for that syntax we call GDCM's reader directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import JPEGExtended12Bit

from orthonode.errors import OrthonodeError


class DecodeError(OrthonodeError):
    """A stored instance whose pixels cannot be decoded (names the file and the reason)."""


def _gdcm_pixels(path: Path) -> np.ndarray:
    import gdcm

    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise DecodeError(f"{path.name}: GDCM could not read the image")
    image = reader.GetImage()
    fmt = image.GetPixelFormat()
    dtypes = {
        gdcm.PixelFormat.UINT8: np.uint8,
        gdcm.PixelFormat.INT8: np.int8,
        gdcm.PixelFormat.UINT16: np.uint16,
        gdcm.PixelFormat.INT16: np.int16,
        gdcm.PixelFormat.UINT32: np.uint32,
        gdcm.PixelFormat.INT32: np.int32,
    }
    dtype = dtypes.get(fmt.GetScalarType())
    if dtype is None:
        raise DecodeError(f"{path.name}: unsupported GDCM scalar type {fmt.GetScalarTypeAsString()}")
    dims = [image.GetDimension(i) for i in range(image.GetNumberOfDimensions())]
    columns, rows = dims[0], dims[1]
    frames = dims[2] if len(dims) > 2 else 1
    samples = fmt.GetSamplesPerPixel()
    buffer = image.GetBuffer().encode("utf-8", "surrogateescape")
    pixels = np.frombuffer(buffer, dtype=dtype)
    shape = (frames, rows, columns, samples) if samples > 1 else (frames, rows, columns)
    if pixels.size != int(np.prod(shape)):
        raise DecodeError(f"{path.name}: GDCM returned {pixels.size} samples for shape {shape}")
    pixels = pixels.reshape(shape)
    return pixels[0] if frames == 1 else pixels


def decode_pixels(path: Path) -> np.ndarray:
    """The stored pixel values of ``path`` (before Modality LUT), frames first for multi-frame images."""
    try:
        ds = dcmread(path)
        if ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8:
            return _gdcm_pixels(path)
        return np.asarray(ds.pixel_array)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{path.name}: cannot decode pixels: {type(exc).__name__}: {exc}") from exc
