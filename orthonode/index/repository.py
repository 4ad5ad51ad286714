"""Every query the node makes. Nothing else in the package issues SQL.

Concurrency: several node processes may share one PostgreSQL index (README "Operating at scale"). A
study row is the lock for everything under it: recording an instance takes it ``FOR UPDATE``; the
sweeper takes it ``FOR UPDATE SKIP LOCKED`` so that two sweepers never decide the same study, and the
``(study_id, study_version)`` unique constraint on jobs makes "exactly one job per version" a database
invariant rather than a hope. On SQLite, ``BEGIN IMMEDIATE`` (orthonode.index.db) serialises writers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orthonode.completion.policy import SeriesTiming, StudyTiming
from orthonode.dicom.contexts import StoreStatus
from orthonode.dicom.header import InstanceHeader
from orthonode.dicom.storage import StoredFile
from orthonode.errors import RejectedInstance
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

log = logging.getLogger(__name__)


class RecordOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing changes
    NEW_REVISION = "new_revision"  # same SOP Instance UID, other bytes: kept beside the earlier one


@dataclass(frozen=True)
class Recorded:
    outcome: RecordOutcome
    study_id: int
    study_version: int
    revision: int
    reopened: bool  # the instance arrived after the study had completed: a new study version began


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any], key: str) -> None:
    """INSERT ... ON CONFLICT (key) DO NOTHING on PostgreSQL and SQLite."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            postgresql.insert(model).values(**values).on_conflict_do_nothing(index_elements=[key])
        )
    elif dialect == "sqlite":
        session.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing(index_elements=[key]))
    else:  # pragma: no cover - other backends: plain check-then-insert under the caller's transaction
        column = getattr(model, key)
        if session.execute(select(model.id).where(column == values[key])).first() is None:
            session.add(model(**values))
            session.flush()


# --------------------------------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------------------------------
def record_instance(
    session: Session,
    header: InstanceHeader,
    stored: StoredFile,
    *,
    calling_aet: str | None,
    now: datetime,
    max_instances_per_study: int,
) -> Recorded:
    """Index one stored instance (in the caller's transaction)."""
    _insert_ignore(
        session,
        Study,
        {
            "study_uid": header.study_uid,
            "version": 1,
            "state": StudyState.RECEIVING,
            "study_description": header.study_description,
            "instance_count": 0,
            "version_started_at": now,
            "last_received_at": now,
            "state_changed_at": now,
        },
        "study_uid",
    )
    # Core statements rather than ORM objects: this runs once per received instance (benchmarks/ingest.py
    # measured the ORM unit of work as the largest CPU cost of a C-STORE).
    study = session.execute(
        select(Study.id, Study.version, Study.state, Study.instance_count, Study.study_description)
        .where(Study.study_uid == header.study_uid)
        .with_for_update()
    ).one()

    duplicate = session.execute(
        select(Instance.revision).where(
            Instance.sop_instance_uid == header.sop_instance_uid, Instance.sha256 == stored.sha256
        )
    ).scalar_one_or_none()
    if duplicate is not None:
        if study.state == StudyState.RECEIVING:
            # A resend is an arrival: the sender is still sending this study (e.g. all of it again after
            # the node crashed), so its quiet time starts again. A complete study is not reopened by
            # identical data: no new version, no second report.
            session.execute(update(Study).where(Study.id == study.id).values(last_received_at=now))
            session.execute(
                update(Series)
                .where(Series.study_id == study.id, Series.series_uid == header.series_uid)
                .values(last_received_at=now)
            )
        return Recorded(RecordOutcome.DUPLICATE, study.id, study.version, duplicate, reopened=False)

    if study.instance_count >= max_instances_per_study:
        raise RejectedInstance(
            StoreStatus.STUDY_TOO_LARGE,
            f"study already holds {study.instance_count} instances (max_instances_per_study)",
            quarantine=False,
        )

    series_id = _series_for(session, study.id, header, now)
    prior = session.execute(
        select(func.max(Instance.revision)).where(Instance.sop_instance_uid == header.sop_instance_uid)
    ).scalar_one()
    revision = (prior or 0) + 1

    reopened = study.state != StudyState.RECEIVING
    version = study.version + 1 if reopened else study.version
    changes: dict[str, Any] = {"last_received_at": now, "instance_count": Study.instance_count + 1}
    if reopened:  # a late instance after completion: a new study version begins
        changes.update(
            version=version,
            state=StudyState.RECEIVING,
            version_started_at=now,
            state_changed_at=now,
            route_reason=None,
        )
    if study.study_description is None and header.study_description is not None:
        changes["study_description"] = header.study_description
    session.execute(update(Study).where(Study.id == study.id).values(**changes))
    session.execute(
        update(Series)
        .where(Series.id == series_id)
        .values(last_received_at=now, instance_count=Series.instance_count + 1)
    )
    session.execute(
        insert(Instance).values(
            study_id=study.id,
            series_id=series_id,
            sop_instance_uid=header.sop_instance_uid,
            sop_class_uid=header.sop_class_uid,
            transfer_syntax_uid=header.transfer_syntax_uid,
            revision=revision,
            study_version=version,
            instance_number=header.instance_number,
            image_laterality=header.image_laterality,
            sha256=stored.sha256,
            size_bytes=stored.size,
            rel_path=stored.rel_path,
            calling_aet=calling_aet,
            received_at=now,
        )
    )
    outcome = RecordOutcome.NEW_REVISION if prior else RecordOutcome.STORED
    return Recorded(outcome, study.id, version, revision, reopened)


