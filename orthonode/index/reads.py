"""What operators read: the dashboard counts, the study list and a study's whole story, as frozen records.

The console (``orthonode.console``) and ``orthonode status --watch`` show these; they never see ORM
objects, and nothing here writes. The index holds no patient identity (``orthonode.index.models``), so
neither do these records; the console reads names from the stored files only when an operator turns
that on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orthonode.index.models import Delivery, DeliveryState, Instance, Job, JobState, Result, Series, Study

#: Jobs the broker still has to run (PENDING: committed, not yet handed over; QUEUED: handed over).
WAITING_JOB_STATES = (JobState.PENDING, JobState.QUEUED)
MAX_PAGE = 500


@dataclass(frozen=True)
class WorkerSeen:
    """A worker process, as the index knows it: the lease holders of its recent job attempts."""

    host: str
    pid: int
    running_job: int | None
    last_seen: datetime


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    instances_today: int
    bytes_today: int
    studies_today: int
    studies_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    queue_depth: int
    oldest_waiting_since: datetime | None
    deliveries_by_destination: dict[str, dict[str, int]]
    failed_jobs: int
    failed_deliveries: int
    expired_leases: int
    last_received_at: datetime | None
    workers: tuple[WorkerSeen, ...]


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    version: int
    state: str
    anatomy: str | None
    laterality: str | None
    description: str | None
    instances: int
    series: int
    route_reason: str | None
    last_received_at: datetime
    job_id: int | None
    job_state: str | None


@dataclass(frozen=True)
class StudyPage:
    rows: tuple[StudyRow, ...]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    modality: str | None
    body_part: str | None
    description: str | None
    laterality: str | None
    instances: int


@dataclass(frozen=True)
class ResultRow:
    id: int
    task: str
    kind: str  # "sr" | "sc"
    sop_instance_uid: str
    summary: dict[str, Any] | None


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    job_id: int
    destination: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class JobRow:
    id: int
    study_uid: str
    study_version: int
    state: str
    attempts: int
    forced: bool
    routes: tuple[dict[str, Any], ...]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    error: str | None
    results: tuple[ResultRow, ...]
    deliveries: tuple[DeliveryRow, ...]


@dataclass(frozen=True)
class StudyDetail:
    study: StudyRow
    version_started_at: datetime
    series: tuple[SeriesRow, ...]
    jobs: tuple[JobRow, ...]


@dataclass(frozen=True)
class FailedItems:
    jobs: tuple[JobRow, ...]
    deliveries: tuple[DeliveryRow, ...]


@dataclass(frozen=True)
class ResultFile:
    job_id: int
    kind: str
    rel_path: str


def _counts(session: Session, column: Any) -> dict[str, int]:
    return {str(k): int(n) for k, n in session.execute(select(column, func.count()).group_by(column))}


def _holder(holder: str) -> tuple[str, int] | None:
    """``host:pid:token`` (``orthonode.retries.attempt_holder``) -> (host, pid)."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _workers(session: Session, now: datetime, window: timedelta) -> tuple[WorkerSeen, ...]:
    rows = session.execute(
        select(Job.holder, Job.state, Job.id, Job.updated_at).where(
            Job.holder.is_not(None), Job.updated_at >= now - window
        )
    ).all()
    seen: dict[tuple[str, int], WorkerSeen] = {}
    for holder, state, job_id, updated in rows:
        key = _holder(holder) if holder else None
        if key is None:
            continue
        running = job_id if state == JobState.RUNNING else None
        earlier = seen.get(key)
        if earlier is not None:
            running = running or earlier.running_job
            updated = max(updated, earlier.last_seen)
        seen[key] = WorkerSeen(key[0], key[1], running, updated)
    return tuple(sorted(seen.values(), key=lambda w: w.last_seen, reverse=True))


def dashboard(session: Session, now: datetime, *, day_start: datetime | None = None) -> Dashboard:
    """Counts for the front page. "Today" starts at ``day_start`` (default: midnight UTC of ``now``)."""
    since = day_start or now.replace(hour=0, minute=0, second=0, microsecond=0)
    instances, size = session.execute(
        select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0)).where(
            Instance.received_at >= since
        )
    ).one()
    studies_today = session.execute(
        select(func.count(func.distinct(Instance.study_id))).where(Instance.received_at >= since)
    ).scalar_one()
    jobs = _counts(session, Job.state)
    oldest = session.execute(
        select(func.min(Job.created_at)).where(Job.state.in_(WAITING_JOB_STATES))
    ).scalar()
    by_destination: dict[str, dict[str, int]] = defaultdict(dict)
    for name, state, n in session.execute(
        select(Delivery.destination, Delivery.state, func.count()).group_by(
            Delivery.destination, Delivery.state
        )
    ):
        by_destination[str(name)][str(state)] = int(n)
    expired = session.execute(
        select(func.count()).where(Job.state == JobState.RUNNING, Job.lease_until < now)
    ).scalar_one()
    return Dashboard(
        now=now,
        instances_today=int(instances),
        bytes_today=int(size),
        studies_today=int(studies_today),
        studies_by_state=_counts(session, Study.state),
        jobs_by_state=jobs,
        queue_depth=sum(jobs.get(str(s), 0) for s in WAITING_JOB_STATES),
        oldest_waiting_since=oldest,
        deliveries_by_destination=dict(by_destination),
        failed_jobs=jobs.get(str(JobState.FAILED), 0),
        failed_deliveries=sum(d.get(str(DeliveryState.FAILED), 0) for d in by_destination.values()),
        expired_leases=int(expired),
        last_received_at=session.execute(select(func.max(Study.last_received_at))).scalar(),
        workers=_workers(session, now, timedelta(hours=1)),
    )


