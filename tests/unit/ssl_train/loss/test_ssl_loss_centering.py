"""Sinkhorn-Knopp and softmax centering against loop references in float64, plus invariants."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ssl_train.loss import SoftmaxCentering, sinkhorn_knopp
from ssl_train.loss import centering as centering_module


def _reference_sinkhorn(logits: torch.Tensor, temperature: float, n_iterations: int) -> torch.Tensor:
    """SwAV Algorithm (plain lists of floats): Q = exp(L / tau)^T, alternate row / column normalisation."""
    n_samples, n_protos = logits.shape
    rows = logits.tolist()
    q = [[math.exp(rows[b][k] / temperature) for b in range(n_samples)] for k in range(n_protos)]  # [K][B]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(n_iterations):
        for k in range(n_protos):
            row_sum = sum(q[k])
            q[k] = [v / row_sum / n_protos for v in q[k]]
        for b in range(n_samples):
            col_sum = sum(q[k][b] for k in range(n_protos))
            for k in range(n_protos):
                q[k][b] = q[k][b] / col_sum / n_samples
    out = [[q[k][b] * n_samples for k in range(n_protos)] for b in range(n_samples)]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(("temperature", "n_iterations"), [(0.5, 1), (0.2, 3), (1.0, 10)])
def test_sinkhorn_matches_loop_reference(temperature: float, n_iterations: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    got = sinkhorn_knopp(logits, temperature, n_iterations)
    want = _reference_sinkhorn(logits, temperature, n_iterations)
    assert got.shape == (7, 5)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_sinkhorn_rows_sum_to_one_and_columns_to_b_over_k() -> None:
    gen = torch.Generator().manual_seed(1)
    n_samples, n_protos = 32, 8
    logits = torch.randn(n_samples, n_protos, generator=gen)
    for n_iterations, col_tol in [(3, 0.5), (100, 1e-3)]:
        q = sinkhorn_knopp(logits, 0.5, n_iterations)
        torch.testing.assert_close(q.sum(dim=1), torch.ones(n_samples), rtol=0, atol=1e-5)
        expected = torch.full((n_protos,), n_samples / n_protos)
        torch.testing.assert_close(q.sum(dim=0), expected, rtol=col_tol, atol=0)
        assert (q >= 0).all()


def test_sinkhorn_exactly_invariant_to_per_prototype_constant_and_stable() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    shift = 1e4 * torch.randn(1, 6, generator=gen, dtype=torch.float64)  # one constant per prototype column
    for n_iterations in (1, 3):
        base = sinkhorn_knopp(logits, 0.1, n_iterations)
        shifted = sinkhorn_knopp(logits + shift, 0.1, n_iterations)
        torch.testing.assert_close(shifted, base, rtol=1e-9, atol=1e-12)
    # exp(300 / 0.5) overflows even float64: the per-prototype max shift keeps everything finite and exact.
    large_input = logits.float() + 300.0
    large = sinkhorn_knopp(large_input, 0.5, 3)
    assert torch.isfinite(large).all()
    want = _reference_sinkhorn(large_input.double() - 300.0, 0.5, 3).float()
    torch.testing.assert_close(large, want, rtol=1e-4, atol=1e-6)


def test_sinkhorn_underflowing_sample_gives_zero_row_not_nan() -> None:
    """Documented degenerate case: a sample far below every prototype's max underflows to a zero row."""
    logits = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.2], [-1e4, -1e4, -1e4]])
    q = sinkhorn_knopp(logits, 0.1, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q[2], torch.zeros(3))
    torch.testing.assert_close(q[:2].sum(dim=1), torch.ones(2))


def test_sinkhorn_per_sample_constant_invariance_at_convergence() -> None:
    """A per-sample (row of the logits) constant is only removed at the Sinkhorn fixed point."""
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    shift = 0.5 * torch.randn(10, 1, generator=gen, dtype=torch.float64)
    base = sinkhorn_knopp(logits, 0.5, 300)
    torch.testing.assert_close(sinkhorn_knopp(logits + shift, 0.5, 300), base, rtol=1e-8, atol=1e-10)


def test_sinkhorn_uniform_input_gives_uniform_output() -> None:
    q = sinkhorn_knopp(torch.full((6, 4), 3.0), 0.07, 3)
    torch.testing.assert_close(q, torch.full((6, 4), 0.25))


def test_sinkhorn_detached_and_bf16() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    q = sinkhorn_knopp(logits, 0.1)
    assert not q.requires_grad
    q_bf16 = sinkhorn_knopp(logits.detach().bfloat16(), 0.1)
    assert q_bf16.dtype == torch.float32


@pytest.mark.parametrize(
    ("shape", "temperature", "n_iterations"),
    [((4,), 0.1, 3), ((2, 3, 4), 0.1, 3), ((4, 0), 0.1, 3), ((4, 3), 0.0, 3), ((4, 3), 0.1, 0)],
)
def test_sinkhorn_rejects_bad_arguments(
    shape: tuple[int, ...], temperature: float, n_iterations: int
) -> None:
    with pytest.raises(ValueError):
        sinkhorn_knopp(torch.zeros(shape), temperature, n_iterations)


