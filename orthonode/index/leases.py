"""One lease mechanism for the node's work: jobs (orthonode.index.jobs) and deliveries
(orthonode.index.deliveries) are claimed, finished and failed the same way, under the same names.

A claim is one conditional UPDATE that sets ``holder`` (the attempt, ``host:pid:token`` from
``orthonode.retries.attempt_holder``), ``lease_until`` and ``attempts + 1``: of attempts racing for a row
exactly one matches its WHERE clause. A holder whose lease expired loses the row to the next claim, and
only the current holder may finish or fail it (DESIGN.md "Acknowledge only what is durable": a stale
attempt changes nothing). A failed attempt puts the row back to its pending state, due at
``next_attempt_at``, while attempts remain and the error is transient, else it ends failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.orm import Session

from orthonode.index.models import Delivery, Job

HOLDER_LENGTH = 128  # the width of the holder columns

Leased = TypeVar("Leased", Job, Delivery)


class Release(StrEnum):
    """How a failed attempt left a leased row (a finished one: ``finish`` returns True)."""

    RETRY = "retry"  # back to pending, due again at next_attempt_at
    FAILED = "failed"  # attempts used up, or a permanent error
    NOT_HELD = "not_held"  # the lease had passed to another attempt: the row is left as it is
    MISSING = "missing"  # no such row


@dataclass(frozen=True)
class Released:
    outcome: Release
    state: str | None  # the row's state afterwards; None when the row is missing


@dataclass(frozen=True)
class LeaseStates:
    """The states of one kind of leased row."""

    pending: str  # waiting for an attempt (due at next_attempt_at, or now)
    held: str  # an attempt holds the lease
    done: str
    failed: str
    free: tuple[str, ...]  # states a claim takes (besides a held row whose lease expired)
    due_only: bool  # a free row is claimed only once its next_attempt_at has passed


def holder_name(holder: str) -> str:
    return holder[:HOLDER_LENGTH]


def claimable(model: type[Leased], states: LeaseStates, now: datetime) -> ColumnElement[bool]:
    """Rows an attempt may claim now: free (and due, where the kind asks so), or held past the lease."""
    free: ColumnElement[bool] = model.state.in_(states.free)
    if states.due_only:
        free = and_(free, or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now))
    return or_(free, and_(model.state == states.held, model.lease_until < now))


def claim(
    session: Session,
    model: type[Leased],
    states: LeaseStates,
    row_id: int,
    *,
    holder: str,
    now: datetime,
    lease: timedelta,
    values: Mapping[str, Any],
) -> Leased | None:
    """Take the row for ``holder`` (a conditional update: exactly one attempt wins); None otherwise."""
    result = session.execute(
        update(model)
        .where(model.id == row_id, claimable(model, states, now))
        .values(
            state=states.held,
            attempts=model.attempts + 1,
            holder=holder_name(holder),
            lease_until=now + lease,
            updated_at=now,
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(model, row_id, populate_existing=True)


def finish(
    session: Session,
    model: type[Leased],
    states: LeaseStates,
    row_id: int,
    *,
    holder: str,
    now: datetime,
    values: Mapping[str, Any],
) -> bool:
    """Mark the row done if ``holder`` still holds it; False if its lease passed to another attempt."""
    result = session.execute(
        update(model)
        .where(model.id == row_id, model.state == states.held, model.holder == holder_name(holder))
        .values(state=states.done, updated_at=now, lease_until=None, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew(
    session: Session,
    model: type[Leased],
    states: LeaseStates,
    row_id: int,
    *,
    holder: str,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Extend ``holder``'s lease to ``now + lease`` while the attempt is still working (a heartbeat: an
    attempt slower than one lease keeps its row); False if the row is no longer held by ``holder``."""
    result = session.execute(
        update(model)
        .where(model.id == row_id, model.state == states.held, model.holder == holder_name(holder))
        .values(lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(
    row: Leased,
    states: LeaseStates,
    *,
    now: datetime,
    retry: bool,
    values: Mapping[str, Any],
    on_retry: Mapping[str, Any],
    on_failed: Mapping[str, Any],
) -> Release:
    """End the row's lease: back to pending (``retry``) or failed, with the kind's own column values."""
    row.updated_at = now
    row.lease_until = None
    changes = {**values, **(on_retry if retry else on_failed)}
    for name, value in changes.items():
        setattr(row, name, value)
    row.state = states.pending if retry else states.failed
    return Release.RETRY if retry else Release.FAILED


def fail(
    session: Session,
    model: type[Leased],
    states: LeaseStates,
    row_id: int,
    *,
    holder: str,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int,
    values: Mapping[str, Any],
    on_retry: Mapping[str, Any] | None = None,
    on_failed: Mapping[str, Any] | None = None,
) -> Released:
    """Record a failed attempt of ``holder``: pending again after ``retry_after`` while attempts remain
    and the error is transient (``retry_after`` given), else failed. A holder whose lease passed on
    leaves the row as it is (:attr:`Release.NOT_HELD`, with the row's state)."""
    row = session.get(model, row_id, with_for_update=True)
    if row is None:
        return Released(Release.MISSING, None)
    if row.state != states.held or row.holder != holder_name(holder):
        return Released(Release.NOT_HELD, row.state)
    retry = retry_after is not None and row.attempts < max_attempts
    due = {"next_attempt_at": now + retry_after} if retry and retry_after is not None else {}
    outcome = release(
        row,
        states,
        now=now,
        retry=retry,
        values=values,
        on_retry={**(on_retry or {}), **due},
        on_failed=on_failed or {},
    )
    return Released(outcome, row.state)


def held_by(row: Leased | None, states: LeaseStates, holder: str) -> bool:
    """Whether ``holder`` holds the lease on ``row``."""
    return row is not None and row.state == states.held and row.holder == holder_name(holder)