def _latest_jobs(session: Session, study_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    if not study_ids:
        return {}
    rows = session.execute(
        select(Job.study_id, Job.id, Job.state).where(Job.study_id.in_(study_ids)).order_by(Job.id)
    ).all()
    return {int(sid): (int(jid), str(state)) for sid, jid, state in rows}  # the last (newest) wins


def _series_counts(session: Session, study_ids: Sequence[int]) -> dict[int, int]:
    if not study_ids:
        return {}
    rows = session.execute(
        select(Series.study_id, func.count()).where(Series.study_id.in_(study_ids)).group_by(Series.study_id)
    )
    return {int(sid): int(n) for sid, n in rows}


def _study_row(study: Study, series: int, job: tuple[int, str] | None) -> StudyRow:
    return StudyRow(
        study_uid=study.study_uid,
        version=study.version,
        state=study.state,
        anatomy=study.anatomy,
        laterality=study.laterality,
        description=study.study_description,
        instances=study.instance_count,
        series=series,
        route_reason=study.route_reason,
        last_received_at=study.last_received_at,
        job_id=job[0] if job else None,
        job_state=job[1] if job else None,
    )


def list_studies(
    session: Session,
    *,
    state: str | None = None,
    anatomy: str | None = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> StudyPage:
    """Studies, newest activity first, filtered by state, anatomy and last-received time (``[from, to)``)."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    query = select(Study)
    if state:
        query = query.where(Study.state == state)
    if anatomy:
        query = query.where(Study.anatomy == anatomy)
    if received_from is not None:
        query = query.where(Study.last_received_at >= received_from)
    if received_to is not None:
        query = query.where(Study.last_received_at < received_to)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    studies = (
        session.execute(
            query.order_by(Study.last_received_at.desc(), Study.id.desc()).limit(limit).offset(offset)
        )
        .scalars()
        .all()
    )
    ids = [s.id for s in studies]
    jobs, series = _latest_jobs(session, ids), _series_counts(session, ids)
    rows = tuple(_study_row(s, series.get(s.id, 0), jobs.get(s.id)) for s in studies)
    return StudyPage(rows=rows, total=int(total), offset=offset, limit=limit)


def _delivery_row(d: Delivery) -> DeliveryRow:
    return DeliveryRow(
        id=d.id,
        job_id=d.job_id,
        destination=d.destination,
        state=d.state,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        sent_at=d.sent_at,
        last_error=d.last_error,
        updated_at=d.updated_at,
    )


def _job_row(session: Session, job: Job, study_uid: str) -> JobRow:
    results = session.execute(select(Result).where(Result.job_id == job.id).order_by(Result.id)).scalars()
    deliveries = session.execute(
        select(Delivery).where(Delivery.job_id == job.id).order_by(Delivery.id)
    ).scalars()
    return JobRow(
        id=job.id,
        study_uid=study_uid,
        study_version=job.study_version,
        state=job.state,
        attempts=job.attempts,
        forced=job.forced,
        routes=tuple(r for r in job.routes if isinstance(r, dict)),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        detail=job.detail,
        error=job.error,
        results=tuple(ResultRow(r.id, r.task, r.kind, r.sop_instance_uid, r.summary) for r in results),
        deliveries=tuple(_delivery_row(d) for d in deliveries),
    )


def study_detail(session: Session, study_uid: str) -> StudyDetail | None:
    """Everything about one study: its series, and each version's job with results and deliveries."""
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is None:
        return None
    jobs = (
        session.execute(select(Job).where(Job.study_id == study.id).order_by(Job.id.desc())).scalars().all()
    )
    series = tuple(
        SeriesRow(s.series_uid, s.modality, s.body_part, s.series_description, s.laterality, s.instance_count)
        for s in study.series
    )
    latest = (jobs[0].id, str(jobs[0].state)) if jobs else None
    return StudyDetail(
        study=_study_row(study, len(series), latest),
        version_started_at=study.version_started_at,
        series=series,
        jobs=tuple(_job_row(session, j, study.study_uid) for j in jobs),
    )


def job_detail(session: Session, job_id: int) -> JobRow | None:
    row = session.execute(
        select(Job, Study.study_uid).join(Study, Study.id == Job.study_id).where(Job.id == job_id)
    ).one_or_none()
    return None if row is None else _job_row(session, row[0], row[1])


def failed_items(session: Session, *, limit: int = 200) -> FailedItems:
    """FAILED jobs and FAILED deliveries, newest first: what needs an operator."""
    jobs = session.execute(
        select(Job, Study.study_uid)
        .join(Study, Study.id == Job.study_id)
        .where(Job.state == JobState.FAILED)
        .order_by(Job.updated_at.desc())
        .limit(limit)
    ).all()
    deliveries = session.execute(
        select(Delivery)
        .where(Delivery.state == DeliveryState.FAILED)
        .order_by(Delivery.updated_at.desc())
        .limit(limit)
    ).scalars()
    return FailedItems(
        jobs=tuple(_job_row(session, j, uid) for j, uid in jobs),
        deliveries=tuple(_delivery_row(d) for d in deliveries),
    )


def result_file(session: Session, result_id: int) -> ResultFile | None:
    """Where a result object (SR or SC) is stored, for the console's key-image rendering."""
    row = session.get(Result, result_id)
    if row is None or not row.rel_path:
        return None
    return ResultFile(row.job_id, row.kind, row.rel_path)


# --------------------------------------------------------------------------------------------------
# Status (operators, `orthonode status`)
# --------------------------------------------------------------------------------------------------
def status_snapshot(session: Session, *, limit: int = 200) -> dict[str, list[dict[str, Any]]]:
    """The newest studies, jobs and deliveries as plain JSON values (``orthonode status --json``)."""
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
