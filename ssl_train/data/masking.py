"""BEiT / iBOT block masking of the student global crops, drawn with the data of each iteration.

References
----------
* Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, arXiv:2106.08254 (Algorithm 1,
  blockwise masking).
* Zhou et al., "iBOT", arXiv:2111.07832 (:mod:`ssl_train.loss.ibot` is taken at the masked patches).
* Oquab et al., "DINOv2", arXiv:2304.07193 and Siméoni et al., "DINOv3", arXiv:2508.10104 (a fraction of
  the batch is masked, with masking ratios spread over a range).

``block_mask`` draws rectangular blocks (area uniform in ``[min_block_patches, max_block_patches]``, aspect
ratio log-uniform in ``[min_aspect, max_aspect]``, position uniform) and keeps a block when it adds between
1 and ``remaining`` new patches, until ``round(ratio * H * W)`` patches are masked or ``max_attempts``
consecutive draws fail. It never overshoots the target. Once fewer than ``min_block_patches`` patches
remain, smaller blocks are allowed so the target is normally reached exactly (measured on 14x14: always
within 1 patch up to ratio 0.7; above ~0.8 the random placements can stall several patches short).
``sample_masks`` masks ``floor(B * probability)`` images plus one more with probability
``frac(B * probability)`` (each image is then masked with marginal probability ``probability``), gives the
i-th masked image a ratio drawn uniformly in the i-th of ``n_masked`` equal sub-intervals of
``ratio_range`` and shuffles the images.
Masks are flat over the patch grid in row-major order: index ``r * W + c``.

:func:`global_masks` draws the masks of a whole global batch from ``(seed, iteration)`` and returns this
process's slice, so a run's masks do not depend on the number of processes. The grid is the backbone's
(``crop size / patch size``), never a fixed patch size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssl_train.config import Config
from ssl_train.data.dataset import item_seed

__all__ = [
    "MaskBlock",
    "block_mask",
    "global_masks",
    "paint_blocks",
    "sample_mask_blocks",
    "sample_masks",
]

MaskBlock = tuple[int, int, int, int]
"""A masked rectangle ``(top, left, height, width)`` on the patch grid."""


def _rand(generator: torch.Generator | None, n: int) -> list[float]:
    return torch.rand(n, generator=generator).tolist()


def _check_grid(grid_hw: tuple[int, int]) -> tuple[int, int]:
    if len(grid_hw) != 2 or grid_hw[0] < 1 or grid_hw[1] < 1:
        raise ValueError(f"grid_hw must be (H, W) with H, W >= 1, got {grid_hw}")
    return int(grid_hw[0]), int(grid_hw[1])


def _resolve_ratio(mask_ratio: float | tuple[float, float], generator: torch.Generator | None) -> float:
    if isinstance(mask_ratio, tuple):
        if len(mask_ratio) != 2 or not 0.0 <= mask_ratio[0] <= mask_ratio[1] <= 1.0:
            raise ValueError(f"mask_ratio range must satisfy 0 <= low <= high <= 1, got {mask_ratio}")
        low, high = mask_ratio
        return low + _rand(generator, 1)[0] * (high - low)
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    return float(mask_ratio)


def sample_mask_blocks(
    grid_hw: tuple[int, int],
    mask_ratio: float | tuple[float, float],
    generator: torch.Generator | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    min_block_patches: int = 4,
    max_block_patches: int | None = None,
    max_attempts: int = 10,
) -> list[MaskBlock]:
    """Draw the rectangles of a block mask (see module doc); ``block_mask`` paints their union.

    Args:
        grid_hw: patch grid ``(H, W)``.
        mask_ratio: target fraction of masked patches, or a ``(low, high)`` range sampled uniformly.
        generator: optional CPU ``torch.Generator`` for reproducibility.
        min_aspect: smallest height / width ratio of a block; ``max_aspect`` defaults to ``1 / min_aspect``.
        min_block_patches: smallest block area drawn while at least that many patches remain to mask.
        max_block_patches: largest block area (default: the whole target; DINOv2 uses ``0.5 * H * W``).
        max_attempts: consecutive failed draws after which sampling stops (below the target).

    Returns:
        The accepted blocks ``(top, left, height, width)`` in drawing order; each adds >= 1 new patch.
    """
    height, width = _check_grid(grid_hw)
    if min_aspect <= 0:
        raise ValueError(f"min_aspect must be > 0, got {min_aspect}")
    max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
    if max_aspect < min_aspect:
        raise ValueError(f"max_aspect ({max_aspect}) must be >= min_aspect ({min_aspect})")
    if min_block_patches < 1:
        raise ValueError(f"min_block_patches must be >= 1, got {min_block_patches}")
    if max_block_patches is not None and max_block_patches < min_block_patches:
        raise ValueError(
            f"max_block_patches ({max_block_patches}) must be >= min_block_patches ({min_block_patches})"
        )
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")

    ratio = _resolve_ratio(mask_ratio, generator)
    target = min(round(ratio * height * width), height * width)
    log_lo, log_hi = math.log(min_aspect), math.log(max_aspect)
    grid = [[False] * width for _ in range(height)]
    blocks: list[MaskBlock] = []
    count = 0
    while count < target:
        remaining = target - count
        hi_area = remaining if max_block_patches is None else min(remaining, max_block_patches)
        lo_area = min(min_block_patches, hi_area)
        added = 0
        for _ in range(max_attempts):
            u_area, u_aspect, u_top, u_left = _rand(generator, 4)
            area = lo_area + u_area * (hi_area - lo_area)
            aspect = math.exp(log_lo + u_aspect * (log_hi - log_lo))
            h = max(1, round(math.sqrt(area * aspect)))
            w = max(1, round(math.sqrt(area / aspect)))
            if h > height or w > width:
                continue
            top = min(int(u_top * (height - h + 1)), height - h)
            left = min(int(u_left * (width - w + 1)), width - w)
            new = sum(not grid[r][c] for r in range(top, top + h) for c in range(left, left + w))
            if 0 < new <= remaining:
                for r in range(top, top + h):
                    for c in range(left, left + w):
                        grid[r][c] = True
                blocks.append((top, left, h, w))
                added = new
                break
        if added == 0:
            break
        count += added
    return blocks


def paint_blocks(grid_hw: tuple[int, int], blocks: list[MaskBlock]) -> Tensor:
    """Flat ``[H * W]`` bool mask that is the union of ``blocks`` (row-major)."""
    height, width = _check_grid(grid_hw)
    mask = torch.zeros(height, width, dtype=torch.bool)
    for top, left, h, w in blocks:
        mask[top : top + h, left : left + w] = True
    return mask.flatten()


def block_mask(
    grid_hw: tuple[int, int],
    mask_ratio: float | tuple[float, float],
    generator: torch.Generator | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    min_block_patches: int = 4,
    max_block_patches: int | None = None,
    max_attempts: int = 10,
) -> Tensor:
    """BEiT/iBOT block mask of the patch grid: ``[H * W]`` bool (CPU), True = masked.

    The masked count is ``<= round(ratio * H * W)`` and normally equal to it. Arguments as in
    ``sample_mask_blocks``.
    """
    blocks = sample_mask_blocks(
        grid_hw,
        mask_ratio,
        generator=generator,
        min_aspect=min_aspect,
        max_aspect=max_aspect,
        min_block_patches=min_block_patches,
        max_block_patches=max_block_patches,
        max_attempts=max_attempts,
    )
    return paint_blocks(grid_hw, blocks)


def sample_masks(
    batch_size: int,
    grid_hw: tuple[int, int],
    probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    min_aspect: float = 0.3,
    max_block_patches: int | None = None,
) -> Tensor:
    """Block masks for a batch, only a fraction of which is masked (DINOv2 / DINOv3 collate).

    Args:
        batch_size: number of images ``B`` (for the student global crops: ``n_global_crops * B``).
        grid_hw: patch grid ``(H, W)``.
        probability: marginal probability that an image is masked; ``floor(B * p)`` images are masked, plus
            one more with probability ``frac(B * p)``.
        ratio_range: ``(low, high)`` masking ratios, stratified over the masked images.
        generator: optional CPU ``torch.Generator``.
        min_aspect: passed to ``block_mask``.
        max_block_patches: passed to ``block_mask``.

    Returns:
        ``[B, H * W]`` bool (CPU), True = masked.
    """
    height, width = _check_grid(grid_hw)
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if len(ratio_range) != 2 or not 0.0 <= ratio_range[0] <= ratio_range[1] <= 1.0:
        raise ValueError(f"ratio_range must satisfy 0 <= low <= high <= 1, got {ratio_range}")

    masks = torch.zeros(batch_size, height * width, dtype=torch.bool)
    expected = batch_size * probability
    n_masked = math.floor(expected)
    if n_masked < batch_size and _rand(generator, 1)[0] < expected - n_masked:
        n_masked += 1
    if n_masked == 0:
        return masks
    low, high = ratio_range
    step = (high - low) / n_masked
    order = torch.randperm(batch_size, generator=generator).tolist()
    offsets = _rand(generator, n_masked)
    for i in range(n_masked):
        ratio = min(max(low + (i + offsets[i]) * step, low), high)
        masks[order[i]] = block_mask(
            (height, width),
            ratio,
            generator=generator,
            min_aspect=min_aspect,
            max_block_patches=max_block_patches,
        )
    return masks


def global_masks(
    cfg: Config, iteration: int, *, grid: tuple[int, int], rank: int, world: int, batch_size: int
) -> Tensor:
    """iBOT masks ``[n_g * b, N]`` of this process: drawn for the global batch from ``(seed, iteration)``."""
    n_g = cfg.crops.n_global
    global_batch = batch_size * world
    generator = torch.Generator()
    generator.manual_seed(item_seed(cfg.run.seed + 7919, 0, iteration))
    mask = cfg.loss.mask
    masks = sample_masks(
        n_g * global_batch,
        grid,
        probability=mask.probability,
        ratio_range=(mask.ratio_min, mask.ratio_max),
        generator=generator,
        max_block_patches=max(4, int(0.5 * grid[0] * grid[1])),
    )
    view = masks.view(n_g, global_batch, -1)[:, rank * batch_size : (rank + 1) * batch_size]
    return view.reshape(n_g * batch_size, -1)
