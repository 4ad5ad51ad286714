"""Instances, series and studies: recording what was received, and the sweeper's reads and closes.

Concurrency: several node processes may share one PostgreSQL index (README "Operating at scale"). A
study row is the lock for everything under it: recording an instance takes it ``FOR UPDATE``; the
sweeper takes it ``FOR UPDATE SKIP LOCKED`` so that two sweepers never decide the same study. On SQLite,
``BEGIN IMMEDIATE`` (orthonode.index.db) serialises writers.

The index takes what it keeps as plain values (:class:`InstanceFields`, :class:`StoredCopy`) and answers
with its own outcomes (:class:`RecordOutcome`, :class:`InstanceRefused`); the C-STORE handler
(orthonode.dicom.handlers) maps them to DICOM statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Executable, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orthonode.errors import OrthonodeError
from orthonode.index.models import Instance, Series, Study, StudyState


class InstanceFields(Protocol):
    """What the index keeps about one received instance (no patient identity); the header the C-STORE
    handler reads (orthonode.dicom.header.InstanceHeader) has these fields."""

    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def study_uid(self) -> str: ...
    @property
    def series_uid(self) -> str: ...
    @property
    def transfer_syntax_uid(self) -> str: ...
    @property
    def modality(self) -> str | None: ...
    @property
    def body_part(self) -> str | None: ...
    @property
    def study_description(self) -> str | None: ...
    @property
    def series_description(self) -> str | None: ...
    @property
    def protocol_name(self) -> str | None: ...
    @property
    def anatomic_region(self) -> tuple[tuple[str, str, str], ...]: ...
    @property
    def laterality(self) -> str | None: ...
    @property
    def image_laterality(self) -> str | None: ...
    @property
    def image_orientation(self) -> tuple[float, ...] | None: ...
    @property
    def scanning_sequence(self) -> str | None: ...
    @property
    def sequence_name(self) -> str | None: ...
    @property
    def instance_number(self) -> int | None: ...


@dataclass(frozen=True)
class StoredCopy:
    """Where the instance's bytes are kept (relative to the data directory) and what they are."""

    rel_path: str
    sha256: str
    size: int


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


class Refusal(StrEnum):
    """Why the index refuses an instance."""

    STUDY_FULL = "study_full"  # the study already holds max_instances_per_study instances
    SERIES_OF_ANOTHER_STUDY = "series_of_another_study"  # its Series Instance UID names another study


