"""Per-modality intensity handling: stored pixels to single-channel float32 in ``[0, 1]``.

Three paths, chosen by the modality family of the image (see :func:`modality_family`):

* **Radiographs** (CR, DX, RG, MG, XA, RF, IO, PX and other single images): the DICOM grayscale pipeline of
  PS3.3 C.11 in order -- Modality LUT (C.11.1: Modality LUT Sequence or Rescale Slope / Intercept), then
  VOI LUT (C.11.2: the first item of the VOI LUT Sequence, or the first Window Center / Width pair with the
  VOI LUT Function of C.11.2.1.2, LINEAR / LINEAR_EXACT / SIGMOID), mapped onto ``[0, 1]``; then
  MONOCHROME1 (PS3.3 C.7.6.3.1.2: minimum sample value displayed white) inverted so that bone is bright,
  as in every MONOCHROME2 radiograph. When the instance carries no VOI at all the Modality-LUT output is
  mapped with a robust percentile window of the image itself.
* **Cross-sectional volumes** (MR, and CT / PET / NIfTI volumes): Modality LUT, then a robust percentile
  window computed once over the *whole series volume* (default 0.5th--99.5th percentile), clipped. MR
  signal has no absolute unit, so per-volume normalisation is what makes slices of different scanners and
  sequences comparable; computing it per volume (not per slice) keeps the relative brightness of the
  slices of one series.
* **Raster files** (PNG / JPEG): 8-bit samples divided by 255 (16-bit PNG by 65535); colour files are
  converted to luminance first.

Everything here is NumPy on CPU and deterministic; nothing depends on torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi

__all__ = [
    "DEFAULT_PERCENTILES",
    "INTENSITY_VERSION",
    "RADIOGRAPH_MODALITIES",
    "VOLUME_MODALITIES",
    "apply_window",
    "dicom_frame_to_unit",
    "first_value",
    "modality_family",
    "modality_values",
    "normalise_range",
    "percentile_range",
    "radiograph_to_unit",
    "raster_to_unit",
]

#: Bumped whenever the mapping from stored pixels to ``[0, 1]`` changes, so stale cached slices are not
#: reused (it is part of the decoded-slice cache key in :mod:`ssl_train.data.dataset`).
INTENSITY_VERSION = 1

#: Default robust window of the volume and no-VOI radiograph paths: ``(low, high)`` percentiles.
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: Projection radiography and other single-image X-ray modalities (PS3.3 C.7.3.1.1.1 defined terms).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "MG", "IO", "PX", "XA", "RF", "XR"})
#: Modalities whose series are volumes of 2-D slices (normalised per volume).
VOLUME_MODALITIES: dict[str, str] = {"MR": "mri", "CT": "ct", "PT": "ct", "NM": "ct"}

Family = Literal["radiograph", "mri", "ct", "other"]
VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]

# Above this many samples the percentiles of a volume are taken on a regular subsample (deterministic).
_MAX_PERCENTILE_SAMPLES = 4_000_000


def modality_family(modality: str) -> Family:
    """The intensity / augmentation family of a DICOM Modality (0008,0060) code.

    ``radiograph`` for projection X-ray codes, ``mri`` for MR, ``ct`` for CT and the other tomographic
    volumes (PT, NM), ``other`` for anything else (secondary captures, unknown) -- which is handled like a
    radiograph by the intensity path (it is a single image) and the augmentation.
    """
    code = modality.strip().upper()
    if code in RADIOGRAPH_MODALITIES:
        return "radiograph"
    if code in VOLUME_MODALITIES:
        return "mri" if VOLUME_MODALITIES[code] == "mri" else "ct"
    return "other"


def first_value(value: Any) -> float:
    """The first number of a possibly multi-valued DICOM element (Window Center may hold several)."""
    if isinstance(value, MultiValue | list | tuple):
        if len(value) == 0:
            raise ValueError("empty multi-valued element")
        value = value[0]
    return float(value)


def normalise_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(values - low) / (high - low)`` clipped to ``[0, 1]`` as float32; all zeros when ``high <= low``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"normalisation range must be finite, got ({low}, {high})")
    out = np.asarray(values, dtype=np.float64)
    if high <= low:
        return np.zeros(out.shape, dtype=np.float32)
    return np.clip((out - low) / (high - low), 0.0, 1.0).astype(np.float32)


def percentile_range(
    values: np.ndarray | Sequence[np.ndarray], percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Robust ``(low, high)`` of all samples of ``values`` (one array or the slices of a volume).

    Args:
        values: an array of any shape, or a sequence of arrays (the slices of one series) pooled together.
        percentiles: ``(low, high)`` percentiles in ``[0, 100]``, ``low < high``.

    Returns:
        The two percentiles as floats. Very large volumes are subsampled with a regular stride (so the
        result is deterministic) to at most a few million samples.

    Raises:
        ValueError: for bad percentiles or no finite samples.
    """
    lo_pct, hi_pct = percentiles
    if not (0.0 <= lo_pct < hi_pct <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    if not arrays:
        raise ValueError("no samples to take percentiles of")
    total = sum(int(a.size) for a in arrays)
    stride = max(1, math.ceil(total / _MAX_PERCENTILE_SAMPLES))
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel()[::stride] for a in arrays])
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError("no finite samples to take percentiles of")
    low, high = np.percentile(flat, [lo_pct, hi_pct])
    return float(low), float(high)


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A VOI window (PS3.3 C.11.2.1.2) onto ``[0, 1]`` (i.e. ``y_min = 0``, ``y_max = 1``), float32.

    * LINEAR (C.11.2.1.2.1): ``x <= c - 0.5 - (w - 1) / 2 -> 0``; ``x > c - 0.5 + (w - 1) / 2 -> 1``;
      otherwise ``((x - (c - 0.5)) / (w - 1) + 0.5)``. Requires ``w >= 1`` (``w == 1`` is a threshold at
      ``c - 0.5``).
    * LINEAR_EXACT (C.11.2.1.3.2): ``clip((x - c) / w + 0.5, 0, 1)``; requires ``w > 0``.
    * SIGMOID (C.11.2.1.3.1): ``1 / (1 + exp(-4 (x - c) / w))``; requires ``w > 0``.

    Raises:
        ValueError: for an unknown function or a width out of range for it.
    """
    x = np.asarray(values, dtype=np.float64)
    kind = function.strip().upper() or "LINEAR"
    if kind == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR VOI window width must be >= 1, got {width}")
        if width == 1:
            return (x > center - 0.5).astype(np.float32)
        y = (x - (center - 0.5)) / (width - 1) + 0.5
        y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, y)
        y = np.where(x > center - 0.5 + (width - 1) / 2, 1.0, y)
        return np.clip(y, 0.0, 1.0).astype(np.float32)
    if width <= 0:
        raise ValueError(f"{kind} VOI window width must be > 0, got {width}")
    if kind == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0).astype(np.float32)
    if kind == "SIGMOID":
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    raise ValueError(f"unknown VOI LUT Function {function!r} (LINEAR, LINEAR_EXACT or SIGMOID)")


def modality_values(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values to Modality-LUT output (PS3.3 C.11.1) as float64, via pydicom's ``apply_modality_lut``.

    Rescale Slope / Intercept or the Modality LUT Sequence; the identity when neither is present.
    """
    return np.asarray(apply_modality_lut(np.asarray(pixels), ds), dtype=np.float64)


