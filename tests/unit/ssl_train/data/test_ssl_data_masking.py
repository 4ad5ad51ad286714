"""Block masking, batch mask sampling and the per-process slice of the global batch's masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.ssl_runs import tiny_config

from ssl_train.data.masking import block_mask, global_masks, paint_blocks, sample_mask_blocks, sample_masks


def _components(mask: torch.Tensor, height: int, width: int) -> int:
    """Number of 4-connected components of a flat mask."""
    grid = mask.view(height, width).tolist()
    seen: set[tuple[int, int]] = set()
    count = 0
    for r in range(height):
        for c in range(width):
            if not grid[r][c] or (r, c) in seen:
                continue
            count += 1
            stack = [(r, c)]
            seen.add((r, c))
            while stack:
                a, b = stack.pop()
                for x, y in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                    if 0 <= x < height and 0 <= y < width and grid[x][y] and (x, y) not in seen:
                        seen.add((x, y))
                        stack.append((x, y))
    return count


@pytest.mark.parametrize("grid_hw", [(14, 14), (16, 12), (7, 9)])
def test_block_mask_hits_target_ratio(grid_hw: tuple[int, int]) -> None:
    height, width = grid_hw
    n = height * width
    gen = torch.Generator().manual_seed(0)
    for ratio in (0.1, 0.25, 0.4, 0.5, 0.6):
        for _ in range(8):
            mask = block_mask(grid_hw, ratio, generator=gen)
            assert mask.shape == (n,)
            assert mask.dtype == torch.bool
            target = round(ratio * n)
            assert target - 2 <= int(mask.sum()) <= target  # never overshoots


def test_block_mask_is_union_of_rectangles_and_blocky() -> None:
    height, width = 14, 14
    for seed in range(10):
        blocks = sample_mask_blocks((height, width), 0.4, generator=torch.Generator().manual_seed(seed))
        mask = block_mask((height, width), 0.4, generator=torch.Generator().manual_seed(seed))
        # Same seed -> same rectangles, and the mask is exactly their union.
        assert torch.equal(mask, paint_blocks((height, width), blocks))
        union = torch.zeros(height, width, dtype=torch.bool)
        for top, left, h, w in blocks:
            assert top >= 0 and left >= 0 and h >= 1 and w >= 1
            assert top + h <= height and left + w <= width
            if h * w >= 4:  # aspect ratio within [0.3, 1/0.3] up to the rounding of h and w
                assert 0.3 / 2 <= h / w <= 2 / 0.3
            union[top : top + h, left : left + w] = True
        assert torch.equal(union.flatten(), mask)
        # Blocky, not salt-and-pepper: few connected components for ~78 masked patches.
        assert _components(mask, height, width) <= len(blocks) <= 15


def test_block_mask_range_edges_and_determinism() -> None:
    assert not block_mask((8, 8), 0.0).any()
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        block_mask((8, 8), (0.2, 0.4), generator=gen_a), block_mask((8, 8), (0.2, 0.4), generator=gen_b)
    )
    ratios = [int(block_mask((10, 10), (0.2, 0.4), generator=gen_a).sum()) for _ in range(20)]
    assert all(18 <= r <= 40 for r in ratios)
    capped = block_mask((10, 10), 0.5, generator=gen_a, max_block_patches=6)
    assert int(capped.sum()) >= 48
    for bad in (-0.1, 1.5, (0.5, 0.2)):
        with pytest.raises(ValueError):
            block_mask((4, 4), bad)
    with pytest.raises(ValueError):
        block_mask((0, 4), 0.5)
    with pytest.raises(ValueError):
        block_mask((4, 4), 0.5, min_aspect=0.0)


def test_sample_masks_fraction_and_stratified_ratios() -> None:
    grid_hw, n = (14, 14), 196
    masks = sample_masks(
        8, grid_hw, probability=0.5, ratio_range=(0.1, 0.5), generator=torch.Generator().manual_seed(0)
    )
    assert masks.shape == (8, n)
    assert masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    assert int((counts > 0).sum()) == 4  # exactly B * p images
    ratios = sorted(counts[counts > 0].tolist())
    edges = torch.linspace(0.1, 0.5, 5).tolist()
    for i, count in enumerate(ratios):  # i-th masked image in the i-th stratum (up to rounding)
        assert edges[i] * n - 3 <= count <= edges[i + 1] * n + 1
    assert not sample_masks(5, grid_hw, probability=0.0).any()
    assert (sample_masks(5, grid_hw, probability=1.0, ratio_range=(0.3, 0.3)).sum(dim=1) >= 57).all()


def test_sample_masks_marginal_probability() -> None:
    gen = torch.Generator().manual_seed(1)
    hits = sum(int(sample_masks(1, (6, 6), probability=0.3, generator=gen).any()) for _ in range(400))
    assert 0.22 <= hits / 400 <= 0.38
    per_position = torch.stack(
        [sample_masks(4, (6, 6), generator=gen).any(dim=1) for _ in range(200)]
    ).float()
    assert (per_position.mean(dim=0) - 0.5).abs().max() < 0.12  # shuffled: every slot equally likely


def test_sample_masks_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sample_masks(4, (4, 4), probability=1.2)
    with pytest.raises(ValueError):
        sample_masks(4, (4, 4), ratio_range=(0.6, 0.2))
    with pytest.raises(ValueError):
        sample_masks(-1, (4, 4))


def test_global_masks_are_sliced_per_rank(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tmp_path / "m.csv", "loss.mask.probability=0.75")
    full = global_masks(cfg, 5, grid=(2, 2), rank=0, world=1, batch_size=4).view(2, 4, 4)
    r0 = global_masks(cfg, 5, grid=(2, 2), rank=0, world=2, batch_size=2).view(2, 2, 4)
    r1 = global_masks(cfg, 5, grid=(2, 2), rank=1, world=2, batch_size=2).view(2, 2, 4)
    assert torch.equal(torch.cat([r0, r1], dim=1), full)
    assert int(full.any(dim=-1).sum()) == 6  # 0.75 of the 8 global crops are masked