class InstanceRefused(OrthonodeError):
    """The index will not record the instance; nothing of it was written (the caller rolls back)."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail


# --------------------------------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------------------------------
def record_instance(
    session: Session,
    fields: InstanceFields,
    stored: StoredCopy,
    *,
    calling_aet: str | None,
    now: datetime,
    max_instances_per_study: int,
) -> Recorded:
    """Index one stored instance (in the caller's transaction). Raises :class:`InstanceRefused`."""
    sql = _statements(session.get_bind().dialect.name)
    conn = session.connection()
    study = _locked_study_for(conn, sql, fields, now)
    duplicate = conn.execute(
        sql.duplicate, {"sop": fields.sop_instance_uid, "sha256": stored.sha256}
    ).scalar_one_or_none()
    if duplicate is not None:
        _touch_on_resend(conn, sql, study, fields, now)
        return Recorded(RecordOutcome.DUPLICATE, study.id, study.version, duplicate, reopened=False)
    if study.instance_count >= max_instances_per_study:
        raise InstanceRefused(
            Refusal.STUDY_FULL,
            f"study already holds {study.instance_count} instances (max_instances_per_study)",
        )
    series_id = _series_for(conn, sql, study.id, fields, now)
    prior = conn.execute(sql.prior_revision, {"sop": fields.sop_instance_uid}).scalar_one()
    revision = (prior or 0) + 1
    version, reopened = _count_arrival(conn, sql, study, series_id, fields, now)
    conn.execute(
        sql.insert_instance,
        {
            "study_id": study.id,
            "series_id": series_id,
            "sop_instance_uid": fields.sop_instance_uid,
            "sop_class_uid": fields.sop_class_uid,
            "transfer_syntax_uid": fields.transfer_syntax_uid,
            "revision": revision,
            "study_version": version,
            "instance_number": fields.instance_number,
            "image_laterality": fields.image_laterality,
            "sha256": stored.sha256,
            "size_bytes": stored.size,
            "rel_path": stored.rel_path,
            "calling_aet": calling_aet,
            "received_at": now,
        },
    )
    outcome = RecordOutcome.NEW_REVISION if prior else RecordOutcome.STORED
    return Recorded(outcome, study.id, version, revision, reopened)


@dataclass(frozen=True)
class _RecordStatements:
    """The statements :func:`record_instance` runs, built once per dialect with bind parameters.

    ``benchmarks/ingest.py`` under py-spy: building a statement per instance (ORM-enabled ``insert()`` /
    ``update().values()``, its cache key, the ORM bulk-DML path) was most of the index's CPU per C-STORE.
    A statement object built once keeps its memoised cache key and hits the engine's compiled cache."""

    insert_study: Executable
    locked_study: Executable
    duplicate: Executable
    touch_study: Executable
    touch_series: Executable
    insert_series: Executable
    series: Executable
    prior_revision: Executable
    count_in_study: Executable
    count_in_series: Executable
    insert_instance: Executable


def _insert_ignore_stmt(dialect: str, table: Table, key: str) -> Executable:
    """INSERT ... ON CONFLICT (key) DO NOTHING, with a bind parameter per column named in the call."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    raise NotImplementedError(f"recording instances needs PostgreSQL or SQLite, not {dialect}")


@cache
def _statements(dialect: str) -> _RecordStatements:
    study, series, instance = Study.__table__, Series.__table__, Instance.__table__
    assert isinstance(study, Table) and isinstance(series, Table) and isinstance(instance, Table)
    return _RecordStatements(
        insert_study=_insert_ignore_stmt(dialect, study, "study_uid"),
        locked_study=select(
            study.c.id, study.c.version, study.c.state, study.c.instance_count, study.c.study_description
        )
        .where(study.c.study_uid == bindparam("study_uid"))
        .with_for_update(),
        duplicate=select(instance.c.revision).where(
            instance.c.sop_instance_uid == bindparam("sop"), instance.c.sha256 == bindparam("sha256")
        ),
        touch_study=update(study)
        .where(study.c.id == bindparam("b_id"))
        .values(last_received_at=bindparam("now")),
        touch_series=update(series)
        .where(series.c.study_id == bindparam("b_study_id"), series.c.series_uid == bindparam("b_uid"))
        .values(last_received_at=bindparam("now")),
        insert_series=_insert_ignore_stmt(dialect, series, "series_uid"),
        series=select(series.c.id, series.c.study_id).where(series.c.series_uid == bindparam("uid")),
        prior_revision=select(func.max(instance.c.revision)).where(
            instance.c.sop_instance_uid == bindparam("sop")
        ),
        count_in_study=update(study)
        .where(study.c.id == bindparam("b_id"))
        .values(last_received_at=bindparam("now"), instance_count=study.c.instance_count + 1),
        count_in_series=update(series)
        .where(series.c.id == bindparam("b_id"))
        .values(last_received_at=bindparam("now"), instance_count=series.c.instance_count + 1),
        insert_instance=insert(instance),
    )


@dataclass(frozen=True)
class _StudyRow:
    """The study columns recording an instance reads, under the study's row lock."""

    id: int
    version: int
    state: str
    instance_count: int
    study_description: str | None


def _locked_study_for(
    conn: Connection, sql: _RecordStatements, fields: InstanceFields, now: datetime
) -> _StudyRow:
    """The instance's study (created on its first instance), locked for this transaction."""
    conn.execute(
        sql.insert_study,
        {
            "study_uid": fields.study_uid,
            "version": 1,
            "state": StudyState.RECEIVING,
            "study_description": fields.study_description,
            "instance_count": 0,
            "version_started_at": now,
            "last_received_at": now,
            "state_changed_at": now,
        },
    )
    row = conn.execute(sql.locked_study, {"study_uid": fields.study_uid}).one()
    return _StudyRow(*row)


def _touch_on_resend(
    conn: Connection, sql: _RecordStatements, study: _StudyRow, fields: InstanceFields, now: datetime
) -> None:
    """A resend is an arrival: the sender is still sending this study (e.g. all of it again after the
    node crashed), so its quiet time starts again. A complete study is not reopened by identical data:
    no new version, no second report."""
    if study.state != StudyState.RECEIVING:
        return
    conn.execute(sql.touch_study, {"b_id": study.id, "now": now})
    conn.execute(sql.touch_series, {"b_study_id": study.id, "b_uid": fields.series_uid, "now": now})


def _count_arrival(
    conn: Connection,
    sql: _RecordStatements,
    study: _StudyRow,
    series_id: int,
    fields: InstanceFields,
    now: datetime,
) -> tuple[int, bool]:
    """Count a new instance in its study and series; (study version, whether a new version began)."""
    reopened = study.state != StudyState.RECEIVING
    version = study.version + 1 if reopened else study.version
    changes: dict[str, Any] = {}
    if reopened:  # a late instance after completion: a new study version begins
        changes.update(
            version=version,
            state=StudyState.RECEIVING,
            version_started_at=now,
            state_changed_at=now,
            route_reason=None,
        )
    if study.study_description is None and fields.study_description is not None:
        changes["study_description"] = fields.study_description
    if changes:  # rare: a statement of its own
        table = cast(Table, Study.__table__)
        conn.execute(
            update(table)
            .where(table.c.id == study.id)
            .values(last_received_at=now, instance_count=table.c.instance_count + 1, **changes)
        )
    else:
        conn.execute(sql.count_in_study, {"b_id": study.id, "now": now})
    conn.execute(sql.count_in_series, {"b_id": series_id, "now": now})
    return version, reopened


def _series_for(
    conn: Connection, sql: _RecordStatements, study_id: int, fields: InstanceFields, now: datetime
) -> int:
    """The id of the instance's series, created on its first instance."""
    conn.execute(
        sql.insert_series,
        {
            "study_id": study_id,
            "series_uid": fields.series_uid,
            "modality": fields.modality,
            "sop_class_uid": fields.sop_class_uid,
            "body_part": fields.body_part,
            "series_description": fields.series_description,
            "protocol_name": fields.protocol_name,
            "anatomic_region": [list(c) for c in fields.anatomic_region] or None,
            "laterality": fields.laterality,
            "image_orientation": list(fields.image_orientation) if fields.image_orientation else None,
            "scanning_sequence": fields.scanning_sequence,
            "sequence_name": fields.sequence_name,
            "instance_count": 0,
            "first_received_at": now,
            "last_received_at": now,
        },
    )
    series = conn.execute(sql.series, {"uid": fields.series_uid}).one()
    if series.study_id != study_id:
        raise InstanceRefused(
            Refusal.SERIES_OF_ANOTHER_STUDY, "Series Instance UID already belongs to another study"
        )
    return int(series.id)


# --------------------------------------------------------------------------------------------------
# Completion (the sweeper)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesTimes:
    """When a series received its first and its last instance."""

    series_uid: str
    first_received_at: datetime
    last_received_at: datetime


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


def series_times(session: Session, study: Study) -> list[SeriesTimes]:
    """First and last arrival of each series of the study (the completion policy's clock facts)."""
    rows = session.execute(
        select(Series.series_uid, Series.first_received_at, Series.last_received_at).where(
            Series.study_id == study.id
        )
    ).all()
    return [SeriesTimes(uid, first, last) for uid, first, last in rows]


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


def close_study(session: Session, study: Study, state: StudyState, reason: str, now: datetime) -> None:
    """End a study version without a job (not routed, or discarded by the force action)."""
    study.state = state
    study.state_changed_at = now
    study.route_reason = reason
