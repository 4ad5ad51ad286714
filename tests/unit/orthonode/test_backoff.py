"""orthonode.backoff: the retry delays of jobs and deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest

import orthonode.backoff as backoff_module
from orthonode.backoff import backoff


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (6, 320), (7, 640), (8, 900), (9, 900), (60, 900)],
)
def test_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch, attempt: int, seconds: float) -> None:
    monkeypatch.setattr(backoff_module.random, "uniform", lambda a, b: b)  # the top of the jitter range
    assert backoff(attempt) == timedelta(seconds=seconds)
    monkeypatch.setattr(backoff_module.random, "uniform", lambda a, b: a)  # the bottom of it
    assert backoff(attempt) == timedelta(seconds=seconds / 2)


def test_backoff_custom_base_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff_module.random, "uniform", lambda a, b: b)
    assert [backoff(n, base=1.0, cap=5.0).total_seconds() for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_jitter_stays_in_range() -> None:
    for attempt in (1, 3, 5, 12):
        top = min(900.0, 10.0 * 2 ** (attempt - 1))
        samples = [backoff(attempt).total_seconds() for _ in range(200)]
        assert all(top / 2 <= s <= top for s in samples)
        assert len(set(samples)) > 100  # jittered, not a constant


def test_backoff_capped_for_huge_attempts() -> None:
    assert backoff(2000) <= timedelta(seconds=900)
