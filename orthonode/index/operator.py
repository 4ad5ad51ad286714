"""Operator actions on failed work (``orthonode retry``, the console's retry and discard buttons).

Each is one conditional update that applies only to FAILED rows, so a click that arrives after the work
moved on (a worker took the job, another operator acted first) changes nothing and says so (``False`` /
``0``). Discarding is final for that study version: the job or delivery stays in the index as DISCARDED
for the record, and nothing sends it; a new version of the study (a late instance) gets a new job.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from orthonode.index.models import Delivery, DeliveryState, Job, JobState


def retry_job(session: Session, job_id: int, now: datetime) -> bool:
    """Put a FAILED job back to PENDING with a fresh attempt count (the sweeper queues it)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.FAILED)
        .values(
            state=JobState.PENDING,
            attempts=0,
            enqueued_at=None,
            next_attempt_at=None,
            finished_at=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def retry_deliveries(session: Session, job_id: int, now: datetime, *, destination: str | None = None) -> int:
    """FAILED deliveries of the job (to ``destination``, or all) back to PENDING, attempts reset."""
    query = update(Delivery).where(Delivery.job_id == job_id, Delivery.state == DeliveryState.FAILED)
    if destination is not None:
        query = query.where(Delivery.destination == destination)
    result = session.execute(
        query.values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=None, updated_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def discard_job(session: Session, job_id: int, now: datetime) -> bool:
    """Give up on a FAILED job: DISCARDED, with the time; it is never queued again."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.FAILED)
        .values(state=JobState.DISCARDED, finished_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def discard_deliveries(
    session: Session, job_id: int, now: datetime, *, destination: str | None = None
) -> int:
    """Give up on the job's FAILED deliveries (to ``destination``, or all): DISCARDED, never sent."""
    query = update(Delivery).where(Delivery.job_id == job_id, Delivery.state == DeliveryState.FAILED)
    if destination is not None:
        query = query.where(Delivery.destination == destination)
    result = session.execute(query.values(state=DeliveryState.DISCARDED, lease_until=None, updated_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]