def _series_for(session: Session, study_id: int, header: InstanceHeader, now: datetime) -> int:
    """The id of the instance's series, created on its first instance."""
    _insert_ignore(
        session,
        Series,
        {
            "study_id": study_id,
            "series_uid": header.series_uid,
            "modality": header.modality,
            "sop_class_uid": header.sop_class_uid,
            "body_part": header.body_part,
            "series_description": header.series_description,
            "protocol_name": header.protocol_name,
            "anatomic_region": [list(c) for c in header.anatomic_region] or None,
            "laterality": header.laterality,
            "image_orientation": list(header.image_orientation) if header.image_orientation else None,
            "scanning_sequence": header.scanning_sequence,
            "sequence_name": header.sequence_name,
            "instance_count": 0,
            "first_received_at": now,
            "last_received_at": now,
        },
        "series_uid",
    )
    series = session.execute(
        select(Series.id, Series.study_id).where(Series.series_uid == header.series_uid)
    ).one()
    if series.study_id != study_id:
        raise RejectedInstance(
            StoreStatus.IDENTIFIER_MISMATCH,
            "Series Instance UID already belongs to another study",
            quarantine=True,
        )
    return int(series.id)


# --------------------------------------------------------------------------------------------------
# Completion (the sweeper)
# --------------------------------------------------------------------------------------------------
def studies_to_check(
    session: Session, *, quiet_before: datetime, started_before: datetime, limit: int
) -> list[int]:
    """Receiving studies that might be decidable now (cheap pre-filter; the policy decides)."""
    rows = session.execute(
        select(Study.id)
        .where(
            Study.state == StudyState.RECEIVING,
            or_(Study.last_received_at <= quiet_before, Study.version_started_at <= started_before),
        )
        .order_by(Study.last_received_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


def lock_study(session: Session, study_id: int) -> Study | None:
    """The study row, locked for this transaction; None if another process holds it."""
    return session.execute(
        select(Study).where(Study.id == study_id).with_for_update(skip_locked=True)
    ).scalar_one_or_none()


def study_timing(session: Session, study: Study) -> StudyTiming:
    rows = session.execute(
        select(Series.series_uid, Series.first_received_at, Series.last_received_at).where(
            Series.study_id == study.id
        )
    ).all()
    return StudyTiming(
        study_uid=study.study_uid,
        version=study.version,
        version_started_at=study.version_started_at,
        last_received_at=study.last_received_at,
        series=tuple(SeriesTiming(uid, first, last) for uid, first, last in rows),
    )


def study_series(session: Session, study: Study) -> Sequence[Series]:
    return (
        session.execute(select(Series).where(Series.study_id == study.id).order_by(Series.id)).scalars().all()
    )


def image_lateralities(session: Session, series_id: int) -> tuple[str, ...]:
    rows = session.execute(
        select(Instance.image_laterality)
        .where(Instance.series_id == series_id, Instance.image_laterality.is_not(None))
        .distinct()
    )
    return tuple(sorted(str(r[0]) for r in rows))


def create_job(
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


def close_study(session: Session, study: Study, state: StudyState, reason: str, now: datetime) -> None:
    """End a study version without a job (not routed, or discarded by the force action)."""
    study.state = state
    study.state_changed_at = now
    study.route_reason = reason


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------
def take_jobs_to_enqueue(
    session: Session,
    *,
    now: datetime,
    retry_after: timedelta,
    requeue_after: timedelta | None = None,
    limit: int = 100,
) -> list[int]:
    """Jobs to hand to the broker; stamps them so a concurrent sweeper skips them.

    PENDING jobs not handed over within ``retry_after`` (never handed over, or the hand-over failed), and,
    with ``requeue_after``, QUEUED jobs no worker claimed within it: a broker that lost its messages
    (restarted without persistence, its queue purged) loses no job, since the index hands them over
    again. A duplicate message for a job still in the queue is harmless: the claim is conditional.
    """
    pending = and_(
        Job.state == JobState.PENDING,
        or_(Job.enqueued_at.is_(None), Job.enqueued_at <= now - retry_after),
        or_(Job.run_after.is_(None), Job.run_after <= now),
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


def claim_job(session: Session, job_id: int, *, worker: str, now: datetime, lease: timedelta) -> Job | None:
    """Take the job for this worker if nobody holds a live lease on it; None otherwise."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.state.in_([JobState.PENDING, JobState.QUEUED]),
                and_(Job.state == JobState.RUNNING, Job.lease_until < now),
            ),
        )
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            started_at=now,
            updated_at=now,
            lease_until=now + lease,
            worker=worker[:128],
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Job, job_id, populate_existing=True)


def finish_job(session: Session, job_id: int, *, worker: str, detail: str, now: datetime) -> bool:
    """Mark the job DONE if ``worker`` still holds it; False if its lease passed to another worker."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker == worker[:128])
        .values(state=JobState.DONE, detail=detail, finished_at=now, updated_at=now, lease_until=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail_job(
    session: Session,
    job_id: int,
    *,
    worker: str,
    error: str,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int,
) -> str:
    """Record a failed attempt: back to PENDING (handed over again after ``retry_after``) while attempts
    remain and the error is transient (``retry_after`` given), else FAILED. Only the worker that holds
    the job may do so: a worker whose lease expired and passed on leaves the job as it is (its state is
    returned unchanged)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return "missing"
    if job.state != JobState.RUNNING or job.worker != worker[:128]:
        return job.state
    job.error = error[:4000]
    job.updated_at = now
    job.lease_until = None
    if retry_after is not None and job.attempts < max_attempts:
        job.state = JobState.PENDING
        job.enqueued_at = None
        job.run_after = now + retry_after
    else:
        job.state = JobState.FAILED
        job.finished_at = now
    return job.state


def expire_leases(session: Session, *, now: datetime, max_attempts: int) -> list[int]:
    """RUNNING jobs whose worker went silent (killed, machine lost) go back to PENDING, or FAILED."""
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
        job.updated_at = now
        job.lease_until = None
        job.error = f"worker {job.worker} lost its lease (attempt {job.attempts})"
        if job.attempts < max_attempts:
            job.state = JobState.PENDING
            job.enqueued_at = None
        else:
            job.state = JobState.FAILED
            job.finished_at = now
    return [job.id for job in jobs]


@dataclass(frozen=True)
class JobInput:
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    rel_path: str
    instance_number: int | None


def job_inputs(session: Session, job: Job) -> list[JobInput]:
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


# --------------------------------------------------------------------------------------------------
# Results and deliveries
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultRecord:
    task: str
    kind: str  # "sr" | "sc"
    sop_instance_uid: str
    series_uid: str
    rel_path: str
    summary: dict[str, Any] | None


def job_results(session: Session, job_id: int) -> list[ResultRecord]:
    rows = session.execute(select(Result).where(Result.job_id == job_id).order_by(Result.id)).scalars()
    return [
        ResultRecord(r.task, r.kind, r.sop_instance_uid, r.series_uid, r.rel_path or "", r.summary)
        for r in rows
    ]


def record_results(
    session: Session,
    job_id: int,
    *,
    worker: str,
    results: Sequence[ResultRecord],
    destinations: Sequence[str],
    now: datetime,
) -> bool:
    """Record a job's results and one PENDING delivery per destination, if ``worker`` still holds the job.

    Called once, after the result files are durably on disk. The job row is locked first, so that a stale
    attempt (its lease passed on) records nothing; a re-run of the same job finds the rows and keeps them
    (the SOP Instance UIDs are derived from the study version, so they are the same anyway).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state != JobState.RUNNING or job.worker != worker[:128]:
        return False
    existing = {(r.task, r.kind) for r in job_results(session, job_id)}
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


def due_deliveries(
    session: Session, *, now: datetime, job_id: int | None = None, limit: int = 100
) -> list[tuple[int, int]]:
    """(delivery id, job id) of deliveries a worker should attempt now: PENDING and due, or SENDING with
    an expired lease (the worker died mid-send); of one job if ``job_id`` is given."""
    query = select(Delivery.id, Delivery.job_id)
    if job_id is not None:
        query = query.where(Delivery.job_id == job_id)
    rows = session.execute(
        query.where(
            or_(
                and_(
                    Delivery.state == DeliveryState.PENDING,
                    or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                ),
                and_(Delivery.state == DeliveryState.SENDING, Delivery.lease_until < now),
            )
        )
        .order_by(Delivery.id)
        .limit(limit)
    ).all()
    return [(int(d), int(j)) for d, j in rows]


def claim_delivery(
    session: Session, delivery_id: int, *, holder: str, now: datetime, lease: timedelta
) -> Delivery | None:
    """Take a due delivery for one sending attempt (conditional update: exactly one attempt wins)."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            or_(
                and_(
                    Delivery.state == DeliveryState.PENDING,
                    or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                ),
                and_(Delivery.state == DeliveryState.SENDING, Delivery.lease_until < now),
            ),
        )
        .values(
            state=DeliveryState.SENDING,
            attempts=Delivery.attempts + 1,
            holder=holder[:128],
            lease_until=now + lease,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(Delivery, delivery_id, populate_existing=True)


def finish_delivery(
    session: Session,
    delivery_id: int,
    *,
    holder: str,
    now: datetime,
    error: str | None,
    retry_after: timedelta | None,
    max_attempts: int,
) -> str | None:
    """Record the attempt's outcome: SENT (no error), PENDING again after ``retry_after``, or FAILED when
    the attempts are used up. Returns the new state, or None if ``holder`` no longer holds it."""
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.state != DeliveryState.SENDING or delivery.holder != holder[:128]:
        return None
    delivery.updated_at = now
    delivery.lease_until = None
    if error is None:
        delivery.state = DeliveryState.SENT
        delivery.sent_at = now
        delivery.last_error = None
    elif retry_after is not None and delivery.attempts < max_attempts:
        delivery.state = DeliveryState.PENDING
        delivery.next_attempt_at = now + retry_after
        delivery.last_error = error[:4000]
    else:
        delivery.state = DeliveryState.FAILED
        delivery.last_error = error[:4000]
    return delivery.state


# --------------------------------------------------------------------------------------------------
# Status (operators, `orthonode status`)
# --------------------------------------------------------------------------------------------------
def status_snapshot(session: Session, *, limit: int = 200) -> dict[str, list[dict[str, Any]]]:
    studies = (
        session.execute(select(Study).order_by(Study.last_received_at.desc()).limit(limit)).scalars().all()
    )
    jobs = session.execute(
        select(Job, Study.study_uid)
        .join(Study, Study.id == Job.study_id)
        .order_by(Job.id.desc())
        .limit(limit)
    ).all()
    deliveries = session.execute(select(Delivery).order_by(Delivery.id.desc()).limit(limit)).scalars().all()
    results = {
        r[0]: r[1] for r in session.execute(select(Result.job_id, func.count()).group_by(Result.job_id))
    }
    return {
        "studies": [
            {
                "study_uid": s.study_uid,
                "version": s.version,
                "instances": s.instance_count,
                "series": len(s.series),
                "state": s.state,
                "anatomy": s.anatomy,
                "laterality": s.laterality,
                "reason": s.route_reason,
                "last_received_at": s.last_received_at.isoformat(),
            }
            for s in studies
        ],
        "jobs": [
            {
                "id": j.id,
                "study_uid": uid,
                "study_version": j.study_version,
                "state": j.state,
                "attempts": j.attempts,
                "results": results.get(j.id, 0),
                "detail": j.detail,
                "error": j.error,
                "updated_at": j.updated_at.isoformat(),
            }
            for j, uid in jobs
        ],
        "deliveries": [
            {
                "job_id": d.job_id,
                "destination": d.destination,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
                "error": d.last_error,
            }
            for d in deliveries
        ],
    }
