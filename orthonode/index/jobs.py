"""Jobs: one per complete study version, handed to the broker, run under a lease, with their results.

The ``(study_id, study_version)`` unique constraint on jobs makes "exactly one job per version" a
database invariant rather than a hope. A job is claimed, finished and failed through the one lease
mechanism of orthonode.index.leases, under the same names as a delivery (orthonode.index.deliveries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from orthonode.index import leases
from orthonode.index.leases import LeaseStates, Released
from orthonode.index.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Result,
    Series,
    Study,
    StudyState,
)

ERROR_LENGTH = 4000

JOB_LEASE = LeaseStates(
    pending=JobState.PENDING,
    held=JobState.RUNNING,
    done=JobState.DONE,
    failed=JobState.FAILED,
    free=(JobState.PENDING, JobState.QUEUED),
    due_only=False,  # a message for a job is run when it arrives; next_attempt_at delays the hand-over
)


def create(
    session: Session,
    study: Study,
    *,
    routes: list[Any],
    anatomy: str | None,
    laterality: str | None,
    reason: str,
    forced: bool,
    now: datetime,
) -> Job:
    """Mark the study version complete and create its job (state PENDING, handed to the broker later)."""
    study.state = StudyState.COMPLETE
    study.state_changed_at = now
    study.anatomy = anatomy
    study.laterality = laterality
    study.route_reason = reason
    job = Job(
        study_id=study.id,
        study_version=study.version,
        state=JobState.PENDING,
        routes=routes,
        forced=forced,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    return job


# --------------------------------------------------------------------------------------------------
# To the broker
# --------------------------------------------------------------------------------------------------
def take_to_enqueue(
    session: Session,
    *,
    now: datetime,
    retry_after: timedelta,
    requeue_after: timedelta | None = None,
    limit: int = 100,
) -> list[int]:
    """Jobs to hand to the broker; stamps them so a concurrent sweeper skips them.

    PENDING jobs not handed over within ``retry_after`` (never handed over, or the hand-over failed) and
    due (``next_attempt_at``), and, with ``requeue_after``, QUEUED jobs no worker claimed within it: a
    broker that lost its messages (restarted without persistence, its queue purged) loses no job, since
    the index hands them over again. A duplicate message for a job still in the queue is harmless: the
    claim is conditional.
    """
    pending = and_(
        Job.state == JobState.PENDING,
        or_(Job.enqueued_at.is_(None), Job.enqueued_at <= now - retry_after),
        or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
    )
    wanted = pending
    if requeue_after is not None:
        wanted = or_(pending, and_(Job.state == JobState.QUEUED, Job.enqueued_at <= now - requeue_after))
    jobs = (
        session.execute(
            select(Job).where(wanted).order_by(Job.id).limit(limit).with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for job in jobs:
        job.enqueued_at = now
    return [job.id for job in jobs]


def mark_enqueued(session: Session, job_id: int, now: datetime) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.PENDING)
        .values(state=JobState.QUEUED, updated_at=now)
    )


# --------------------------------------------------------------------------------------------------
# The lease
# --------------------------------------------------------------------------------------------------
def claim(session: Session, job_id: int, *, holder: str, now: datetime, lease: timedelta) -> Job | None:
    """Take the job for ``holder`` if nobody holds a live lease on it; None otherwise."""
    return leases.claim(
        session,
        Job,
        JOB_LEASE,
        job_id,
        holder=holder,
        now=now,
        lease=lease,
        values={"started_at": now, "error": None},
    )


def renew(session: Session, job_id: int, *, holder: str, now: datetime, lease: timedelta) -> bool:
    """Extend the running attempt's lease (the worker's heartbeat); False once it lost the job."""
    return leases.renew(session, Job, JOB_LEASE, job_id, holder=holder, now=now, lease=lease)


def finish(session: Session, job_id: int, *, holder: str, now: datetime, detail: str) -> bool:
    """Mark the job DONE if ``holder`` still holds it; False if its lease passed to another attempt."""
    return leases.finish(
        session, Job, JOB_LEASE, job_id, holder=holder, now=now, values={"detail": detail, "finished_at": now}
    )


def fail(
    session: Session,
    job_id: int,
    *,
    holder: str,
    error: str,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int,
) -> Released:
    """Record a failed attempt: back to PENDING (handed over again at ``next_attempt_at``) while attempts
    remain and the error is transient (``retry_after`` given), else FAILED. Only the holder may do so."""
    return leases.fail(
        session,
        Job,
        JOB_LEASE,
        job_id,
        holder=holder,
        now=now,
        retry_after=retry_after,
        max_attempts=max_attempts,
        values={"error": error[:ERROR_LENGTH]},
        on_retry={"enqueued_at": None},
        on_failed={"finished_at": now},
    )


def expire_leases(session: Session, *, now: datetime, max_attempts: int) -> list[int]:
    """RUNNING jobs whose holder went silent (killed, machine lost) go back to PENDING, or FAILED."""
    jobs = (
        session.execute(
            select(Job)
            .where(Job.state == JobState.RUNNING, Job.lease_until < now)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for job in jobs:
        leases.release(
            job,
            JOB_LEASE,
            now=now,
            retry=job.attempts < max_attempts,
            values={"error": f"worker {job.holder} lost its lease (attempt {job.attempts})"},
            on_retry={"enqueued_at": None},
            on_failed={"finished_at": now},
        )
    return [job.id for job in jobs]


# --------------------------------------------------------------------------------------------------
# Inputs and results
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobInput:
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    rel_path: str
    instance_number: int | None


def inputs(session: Session, job: Job) -> list[JobInput]:
    """The instances of the job's study version: the newest revision of each SOP Instance UID."""
    newest = (
        select(Instance.sop_instance_uid, func.max(Instance.revision).label("revision"))
        .where(Instance.study_id == job.study_id, Instance.study_version <= job.study_version)
        .group_by(Instance.sop_instance_uid)
        .subquery()
    )
    rows = session.execute(
        select(
            Series.series_uid,
            Instance.sop_instance_uid,
            Instance.sop_class_uid,
            Instance.rel_path,
            Instance.instance_number,
        )
        .join(Series, Series.id == Instance.series_id)
        .join(
            newest,
            and_(
                newest.c.sop_instance_uid == Instance.sop_instance_uid, newest.c.revision == Instance.revision
            ),
        )
        .where(Instance.study_id == job.study_id)
        .order_by(Series.id, Instance.instance_number, Instance.id)
    ).all()
    return [JobInput(*row) for row in rows]


