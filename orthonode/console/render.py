"""A stored result object as an image for the browser: the Secondary Capture key image as PNG.

The SC is our own output (``orthonode.encode.sc``): 8-bit RGB or MONOCHROME2 pixels, uncompressed. It is
read with pydicom and written with Pillow; nothing else is decoded here, and a file that is not an image
gives :class:`NotAnImage` (the API answers 404 with the reason).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread

from orthonode.errors import OrthonodeError

#: The longest side of a rendered key image (the SC is at most the source's size; this bounds the PNG).
MAX_SIDE = 2048


class NotAnImage(OrthonodeError):
    """The stored object has no pixels to show."""


def key_image_png(path: Path) -> bytes:
    ds = dcmread(path)
    if "PixelData" not in ds:
        raise NotAnImage(f"{path.name}: no Pixel Data (a {ds.get('Modality', '?')} object)")
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim == 4 or (pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1):
        pixels = pixels[0]  # the first frame
    if pixels.dtype != np.uint8:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 255 - pixels
    image = Image.fromarray(pixels)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
