"""Pixels from stored DICOM files: single radiographs and MR volumes as float32 in ``[0, 1]``.

Decoding goes through pydicom's pixel handlers (GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle,
Pillow), and GDCM directly for 12-bit *JPEG Extended* (1.2.840.10008.1.2.4.51), which pydicom only
decodes through the GPL-licensed pylibjpeg-libjpeg (:mod:`orthonode.inference.decoding`).

Intensities are *not* handled here: the grayscale pipeline of PS3.3 C.11 (Modality LUT, VOI LUT / window
with VOI LUT Function, MONOCHROME1 inversion) and the per-volume robust percentile window live in
:mod:`orthonode.inference.intensity`, so that the node sees exactly the pixels the encoder was pretrained on.
This module adds what the node needs around it:

* :func:`load_radiograph` -- one projection image (first frame of a multi-frame instance), with its pixel
  spacing (PS3.3 10.7.1.3: Pixel Spacing, else Imager Pixel Spacing), laterality, view and source.
* :func:`load_volume` -- one MR (or other cross-sectional) series as a stack ``[S, H, W]`` ordered along the
  slice normal (PS3.3 C.7.6.2.1.1), from single-frame instances or Enhanced multi-frame instances (Per-frame
  and Shared Functional Groups, PS3.3 C.7.6.16), keeping the largest geometrically consistent stack.

This module is the loaders' one entry point; the work is done, one job per module, by
:mod:`~orthonode.inference.decoding` (stored pixel values), :mod:`~orthonode.inference.dicom_fields`
(typed header reads, functional groups), :mod:`~orthonode.inference.radiograph`,
:mod:`~orthonode.inference.slices` (slice geometry, the consistent stack, its order and spacing) and
:mod:`~orthonode.inference.volume` (volume assembly and its intensity window).

Every failure to read or decode raises :class:`DecodeError` with the file name and the reason. Notes and
errors name files, never patients.
"""

from orthonode.inference.decoding import DecodeError, decode_pixels
from orthonode.inference.radiograph import Radiograph, load_radiograph
from orthonode.inference.slices import Plane, plane_of_normal
from orthonode.inference.volume import MAX_SLICES, SeriesTooLarge, Volume, load_volume

__all__ = [
    "MAX_SLICES",
    "DecodeError",
    "Plane",
    "Radiograph",
    "SeriesTooLarge",
    "Volume",
    "decode_pixels",
    "load_radiograph",
    "load_volume",
    "plane_of_normal",
]
