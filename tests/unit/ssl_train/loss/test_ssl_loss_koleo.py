"""KoLeoLoss against a loop reference in float64, spreading behaviour, gradients and shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.loss import KoLeoLoss


def _reference_koleo(features: torch.Tensor, eps: float, normalize: bool) -> float:
    rows = features.tolist()
    if normalize:
        rows = [[v / max(math.sqrt(sum(u * u for u in row)), eps) for v in row] for row in rows]
    total = 0.0
    for i, xi in enumerate(rows):
        nearest = min(
            math.sqrt(sum((a - b) ** 2 for a, b in zip(xi, xj, strict=True)))
            for j, xj in enumerate(rows)
            if j != i
        )
        total += math.log(nearest + eps)
    return -total / len(rows)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_koleo_matches_loop_reference(normalize: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(9, 4, generator=gen, dtype=torch.float64) * 3.0
    loss = KoLeoLoss(normalize=normalize)(features)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(_reference_koleo(features, 1e-8, normalize), rel=1e-10)


def test_koleo_decreases_when_points_spread_apart() -> None:
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(1, 8, generator=gen)
    noise = torch.randn(16, 8, generator=gen)
    loss_fn = KoLeoLoss()
    values = [loss_fn(direction + scale * noise).item() for scale in (0.05, 0.2, 1.0, 5.0)]
    assert values == sorted(values, reverse=True)
    # Gradient descent on KoLeo alone spreads the points: the loss goes down.
    x = (direction + 0.05 * noise).requires_grad_()
    optimizer = torch.optim.SGD([x], lr=0.05)
    start = loss_fn(x).item()
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(x).backward()
        optimizer.step()
    assert loss_fn(x).item() < start - 0.5


def test_koleo_is_scale_invariant_when_normalized_and_gradient_is_finite() -> None:
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(6, 5, generator=gen)
    scales = torch.rand(6, 1, generator=gen) * 10 + 0.1
    loss_fn = KoLeoLoss()
    torch.testing.assert_close(loss_fn(features * scales), loss_fn(features))
    duplicated = torch.cat([features, features[:2]]).requires_grad_()  # zero nearest-neighbour distances
    loss = loss_fn(duplicated)
    loss.backward()
    assert torch.isfinite(loss)
    assert duplicated.grad is not None and torch.isfinite(duplicated.grad).all()


def test_koleo_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(1, 4\)"):
        KoLeoLoss()(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        KoLeoLoss()(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        KoLeoLoss(eps=0.0)