@dataclass(frozen=True)
class ResultRecord:
    task: str
    kind: str  # "sr" | "sc"
    sop_instance_uid: str
    series_uid: str
    rel_path: str
    summary: dict[str, Any] | None


def results(session: Session, job_id: int) -> list[ResultRecord]:
    rows = session.execute(select(Result).where(Result.job_id == job_id).order_by(Result.id)).scalars()
    return [
        ResultRecord(r.task, r.kind, r.sop_instance_uid, r.series_uid, r.rel_path or "", r.summary)
        for r in rows
    ]


def record_results(
    session: Session,
    job_id: int,
    *,
    holder: str,
    results: Sequence[ResultRecord],
    destinations: Sequence[str],
    now: datetime,
) -> bool:
    """Record a job's results and one PENDING delivery per destination, if ``holder`` still holds the job.

    Called once, after the result files are durably on disk. The job row is locked first, so that a stale
    attempt (its lease passed on) records nothing; a re-run of the same job finds the rows and keeps them
    (the SOP Instance UIDs are derived from the study version, so they are the same anyway).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if not leases.held_by(job, JOB_LEASE, holder):
        return False
    existing = {(r.task, r.kind) for r in _recorded(session, job_id)}
    for r in results:
        if (r.task, r.kind) in existing:
            continue
        session.add(
            Result(
                job_id=job_id,
                task=r.task,
                kind=r.kind,
                sop_instance_uid=r.sop_instance_uid,
                series_uid=r.series_uid,
                rel_path=r.rel_path,
                summary=r.summary,
                created_at=now,
            )
        )
    known = set(session.execute(select(Delivery.destination).where(Delivery.job_id == job_id)).scalars())
    for name in destinations:
        if name not in known:
            session.add(
                Delivery(job_id=job_id, destination=name, state=DeliveryState.PENDING, updated_at=now)
            )
    session.flush()
    return True


def _recorded(session: Session, job_id: int) -> list[ResultRecord]:
    """:func:`results`, for :func:`record_results` (whose keyword argument shadows the name)."""
    return results(session, job_id)
