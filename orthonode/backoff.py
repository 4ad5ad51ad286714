"""Exponential backoff with full jitter, for job retries and result deliveries."""

from __future__ import annotations

import random
from datetime import timedelta


def backoff(attempt: int, *, base: float = 10.0, cap: float = 900.0) -> timedelta:
    """Up to ``base * 2**(attempt - 1)`` seconds, capped at ``cap``, scaled by a random factor in [0.5, 1]."""
    exponent = min(max(0, attempt - 1), 60)  # 2**60 s is past any cap: no overflow for huge counts
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2.0**exponent))