def _voi_lut_unit(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT Sequence item (PS3.3 C.11.2.1.1) applied with pydicom, scaled onto ``[0, 1]``.

    The LUT output range is ``0 .. 2**n - 1`` with ``n`` the third value of LUT Descriptor (C.11.2.1.1
    notes that it can be stated wrongly; we therefore take the larger of that and the largest mapped value).
    """
    item = ds.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2])
    # LUT inputs are integers (the LUT is indexed by value); a fractional Rescale output is rounded.
    indices = np.rint(values).astype(np.int64)
    mapped = np.asarray(apply_voi(indices, ds, index=0), dtype=np.float64)
    top = float(2**bits - 1)
    if mapped.size and float(mapped.max()) > top:
        top = float(mapped.max())
    return np.clip(mapped / max(top, 1.0), 0.0, 1.0).astype(np.float32)


def radiograph_to_unit(
    pixels: np.ndarray,
    ds: Dataset,
    *,
    prefer_voi_lut: bool = True,
    use_voi: bool = True,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """One radiograph frame to float32 in ``[0, 1]``, bone bright (PS3.3 C.11.1, C.11.2, C.7.6.3.1.2).

    Args:
        pixels: the stored values of one frame ``[rows, cols]`` (before any LUT).
        ds: the instance's dataset (header; pixel data not needed).
        prefer_voi_lut: when both a VOI LUT Sequence and a window are present, use the LUT (the standard
            leaves the choice to the application; this matches pydicom's default).
        use_voi: apply the instance's VOI (``False`` always uses the percentile window instead).
        percentiles: robust window used when the instance carries no usable VOI.

    Returns:
        float32 ``[rows, cols]`` in ``[0, 1]``; MONOCHROME1 images are inverted so that the highest
        attenuation (bone) is bright.
    """
    values = modality_values(pixels, ds)
    unit: np.ndarray | None = None
    if use_voi:
        has_lut = "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0
        has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
        if has_lut and (prefer_voi_lut or not has_window):
            unit = _voi_lut_unit(values, ds)
        elif has_window:
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
            unit = apply_window(values, first_value(ds.WindowCenter), first_value(ds.WindowWidth), function)
    if unit is None:
        unit = normalise_range(values, *percentile_range(values, percentiles))
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return np.ascontiguousarray(unit, dtype=np.float32)


def dicom_frame_to_unit(
    pixels: np.ndarray,
    ds: Dataset,
    family: str,
    volume_range: tuple[float, float] | None = None,
    *,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """One DICOM frame to float32 ``[0, 1]`` by family: radiograph path or the per-volume window.

    Args:
        pixels: stored values of the frame.
        ds: the dataset (header).
        family: :func:`modality_family` of the series.
        volume_range: the ``(low, high)`` Modality-LUT values of the whole series volume (computed by the
            scanner); when ``None`` for a volume family, the frame's own percentiles are used.
        percentiles: percentiles for that fallback.
    """
    if family in ("radiograph", "other"):
        return radiograph_to_unit(pixels, ds, percentiles=percentiles)
    values = modality_values(pixels, ds)
    low, high = volume_range if volume_range is not None else percentile_range(values, percentiles)
    unit = normalise_range(values, low, high)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return np.ascontiguousarray(unit, dtype=np.float32)


def raster_to_unit(array: np.ndarray) -> np.ndarray:
    """Samples of a PNG / JPEG to float32 ``[0, 1]``: ``uint8 / 255``, ``uint16 / 65535``.

    Colour arrays ``[H, W, 3|4]`` are converted to luminance (ITU-R BT.601 weights, alpha dropped).
    Integer arrays of other widths (Pillow's 32-bit ``I`` mode from 16-bit PNGs) are divided by 65535.

    Raises:
        ValueError: for a shape that is not ``[H, W]`` or ``[H, W, C]``.
    """
    arr = np.asarray(array)
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] in (3, 4):
            scale = 255.0 if arr.dtype == np.uint8 else 65535.0
            rgb = arr[..., :3].astype(np.float64) / scale
            lum = rgb @ np.array([0.299, 0.587, 0.114])
            return np.clip(lum, 0.0, 1.0).astype(np.float32)
        else:
            raise ValueError(f"unsupported raster channel count {arr.shape[2]}")
    if arr.ndim != 2:
        raise ValueError(f"raster image must be [H, W] or [H, W, C], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr.astype(np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)
