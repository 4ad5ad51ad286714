"""IBOTPatchLoss against a loop reference in float64; block masking and batch mask sampling."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.loss import IBOTPatchLoss, block_mask, paint_blocks, sample_mask_blocks, sample_masks


def _reference_ibot(
    student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor, temp: float, average_over: str
) -> float:
    batch, n_patches, _ = student.shape
    per_image: list[float] = []
    for b in range(batch):
        masked = [p for p in range(n_patches) if bool(masks[b, p])]
        if not masked:
            continue
        total = 0.0
        for p in masked:
            z = [v / temp for v in student[b, p].tolist()]
            top = max(z)
            log_norm = top + math.log(sum(math.exp(v - top) for v in z))
            total += -sum(t * (v - log_norm) for t, v in zip(teacher[b, p].tolist(), z, strict=True))
        per_image.append(total / len(masked))
    denominator = len(per_image) if average_over == "masked_images" else batch
    return sum(per_image) / max(denominator, 1)


def _inputs(
    seed: int, batch: int = 4, n: int = 6, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, n, k, generator=gen, dtype=torch.float64)
    teacher = torch.softmax(torch.randn(batch, n, k, generator=gen, dtype=torch.float64) / 0.2, dim=-1)
    masks = torch.rand(batch, n, generator=gen) < 0.4
    masks[0] = False  # one image without any masked patch
    masks[1, :] = True  # one fully masked image
    return student, teacher, masks


@pytest.mark.parametrize("average_over", ["masked_images", "all_images"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ibot_loss_matches_loop_reference(average_over: str, seed: int) -> None:
    student, teacher, masks = _inputs(seed)
    loss_fn = IBOTPatchLoss(student_temp=0.1, average_over=average_over)  # type: ignore[arg-type]
    want = _reference_ibot(student, teacher, masks, 0.1, average_over)
    got = loss_fn(student, teacher, masks)
    assert got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-10)
    gathered = loss_fn.forward_masked(student[masks], teacher[masks], masks)
    assert gathered.item() == pytest.approx(want, rel=1e-10)


def test_ibot_loss_weights_images_not_patches() -> None:
    """An image with 1 masked patch counts as much as an image with 5 (per-image mean, then mean)."""
    student, teacher, _ = _inputs(2, batch=2, n=5)
    masks = torch.zeros(2, 5, dtype=torch.bool)
    masks[0, 0] = True
    masks[1, :] = True
    loss_fn = IBOTPatchLoss()
    ce = -(teacher * torch.log_softmax(student / 0.1, dim=-1)).sum(dim=-1)  # [B, N]
    want = 0.5 * (ce[0, 0] + ce[1].mean())
    assert loss_fn(student, teacher, masks).item() == pytest.approx(want.item(), rel=1e-12)


def test_ibot_loss_without_masked_patches_is_zero_and_differentiable() -> None:
    student, teacher, _ = _inputs(3)
    student = student.requires_grad_()
    loss = IBOTPatchLoss()(student, teacher, torch.zeros(4, 6, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None
    assert (student.grad == 0).all()


def test_ibot_loss_gradient_only_on_masked_student_patches() -> None:
    student, teacher, masks = _inputs(4)
    student = student.float().requires_grad_()
    teacher = teacher.float().requires_grad_()
    IBOTPatchLoss()(student, teacher, masks).backward()
    assert teacher.grad is None
    assert student.grad is not None
    patch_grad = student.grad.abs().sum(dim=-1)
    assert (patch_grad[masks] > 0).all()
    assert (patch_grad[~masks] == 0).all()


def test_ibot_loss_rejects_bad_shapes() -> None:
    loss_fn = IBOTPatchLoss()
    s = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        loss_fn(s, torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        loss_fn(s, s, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        loss_fn(s, s, torch.zeros(2, 3))
    masks = torch.zeros(2, 3, dtype=torch.bool)
    masks[0, 1] = True
    with pytest.raises(ValueError, match="select 1 patches"):
        loss_fn.forward_masked(torch.zeros(2, 4), torch.zeros(2, 4), masks)
    with pytest.raises(ValueError):
        IBOTPatchLoss(average_over="patches")  # type: ignore[arg-type]


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
