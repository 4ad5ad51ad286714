"""The running attempt's heartbeat: its job lease (or its delivery's: ``orthonode.send.delivery``) is
renewed while it works.

A job is claimed for ``job_lease_seconds`` (``orthonode.index.jobs.claim``); the sweeper gives the job to
another attempt once that lease has passed (``expire_leases``), which is how a killed worker's job runs
again. An attempt that is merely slow -- a large study, a loaded machine -- must not lose its job that
way, or a slow machine would run every job several times and fail it after ``job_max_attempts``. So,
while the attempt works, a daemon thread extends the lease every third of its length; a worker that
dies stops renewing, and its job is free one lease later, as before. A delivery's send is kept the same
way: a destination that is slow to answer must not let a second attempt send the same objects again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction, unreachable
from orthonode.index.models import utcnow

log = logging.getLogger(__name__)

Renew = Callable[..., bool]


class LeaseKeeper:
    """``with LeaseKeeper(sessions, job_id, holder, lease): work()`` -- renews the lease every ``lease / 3``
    until the block ends or the lease is found held by someone else (``lost``). ``renew`` and ``kind``
    (for the log) make it keep another leased row, e.g. ``deliveries.renew`` and ``"delivery"``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: int,
        holder: str,
        lease: timedelta,
        *,
        renew: Renew = job_rows.renew,
        clock: Callable[[], datetime] = utcnow,
        kind: str = "job",
    ) -> None:
        self.sessions, self.job_id, self.holder, self.lease = sessions, job_id, holder, lease
        self.renew, self.clock, self.kind = renew, clock, kind
        self.interval = max(lease.total_seconds() / 3, 0.05)
        self.renewals = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{kind}-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=max(self.interval, 5.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with transaction(self.sessions) as session:
                    held = self.renew(
                        session, self.job_id, holder=self.holder, now=self.clock(), lease=self.lease
                    )
            except Exception as exc:  # the database away for a moment: the next beat tries again
                log.warning("%s lease not renewed: %s", self.kind, unreachable(exc) or type(exc).__name__)
                continue
            if not held:
                self.lost = True
                log.warning(
                    "%s lease passed to another attempt; this attempt's outcome is discarded", self.kind
                )
                return
            self.renewals += 1
