"""Retries of jobs and result deliveries: backoff delays, and the identity of one attempt."""

from __future__ import annotations

import os
import random
import secrets
import socket
from datetime import timedelta


def backoff(attempt: int, *, base: float = 10.0, cap: float = 900.0) -> timedelta:
    """Up to ``base * 2**(attempt - 1)`` seconds, capped at ``cap``, scaled by a random factor in [0.5, 1]."""
    exponent = min(max(0, attempt - 1), 60)  # 2**60 s is past any cap: no overflow for huge counts
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2.0**exponent))


def attempt_holder() -> str:
    """A new identity for one attempt (host, process, random): the holder of a job's or a delivery's lease.

    One per attempt, not per process: an attempt whose lease expired and passed on can then neither
    finish nor fail the work, even when the next attempt runs in the same process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
