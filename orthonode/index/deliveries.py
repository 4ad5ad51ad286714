"""Deliveries: sending one job's results to one destination, under the same lease as a job.

A delivery is claimed, finished and failed through orthonode.index.leases, with the same names, keyword
arguments and return types as a job (orthonode.index.jobs). It is created PENDING with the job's results
(``jobs.record_results``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from orthonode.index import leases
from orthonode.index.leases import LeaseStates, Released
from orthonode.index.models import Delivery, DeliveryState

ERROR_LENGTH = 4000

DELIVERY_LEASE = LeaseStates(
    pending=DeliveryState.PENDING,
    held=DeliveryState.SENDING,
    done=DeliveryState.SENT,
    failed=DeliveryState.FAILED,
    free=(DeliveryState.PENDING,),
    due_only=True,  # a delivery waits out its backoff
)


def due(
    session: Session, *, now: datetime, job_id: int | None = None, limit: int = 100
) -> list[tuple[int, int]]:
    """(delivery id, job id) of deliveries a worker should attempt now: PENDING and due, or SENDING with
    an expired lease (the worker died mid-send); of one job if ``job_id`` is given."""
    query = select(Delivery.id, Delivery.job_id)
    if job_id is not None:
        query = query.where(Delivery.job_id == job_id)
    rows = session.execute(
        query.where(leases.claimable(Delivery, DELIVERY_LEASE, now)).order_by(Delivery.id).limit(limit)
    ).all()
    return [(int(d), int(j)) for d, j in rows]


def claim(
    session: Session, delivery_id: int, *, holder: str, now: datetime, lease: timedelta
) -> Delivery | None:
    """Take a due delivery for one sending attempt (conditional update: exactly one attempt wins)."""
    return leases.claim(
        session, Delivery, DELIVERY_LEASE, delivery_id, holder=holder, now=now, lease=lease, values={}
    )


def renew(session: Session, delivery_id: int, *, holder: str, now: datetime, lease: timedelta) -> bool:
    """Extend a sending attempt's lease; False once it lost the delivery."""
    return leases.renew(session, Delivery, DELIVERY_LEASE, delivery_id, holder=holder, now=now, lease=lease)


def finish(session: Session, delivery_id: int, *, holder: str, now: datetime) -> bool:
    """Mark the delivery SENT if ``holder`` still holds it; False if its lease passed to another attempt."""
    return leases.finish(
        session,
        Delivery,
        DELIVERY_LEASE,
        delivery_id,
        holder=holder,
        now=now,
        values={"sent_at": now, "last_error": None},
    )


def fail(
    session: Session,
    delivery_id: int,
    *,
    holder: str,
    error: str,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int,
) -> Released:
    """Record a failed sending attempt: PENDING again at ``next_attempt_at`` while attempts remain and
    ``retry_after`` is given, else FAILED. Only the holder may do so."""
    return leases.fail(
        session,
        Delivery,
        DELIVERY_LEASE,
        delivery_id,
        holder=holder,
        now=now,
        retry_after=retry_after,
        max_attempts=max_attempts,
        values={"last_error": error[:ERROR_LENGTH]},
    )
