"""Stored pixel values of DICOM files: pydicom's pixel handlers, and GDCM directly for 12-bit JPEG Extended.

Decoding goes through pydicom's pixel handlers (GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle,
Pillow). One gap remains with permissively licensed decoders: *JPEG Extended* (1.2.840.10008.1.2.4.51,
PS3.5 Annex A.4.1) with 12-bit samples, which pydicom only decodes through the GPL-licensed
pylibjpeg-libjpeg. GDCM itself decodes it (its 12-bit IJG build), so for that syntax we call GDCM's
reader directly. Every failure raises :class:`DecodeError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array as pydicom_pixel_array
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


def _needs_gdcm(ds: Dataset) -> bool:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return bool(syntax == JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8)


def stored_pixels(ds: Dataset, path: Path, frame: int | None = None) -> np.ndarray:
    """Stored values of ``ds`` (read from ``path``): all frames (frames first), or only frame ``frame``.

    Raises:
        DecodeError: naming the file and the decoder's reason.
    """
    try:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DecodeError(f"{path.name}: no Pixel Data in the instance")
        if _needs_gdcm(ds):
            pixels = _gdcm_pixels(path)
            multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
            return pixels[frame] if (frame is not None and multi) else pixels
        if frame is not None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return np.asarray(pydicom_pixel_array(ds, index=frame))
        return np.asarray(ds.pixel_array)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{path.name}: cannot decode pixels: {type(exc).__name__}: {exc}") from exc


def read_dataset(path: Path, *, pixels: bool = True) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:
        raise DecodeError(f"{path.name}: not a readable DICOM file: {type(exc).__name__}: {exc}") from exc


def decode_pixels(path: Path) -> np.ndarray:
    """The stored pixel values of ``path`` (before Modality LUT), frames first for multi-frame images."""
    path = Path(path)
    return stored_pixels(read_dataset(path), path)