def _run_fake_ranks(
    monkeypatch: pytest.MonkeyPatch, n_ranks: int, work: Callable[[int], torch.Tensor | None]
) -> list[torch.Tensor | None]:
    """Run ``work(rank)`` in ``n_ranks`` threads whose all-reduce sums across the threads."""
    barrier = threading.Barrier(n_ranks)
    slots: list[torch.Tensor | None] = [None] * n_ranks
    ranks: dict[int, int] = {}

    def fake_all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        rank = ranks[threading.get_ident()]
        slots[rank] = tensor.clone()
        barrier.wait()
        stacked = torch.stack([s for s in slots if s is not None])
        total = stacked.sum(dim=0) if op == "sum" else stacked.amax(dim=0)
        barrier.wait()
        tensor.copy_(total)
        return tensor

    monkeypatch.setattr(centering_module, "_all_reduce", fake_all_reduce)
    results: list[torch.Tensor | None] = [None] * n_ranks
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        ranks[threading.get_ident()] = rank
        try:
            results[rank] = work(rank)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(n_ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    if errors:
        raise errors[0]
    return results


def test_sinkhorn_sharded_over_emulated_ranks_equals_full_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    full = sinkhorn_knopp(logits, 0.3, 3)
    # Uneven shards on purpose, one of them empty.
    shards = [logits[:5], logits[5:], logits[:0]]
    out = _run_fake_ranks(monkeypatch, 3, lambda r: sinkhorn_knopp(shards[r], 0.3, 3))
    assert out[2] is not None and out[2].shape == (0, 5)
    torch.testing.assert_close(torch.cat([o for o in out if o is not None]), full, rtol=1e-10, atol=1e-12)


def test_softmax_centering_update_sharded_over_emulated_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(9, 4, generator=gen)
    shards = [logits[:2], logits[2:]]
    modules = [SoftmaxCentering(4, momentum=0.5) for _ in range(2)]

    def work(rank: int) -> torch.Tensor:
        modules[rank].update(shards[rank])
        return modules[rank].center.clone()

    out = _run_fake_ranks(monkeypatch, 2, work)
    expected = 0.5 * logits.mean(dim=0, keepdim=True)
    for center in out:
        assert center is not None
        torch.testing.assert_close(center, expected)


def test_real_single_process_group(tmp_path: Path) -> None:
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, generator=gen)
    expected = sinkhorn_knopp(logits, 0.2, 3)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        got = sinkhorn_knopp(logits, 0.2, 3)
        centering = SoftmaxCentering(4, momentum=0.0)
        centering.update(logits)
        center = centering.center.clone()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(center, logits.mean(dim=0, keepdim=True))


def test_softmax_centering_forward_matches_loop_reference() -> None:
    gen = torch.Generator().manual_seed(6)
    n_protos, temperature = 5, 0.04
    module = SoftmaxCentering(n_protos).double()
    module.center.copy_(torch.randn(1, n_protos, generator=gen, dtype=torch.float64))
    logits = torch.randn(2, 3, n_protos, generator=gen, dtype=torch.float64, requires_grad=True)
    got = module(logits, temperature)
    assert got.shape == logits.shape
    assert not got.requires_grad
    center = module.center[0].tolist()
    for i in range(2):
        for b in range(3):
            z = [(logits[i, b, k].item() - center[k]) / temperature for k in range(n_protos)]
            top = max(z)
            denom = sum(math.exp(v - top) for v in z)
            for k in range(n_protos):
                assert got[i, b, k].item() == pytest.approx(math.exp(z[k] - top) / denom, rel=1e-9, abs=1e-15)


def test_softmax_centering_ema_two_updates_closed_form() -> None:
    gen = torch.Generator().manual_seed(7)
    m = 0.9
    module = SoftmaxCentering(6, momentum=m)
    assert module.center.shape == (1, 6)
    first = torch.randn(8, 6, generator=gen)
    second = torch.randn(2, 5, 6, generator=gen)  # leading dims are flattened
    module.update(first)
    module.update(second)
    mean1 = first.mean(dim=0, keepdim=True)
    mean2 = second.reshape(-1, 6).mean(dim=0, keepdim=True)
    torch.testing.assert_close(module.center, m * (1 - m) * mean1 + (1 - m) * mean2)
    before = module.center.clone()
    module.update(torch.zeros(0, 6))  # an empty batch leaves the center unchanged
    torch.testing.assert_close(module.center, before)


def test_softmax_centering_rejects_bad_shapes() -> None:
    module = SoftmaxCentering(4)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        module(torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError):
        module.update(torch.zeros(3, 5))
    with pytest.raises(ValueError):
        module(torch.zeros(3, 4), 0.0)
    with pytest.raises(ValueError):
        SoftmaxCentering(4, momentum=1.5)
