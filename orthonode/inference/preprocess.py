"""From loaded pixels to the model's input grid, and back: letterboxing and slice selection.

* :func:`fit_to_square` resizes an image ``[H, W]`` so that its long side fills the model's square input
  (aspect ratio preserved, antialiased bilinear resampling as in torch's ``F.interpolate``), pads the short
  side with 0 (black) on both sides, and returns a :class:`Placement` that maps maps computed on the model
  grid (a heat map of patch tokens, or of input pixels) back onto the original image.
* :func:`select_slices` chooses which slices of a volume a head sees: the ``count`` central slices, or
  ``count`` slices evenly spread over the stack without its outer ends.

The images are the single-channel float32 ``[0, 1]`` arrays of :mod:`orthonode.inference.loading`; the
model's own normalisation ((x - mean) / std, repeated channels) is applied later, at the model input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from orthonode.inference.loading import Volume

__all__ = ["Placement", "SliceStrategy", "fit_to_square", "select_slices"]

SliceStrategy = Literal["central", "uniform"]
SLICE_STRATEGIES: tuple[str, ...] = get_args(SliceStrategy)


@dataclass(frozen=True)
class Placement:
    """Where an image of ``source_shape`` sits on the square model input of side ``size``.

    The image was resized to ``content_shape`` (scale factors :attr:`scale`) and placed with its top-left
    pixel at ``offset`` = ``(top, left)``; the rest of the square is padding. Coordinates follow the
    pixel-edge convention: source pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)`` and lands on model
    coordinates ``top + [i, i + 1) * scale_y`` and ``left + [j, j + 1) * scale_x``.
    """

    source_shape: tuple[int, int]
    size: int
    content_shape: tuple[int, int]
    offset: tuple[int, int]
    patch: int = 16

    @property
    def scale(self) -> tuple[float, float]:
        """``(rows, cols)`` scale factors from source pixels to model pixels (equal up to rounding)."""
        return (
            self.content_shape[0] / self.source_shape[0],
            self.content_shape[1] / self.source_shape[1],
        )

    @property
    def grid(self) -> int:
        """Patch tokens per side of the model input (``size // patch``)."""
        return self.size // self.patch

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the image on the model input, in model pixels (end exclusive)."""
        top, left = self.offset
        return top, left, top + self.content_shape[0], left + self.content_shape[1]

    def source_to_model(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous source coordinates (pixel-edge convention) to model-input coordinates."""
        scale_y, scale_x = self.scale
        return (
            self.offset[0] + np.asarray(rows, dtype=np.float64) * scale_y,
            self.offset[1] + np.asarray(cols, dtype=np.float64) * scale_x,
        )

    def to_source(self, heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
        """A map ``[h, w]`` covering the whole square model input, resampled onto the source ``[H, W]``.

        ``[h, w]`` may be the token grid (``grid x grid``), the input pixels (``size x size``) or any other
        resolution of the same square. Each source pixel centre is mapped to its model coordinate and the
        map is sampled there bilinearly (``grid_sample``); positions closer than half a map cell to the
        image's edge on the model grid are moved in to that distance, so padding cells do not bleed into the
        image's border, and the padding itself is cropped away.

        Raises:
            ValueError: for a map that is not 2-D or is empty.
        """
        values = torch.as_tensor(heatmap).detach().to(device="cpu", dtype=torch.float32)
        if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
            raise ValueError(f"heat map must be a non-empty [h, w] array, got shape {tuple(values.shape)}")
        height, width = self.source_shape
        rows, cols = self.source_to_model(np.arange(height) + 0.5, np.arange(width) + 0.5)
        top, left, bottom, right = self.content_box
        rows = _clamp_inside(rows, top, bottom, 0.5 * self.size / values.shape[0])
        cols = _clamp_inside(cols, left, right, 0.5 * self.size / values.shape[1])
        # grid_sample with align_corners=False: -1 and +1 are the outer edges of the map, i.e. of the square.
        norm_y = torch.from_numpy(2.0 * rows / self.size - 1.0).to(torch.float32)
        norm_x = torch.from_numpy(2.0 * cols / self.size - 1.0).to(torch.float32)
        grid = torch.stack(torch.meshgrid(norm_x, norm_y, indexing="xy"), dim=-1)[None]
        sampled = F.grid_sample(
            values[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return np.ascontiguousarray(sampled[0, 0].numpy(), dtype=np.float32)


def _clamp_inside(coords: np.ndarray, start: int, end: int, half_cell: float) -> np.ndarray:
    """Keep sampling positions at least half a map cell inside ``[start, end)`` (the image, not padding).

    Without this, the outer source pixels (whose centres lie less than half a cell from the edge of the
    image on the model grid) would be interpolated with cells of the zero padding.
    """
    low, high = start + half_cell, end - half_cell
    if low > high:
        low = high = 0.5 * (start + end)
    return np.clip(coords, low, high)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of ``image`` to ``shape``, antialiased when shrinking."""
    if image.shape == shape:
        return image.astype(np.float32, copy=True)
    batch = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0).unsqueeze(0)
    resized = F.interpolate(batch, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return resized.squeeze(0).squeeze(0).numpy()


def fit_to_square(image: np.ndarray, size: int, *, patch: int = 16) -> tuple[np.ndarray, Placement]:
    """Letterbox ``image`` ``[H, W]`` onto a ``size x size`` float32 square.

    The long side becomes ``size`` and the short side ``round(short * size / long)`` (at least 1), so the
    aspect ratio is kept to within one pixel; the image is centred and the border is 0. Values stay in the
    range of the input (bilinear weights are non-negative) and are clipped to ``[0, 1]``.

    Args:
        image: float ``[H, W]`` in ``[0, 1]`` (a :class:`~orthonode.inference.loading.Radiograph`'s pixels
            or one slice of a volume).
        size: the model's input side, a multiple of ``patch``.
        patch: the backbone's patch size (the token grid is ``size // patch`` per side).

    Returns:
        ``(square, placement)``: a C-contiguous float32 ``[size, size]`` array (``torch.from_numpy`` ready)
        and where the image sits on it.

    Raises:
        ValueError: for an image that is not 2-D, empty or not finite, or a bad ``size`` / ``patch``.
    """
    array = np.asarray(image)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image must be a non-empty [H, W] array, got shape {array.shape}")
    if patch < 1 or size < patch or size % patch:
        raise ValueError(f"size must be a positive multiple of patch {patch}, got {size}")
    if not np.all(np.isfinite(array)):
        raise ValueError("image has non-finite values")
    height, width = int(array.shape[0]), int(array.shape[1])
    scale = size / max(height, width)
    content = (
        min(size, max(1, math.floor(height * scale + 0.5))),
        min(size, max(1, math.floor(width * scale + 0.5))),
    )
    resized = np.clip(_resize(array, content), 0.0, 1.0)
    top, left = (size - content[0]) // 2, (size - content[1]) // 2
    square = np.zeros((size, size), dtype=np.float32)
    square[top : top + content[0], left : left + content[1]] = resized
    placement = Placement(
        source_shape=(height, width), size=size, content_shape=content, offset=(top, left), patch=patch
    )
    return square, placement


def select_slices(
    volume: Volume | np.ndarray | int,
    count: int,
    strategy: SliceStrategy = "central",
    *,
    margin: float = 0.1,
) -> list[int]:
    """Indices (ascending, distinct) of the slices of a stack that a head looks at.

    * ``central``: the ``count`` consecutive slices around the middle of the stack; with an even surplus
      they are centred exactly, otherwise the extra slice falls on the low side (``S = 10, count = 3`` gives
      ``[3, 4, 5]``).
    * ``uniform``: ``count`` slices evenly spaced from ``margin`` to ``1 - margin`` of the stack (by default
      the outer 10 % at each end, which in knee and shoulder MR mostly hold the coil edge and fat, are
      left out), i.e. the nearest slices to ``linspace(margin (S-1), (1-margin) (S-1), count)``. When that
      interior has too few distinct slices, the whole stack is spread instead, so the result still has
      ``count`` distinct indices. ``count = 1`` is the middle slice, as for ``central``.

    When ``count >= S`` every slice is returned (``S`` indices, fewer than ``count``): padding or repeating
    is the caller's decision.

    Args:
        volume: a :class:`~orthonode.inference.loading.Volume`, an array ``[S, H, W]``, or the slice count.
        count: how many slices the head asks for (``>= 1``).
        strategy: ``central`` or ``uniform``.
        margin: the fraction left out at each end by ``uniform`` (``0 <= margin < 0.5``).

    Raises:
        ValueError: for ``count < 1``, an empty stack, an unknown strategy or a bad margin.
    """
    if isinstance(volume, Volume):
        total = int(volume.voxels.shape[0])
    elif isinstance(volume, np.ndarray):
        total = int(volume.shape[0]) if volume.ndim >= 1 else 0
    else:
        total = int(volume)
    if total < 1:
        raise ValueError(f"the stack has no slices ({total})")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if strategy not in SLICE_STRATEGIES:
        raise ValueError(f"unknown slice strategy {strategy!r} (central or uniform)")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    if count >= total:
        return list(range(total))
    if strategy == "central" or count == 1:
        start = (total - count) // 2
        return list(range(start, start + count))
    last = total - 1
    interior = _nearest(np.linspace(margin * last, (1.0 - margin) * last, count))
    if len(interior) == count:
        return interior
    # Steps of at least one slice round to distinct indices, so spreading over the whole stack always works.
    return _nearest(np.linspace(0.0, float(last), count))


def _nearest(targets: np.ndarray) -> list[int]:
    """Distinct nearest indices (halves rounded up) of ascending fractional slice positions."""
    return sorted({math.floor(float(t) + 0.5) for t in targets})
