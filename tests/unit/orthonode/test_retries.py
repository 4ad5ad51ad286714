"""orthonode.retries: the retry delays and attempt identities of jobs and deliveries."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

import orthonode.retries as retries_module
from orthonode.retries import attempt_holder, backoff


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (6, 320), (7, 640), (8, 900), (9, 900), (60, 900)],
)
def test_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch, attempt: int, seconds: float) -> None:
    monkeypatch.setattr(retries_module.random, "uniform", lambda a, b: b)  # the top of the jitter range
    assert backoff(attempt) == timedelta(seconds=seconds)
    monkeypatch.setattr(retries_module.random, "uniform", lambda a, b: a)  # the bottom of it
    assert backoff(attempt) == timedelta(seconds=seconds / 2)


def test_backoff_custom_base_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries_module.random, "uniform", lambda a, b: b)
    assert [backoff(n, base=1.0, cap=5.0).total_seconds() for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_jitter_stays_in_range() -> None:
    for attempt in (1, 3, 5, 12):
        top = min(900.0, 10.0 * 2 ** (attempt - 1))
        samples = [backoff(attempt).total_seconds() for _ in range(200)]
        assert all(top / 2 <= s <= top for s in samples)
        assert len(set(samples)) > 100  # jittered, not a constant


def test_backoff_capped_for_huge_attempts() -> None:
    assert backoff(2000) <= timedelta(seconds=900)


def test_attempt_holders_are_distinct_in_one_process() -> None:
    holders = {attempt_holder() for _ in range(100)}
    assert len(holders) == 100
    assert all(h.split(":")[1] == str(os.getpid()) and len(h) <= 128 for h in holders)
