"""Rows for the index tests (tests/unit/orthonode/index): synthetic headers and stored copies, and the
few calls most tests make (record an instance, complete a study with a job, claim and fail the job).
All UIDs are synthetic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from orthonode.dicom.header import InstanceHeader
from orthonode.index import jobs, studies
from orthonode.index.db import transaction
from orthonode.index.leases import Released
from orthonode.index.models import Base, Job, Study
from orthonode.index.studies import Recorded, StoredCopy

T0 = datetime(2024, 1, 2, 10, 15, 0, 123456, tzinfo=UTC)
MR = "1.2.840.10008.5.1.4.1.1.4"
CR = "1.2.840.10008.5.1.4.1.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
LEASE = timedelta(minutes=15)
ROUTES = [{"pipeline": "knee_mri", "series": ["2.25.1"]}]


@dataclass
class Index:
    engine: Engine
    sessions: sessionmaker[Session]
    backend: str


def empty_tables(engine: Engine) -> None:
    """DELETE every row and restart the id sequences (TRUNCATE is ten times slower here)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def header(
    study: str = "2.25.100",
    series: str = "2.25.100.1",
    sop: str = "2.25.100.1.1",
    **fields: Any,
) -> InstanceHeader:
    values: dict[str, Any] = {
        "sop_class_uid": MR,
        "sop_instance_uid": sop,
        "study_uid": study,
        "series_uid": series,
        "transfer_syntax_uid": EXPLICIT,
        "modality": "MR",
        "body_part": "KNEE",
        "study_description": "MRI KNEE",
        "series_description": "SAG PD FS",
        "protocol_name": "knee_pd",
        "anatomic_region": (("72696002", "SCT", "Knee"),),
        "laterality": "R",
        "image_laterality": None,
        "image_orientation": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        "scanning_sequence": "SE",
        "sequence_name": "*tse2d1",
        "instance_number": 1,
    }
    values.update(fields)
    return InstanceHeader(**values)


def stored(h: InstanceHeader, content: bytes = b"v1") -> StoredCopy:
    digest = hashlib.sha256(h.sop_instance_uid.encode() + content).hexdigest()
    rel = f"studies/00/{h.study_uid}/{h.series_uid}/{h.sop_instance_uid}.{digest[:16]}.dcm"
    return StoredCopy(rel, digest, 100 + len(content))


def record(
    ix: Index,
    h: InstanceHeader,
    content: bytes = b"v1",
    now: datetime = T0,
    max_instances: int = 100,
    calling_aet: str | None = "MODALITY",
) -> Recorded:
    with transaction(ix.sessions) as session:
        return studies.record_instance(
            session,
            h,
            stored(h, content),
            calling_aet=calling_aet,
            now=now,
            max_instances_per_study=max_instances,
        )


def get_study(ix: Index, uid: str = "2.25.100") -> Study:
    with transaction(ix.sessions) as session:
        return session.execute(select(Study).where(Study.study_uid == uid)).scalar_one()


def get_job(ix: Index, job_id: int) -> Job:
    with transaction(ix.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def count(ix: Index, model: type[Any]) -> int:
    with transaction(ix.sessions) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def complete(ix: Index, uid: str = "2.25.100", now: datetime = T0, routes: list[Any] | None = None) -> int:
    """Mark the study's current version complete with a job; returns the job id."""
    with transaction(ix.sessions) as session:
        study = session.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        job = jobs.create(
            session,
            study,
            routes=ROUTES if routes is None else routes,
            anatomy="knee",
            laterality="R",
            reason="knee MRI",
            forced=False,
            now=now,
        )
        return job.id


def new_job(ix: Index, uid: str = "2.25.100", now: datetime = T0) -> int:
    record(ix, header(study=uid, series=f"{uid}.1", sop=f"{uid}.1.1"), now=now)
    return complete(ix, uid, now)


def claim(ix: Index, job_id: int, now: datetime, holder: str = "w1") -> Job | None:
    with transaction(ix.sessions) as session:
        return jobs.claim(session, job_id, holder=holder, now=now, lease=LEASE)


def fail(
    ix: Index,
    job_id: int,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int = 3,
    holder: str = "w1",
) -> Released:
    with transaction(ix.sessions) as session:
        return jobs.fail(
            session,
            job_id,
            holder=holder,
            error="peer down",
            now=now,
            retry_after=retry_after,
            max_attempts=max_attempts,
        )


def take(
    ix: Index, now: datetime, retry_after: timedelta = timedelta(seconds=10), limit: int = 100
) -> list[int]:
    with transaction(ix.sessions) as session:
        return jobs.take_to_enqueue(session, now=now, retry_after=retry_after, limit=limit)
