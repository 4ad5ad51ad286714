"""The index: what the node holds, without patient identity.

Study, series and instance rows keep only what routing and result writing need (UIDs, modality, body
part, descriptions, laterality, orientation); patient name, id and birth date stay in the stored DICOM
files and never enter the database. Jobs, results and deliveries record the node's work so that nothing
is lost across restarts (DESIGN.md "Acknowledge only what is durable").
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

UID = String(64)  # PS3.5 §9.1: a UID is at most 64 characters


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the index; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class StudyState(StrEnum):
    RECEIVING = "receiving"  # instances arriving; the completion policy has not decided yet
    COMPLETE = "complete"  # this version completed and was routed: a job exists for it
    NOT_ROUTED = "not_routed"  # completed, but no task pipeline applies (reason recorded)
    DISCARDED = "discarded"  # the force timeout fired with force_action = discard


class JobState(StrEnum):
    PENDING = "pending"  # committed, not yet handed to the broker (the sweeper hands it over)
    QUEUED = "queued"  # handed to the broker
    RUNNING = "running"  # a worker holds its lease
    DONE = "done"
    FAILED = "failed"  # attempts exhausted or a permanent error; `orthonode retry` re-queues it
    DISCARDED = "discarded"  # an operator gave up on a FAILED job (console): no report for this version


class DeliveryState(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or now); the sweeper hands it to a worker
    SENDING = "sending"  # a worker holds its lease (holder, lease_until) and is sending
    SENT = "sent"  # every result of the job was accepted by the destination
    FAILED = "failed"  # attempts exhausted; `orthonode retry JOB` puts it back to PENDING
    DISCARDED = "discarded"  # an operator gave up on a FAILED delivery (console); never sent again


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING, index=True)
    study_description: Mapped[str | None] = mapped_column(String(64))
    anatomy: Mapped[str | None] = mapped_column(String(16))
    laterality: Mapped[str | None] = mapped_column(String(1))
    route_reason: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    version_started_at: Mapped[datetime] = mapped_column()
    last_received_at: Mapped[datetime] = mapped_column()
    state_changed_at: Mapped[datetime] = mapped_column()

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    jobs: Mapped[list[Job]] = relationship(back_populates="study", order_by="Job.id")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    body_part: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(64))
    protocol_name: Mapped[str | None] = mapped_column(String(64))
    anatomic_region: Mapped[list[Any] | None] = mapped_column()  # [[value, scheme, meaning], ...]
    laterality: Mapped[str | None] = mapped_column(String(1))
    image_orientation: Mapped[list[Any] | None] = mapped_column()  # 6 direction cosines of the first instance
    scanning_sequence: Mapped[str | None] = mapped_column(String(64))
    sequence_name: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column()
    last_received_at: Mapped[datetime] = mapped_column()

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.id")


class Instance(Base):
    """One stored file. A SOP Instance UID received again with other bytes is a new *revision*."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "sha256", name="uq_instance_content"),
        Index("ix_instances_study_version", "study_id", "study_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    study_version: Mapped[int] = mapped_column(Integer)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    image_laterality: Mapped[str | None] = mapped_column(String(1))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    rel_path: Mapped[str] = mapped_column(String(512))
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column()

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """The work for one complete study version: exactly one row per (study, version)."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("study_id", "study_version", name="uq_job_study_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    study_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING, index=True)
    routes: Mapped[list[Any]] = mapped_column()  # the routing decision, as JSON
    forced: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    enqueued_at: Mapped[datetime | None] = mapped_column()  # last hand-over to the broker
    next_attempt_at: Mapped[datetime | None] = mapped_column()  # retry backoff: not handed over before this
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    holder: Mapped[str | None] = mapped_column(String(128))  # the attempt running it (index.leases)
    detail: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    study: Mapped[Study] = relationship(back_populates="jobs")
    results: Mapped[list[Result]] = relationship(back_populates="job", order_by="Result.id")


class Result(Base):
    """An object the node produced for a job (SR, SC). Re-runs reuse the same SOP Instance UID."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("job_id", "task", "kind", name="uq_result_job_task_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_uid: Mapped[str] = mapped_column(UID)
    rel_path: Mapped[str | None] = mapped_column(String(512))
    summary: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="results")


class Delivery(Base):
    """The state of sending one job's results to one destination."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("job_id", "destination", name="uq_delivery_job_destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    holder: Mapped[str | None] = mapped_column(String(128))  # the attempt sending it (index.leases)
    lease_until: Mapped[datetime | None] = mapped_column()
