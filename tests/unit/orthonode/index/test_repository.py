"""Tests of orthonode.index.repository (and db.open_index / transaction) on SQLite and on PostgreSQL.

Each test starts from an empty index: a new SQLite file under tmp_path, or emptied tables (identities
reset) in a PostgreSQL database created for this module and dropped afterwards (skipped outside CI when
PostgreSQL is not reachable). All UIDs are synthetic.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from support.index import open_index

from orthonode.completion.policy import SeriesTiming
from orthonode.dicom.contexts import StoreStatus
from orthonode.dicom.header import InstanceHeader
from orthonode.dicom.storage import StoredFile
from orthonode.errors import RejectedInstance
from orthonode.index import operator
from orthonode.index import repository as repo
from orthonode.index.db import transaction
from orthonode.index.models import Base, Instance, Job, JobState, Series, Study, StudyState
from orthonode.index.repository import JobInput, Recorded, RecordOutcome

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


@pytest.fixture(scope="module")
def pg_index() -> Iterator[Index]:
    """A new PostgreSQL database for this module, opened with open_index (migrated to head); skips (fails
    when CI is set) without PostgreSQL, through tests/support/services.py.

    Each test then starts from empty tables with reset identities (see ``index``): CREATE DATABASE is
    fsync-bound here (0.15-0.4 s), so a database per test would double this file's run time. The
    migrations themselves are tested on truly empty databases in test_migrations.py.
    """
    from support.services import fresh_postgres_database, postgres_url

    with fresh_postgres_database(postgres_url()) as url:
        engine, sessions = open_index(url)
        try:
            yield Index(engine, sessions, "postgresql")
        finally:
            engine.dispose()


def empty_tables(engine: Engine) -> None:
    """DELETE every row and restart the id sequences (TRUNCATE is ten times slower here)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    """An empty index per test: a new SQLite file, or emptied tables in this module's PostgreSQL database."""
    if request.param == "postgresql":
        pg: Index = request.getfixturevalue("pg_index")
        empty_tables(pg.engine)
        yield pg
        return
    engine, sessions = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        yield Index(engine, sessions, "sqlite")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------- helpers


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


def stored(h: InstanceHeader, content: bytes = b"v1") -> StoredFile:
    digest = hashlib.sha256(h.sop_instance_uid.encode() + content).hexdigest()
    rel = f"studies/00/{h.study_uid}/{h.series_uid}/{h.sop_instance_uid}.{digest[:16]}.dcm"
    return StoredFile(rel, digest, 100 + len(content), already_present=False)


def record(
    ix: Index,
    h: InstanceHeader,
    content: bytes = b"v1",
    now: datetime = T0,
    max_instances: int = 100,
    calling_aet: str | None = "MODALITY",
) -> Recorded:
    with transaction(ix.sessions) as session:
        return repo.record_instance(
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
        job = repo.create_job(
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


def claim(ix: Index, job_id: int, now: datetime, worker: str = "w1") -> Job | None:
    with transaction(ix.sessions) as session:
        return repo.claim_job(session, job_id, worker=worker, now=now, lease=LEASE)


def fail(
    ix: Index,
    job_id: int,
    now: datetime,
    retry_after: timedelta | None,
    max_attempts: int = 3,
    worker: str = "w1",
) -> str:
    with transaction(ix.sessions) as session:
        return repo.fail_job(
            session,
            job_id,
            worker=worker,
            error="peer down",
            now=now,
            retry_after=retry_after,
            max_attempts=max_attempts,
        )


def take(
    ix: Index, now: datetime, retry_after: timedelta = timedelta(seconds=10), limit: int = 100
) -> list[int]:
    with transaction(ix.sessions) as session:
        return repo.take_jobs_to_enqueue(session, now=now, retry_after=retry_after, limit=limit)


# --------------------------------------------------------------------------------------------- open_index


def test_transaction_rolls_back_on_error(index: Index) -> None:
    with pytest.raises(RuntimeError), transaction(index.sessions) as session:
        repo.record_instance(
            session, header(), stored(header()), calling_aet=None, now=T0, max_instances_per_study=10
        )
        raise RuntimeError("boom")
    assert count(index, Study) == 0
    assert count(index, Instance) == 0


def test_naive_datetimes_are_refused(index: Index) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        record(index, header(), now=datetime(2024, 1, 2, 10, 0, 0))


# ------------------------------------------------------------------------------------------- record_instance


def test_record_new_instance(index: Index) -> None:
    h = header(image_laterality="R", instance_number=7)
    result = record(index, h)
    assert result == Recorded(RecordOutcome.STORED, result.study_id, 1, 1, reopened=False)
    with transaction(index.sessions) as session:
        study = session.get(Study, result.study_id)
        assert study is not None
        assert (study.study_uid, study.version, study.state, study.instance_count) == (
            "2.25.100",
            1,
            StudyState.RECEIVING,
            1,
        )
        assert study.study_description == "MRI KNEE"
        assert (study.version_started_at, study.last_received_at, study.state_changed_at) == (T0, T0, T0)
        assert study.version_started_at.tzinfo is not None
        series = session.execute(select(Series)).scalar_one()
        assert series.study_id == study.id
        assert series.series_uid == "2.25.100.1"
        assert (series.modality, series.sop_class_uid, series.body_part) == ("MR", MR, "KNEE")
        assert (series.series_description, series.protocol_name) == ("SAG PD FS", "knee_pd")
        assert series.anatomic_region == [["72696002", "SCT", "Knee"]]
        assert series.laterality == "R"
        assert series.image_orientation == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        assert (series.scanning_sequence, series.sequence_name) == ("SE", "*tse2d1")
        assert (series.instance_count, series.first_received_at, series.last_received_at) == (1, T0, T0)
        instance = session.execute(select(Instance)).scalar_one()
        s = stored(h)
        assert (instance.sop_instance_uid, instance.sop_class_uid, instance.transfer_syntax_uid) == (
            "2.25.100.1.1",
            MR,
            EXPLICIT,
        )
        assert (instance.revision, instance.study_version, instance.instance_number) == (1, 1, 7)
        assert (instance.sha256, instance.size_bytes, instance.rel_path) == (s.sha256, s.size, s.rel_path)
        assert (instance.image_laterality, instance.calling_aet, instance.received_at) == (
            "R",
            "MODALITY",
            T0,
        )
        assert (instance.study_id, instance.series_id) == (study.id, series.id)


def test_record_empty_optional_fields(index: Index) -> None:
    h = header(anatomic_region=(), image_orientation=None, study_description=None, laterality=None)
    record(index, h, calling_aet=None)
    with transaction(index.sessions) as session:
        series = session.execute(select(Series)).scalar_one()
        assert (series.anatomic_region, series.image_orientation, series.laterality) == (None, None, None)
        assert session.execute(select(Study.study_description)).scalar_one() is None
        assert session.execute(select(Instance.calling_aet)).scalar_one() is None


def test_study_description_filled_by_a_later_instance(index: Index) -> None:
    record(index, header(study_description=None))
    record(index, header(sop="2.25.100.1.2", study_description="KNEE LEFT"), now=at(1))
    record(index, header(sop="2.25.100.1.3", study_description="OTHER"), now=at(2))
    assert get_study(index).study_description == "KNEE LEFT"


def test_record_more_instances_updates_counts_and_times(index: Index) -> None:
    record(index, header(), now=at(0))
    record(index, header(sop="2.25.100.1.2"), now=at(5))
    record(index, header(series="2.25.100.2", sop="2.25.100.2.1"), now=at(9))
    study = get_study(index)
    assert (study.instance_count, study.version_started_at, study.last_received_at) == (3, at(0), at(9))
    with transaction(index.sessions) as session:
        rows = session.execute(
            select(
                Series.series_uid, Series.instance_count, Series.first_received_at, Series.last_received_at
            ).order_by(Series.id)
        ).all()
        assert [tuple(r) for r in rows] == [("2.25.100.1", 2, at(0), at(5)), ("2.25.100.2", 1, at(9), at(9))]
        timing = repo.study_timing(session, session.get(Study, study.id))  # type: ignore[arg-type]
        assert timing.series == (
            SeriesTiming("2.25.100.1", at(0), at(5)),
            SeriesTiming("2.25.100.2", at(9), at(9)),
        )
        assert (timing.study_uid, timing.version, timing.last_received_at) == ("2.25.100", 1, at(9))


def test_record_duplicate_same_bytes(index: Index) -> None:
    first = record(index, header(), now=at(0))
    again = record(index, header(), now=at(30))
    assert again == Recorded(RecordOutcome.DUPLICATE, first.study_id, 1, 1, reopened=False)
    assert count(index, Instance) == 1
    study = get_study(index)
    # a resend is an arrival: the sender is still sending this study, its quiet time starts again
    assert (study.instance_count, study.last_received_at) == (1, at(30))
    with transaction(index.sessions) as session:
        assert session.execute(select(Series.last_received_at)).scalar_one() == at(30)


def test_record_new_revision_different_bytes(index: Index) -> None:
    first = record(index, header(), b"v1", now=at(0))
    second = record(index, header(), b"v2", now=at(5))
    third = record(index, header(), b"v3", now=at(6))
    assert second == Recorded(RecordOutcome.NEW_REVISION, first.study_id, 1, 2, reopened=False)
    assert third.revision == 3 and third.outcome is RecordOutcome.NEW_REVISION
    again = record(index, header(), b"v2", now=at(7))
    assert again == Recorded(RecordOutcome.DUPLICATE, first.study_id, 1, 2, reopened=False)
    with transaction(index.sessions) as session:
        revisions = session.execute(select(Instance.revision, Instance.sha256).order_by(Instance.id)).all()
    assert [tuple(r) for r in revisions] == [
        (1, stored(header(), b"v1").sha256),
        (2, stored(header(), b"v2").sha256),
        (3, stored(header(), b"v3").sha256),
    ]


def test_late_instance_after_complete_reopens(index: Index) -> None:
    first = record(index, header(), now=at(0))
    complete(index, now=at(100))
    assert get_study(index).state == StudyState.COMPLETE

    duplicate = record(index, header(), now=at(150))  # the same bytes again: nothing new, no new version
    assert duplicate == Recorded(RecordOutcome.DUPLICATE, first.study_id, 1, 1, reopened=False)
    assert get_study(index).state == StudyState.COMPLETE
    assert get_study(index).last_received_at == at(0)  # a complete study is not touched by identical data

    late = record(index, header(sop="2.25.100.1.2"), now=at(200))
    assert late == Recorded(RecordOutcome.STORED, first.study_id, 2, 1, reopened=True)
    study = get_study(index)
    assert (study.version, study.state, study.route_reason) == (2, StudyState.RECEIVING, None)
    assert (study.version_started_at, study.state_changed_at, study.last_received_at) == (at(200),) * 3
    assert study.instance_count == 2

    more = record(index, header(sop="2.25.100.1.3"), now=at(210))
    assert (more.study_version, more.reopened) == (2, False)
    with transaction(index.sessions) as session:
        versions = session.execute(select(Instance.study_version).order_by(Instance.id)).scalars().all()
    assert versions == [1, 2, 2]


@pytest.mark.parametrize("state", [StudyState.NOT_ROUTED, StudyState.DISCARDED])
def test_late_instance_after_closed_study_reopens(index: Index, state: StudyState) -> None:
    record(index, header(), now=at(0))
    with transaction(index.sessions) as session:
        study = session.execute(select(Study)).scalar_one()
        repo.close_study(session, study, state, "no pipeline for HAND", at(60))
    closed = get_study(index)
    assert (closed.state, closed.route_reason, closed.state_changed_at) == (
        state,
        "no pipeline for HAND",
        at(60),
    )
    late = record(index, header(sop="2.25.100.1.9"), now=at(90))
    assert (late.reopened, late.study_version) == (True, 2)
    assert get_study(index).state == StudyState.RECEIVING


def test_max_instances_per_study(index: Index) -> None:
    record(index, header(sop="2.25.100.1.1"), max_instances=2)
    record(index, header(sop="2.25.100.1.2"), max_instances=2)
    with pytest.raises(RejectedInstance) as info:
        record(index, header(sop="2.25.100.1.3"), max_instances=2)
    assert info.value.status == StoreStatus.STUDY_TOO_LARGE == 0xA702
    assert info.value.quarantine is False
    assert "2 instances" in info.value.reason
    assert count(index, Instance) == 2
    # A resend of an instance already held is still a duplicate, not a refusal.
    assert record(index, header(sop="2.25.100.1.2"), max_instances=2).outcome is RecordOutcome.DUPLICATE
    # Other studies are not affected.
    other = header(study="2.25.200", series="2.25.200.1", sop="2.25.200.1.1")
    assert record(index, other, max_instances=2).outcome is RecordOutcome.STORED


def test_series_of_another_study_is_refused(index: Index) -> None:
    record(index, header())
    intruder = header(study="2.25.200", series="2.25.100.1", sop="2.25.200.1.1")
    with pytest.raises(RejectedInstance) as info:
        record(index, intruder)
    assert info.value.status == StoreStatus.IDENTIFIER_MISMATCH == 0xC214
    assert info.value.quarantine is True
    assert info.value.reason == "Series Instance UID already belongs to another study"
    assert count(index, Instance) == 1
    assert count(index, Study) == 1  # the transaction rolled back the new study row too


def test_same_instance_in_parallel_transactions(index: Index) -> None:
    """Several associations storing into one new study at once: one study row, every instance once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def store(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            for j in range(3):
                record(index, header(sop=f"2.25.100.1.{i}.{j}"), now=at(i + j))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert count(index, Study) == 1
    assert count(index, Series) == 1
    assert count(index, Instance) == 12
    assert get_study(index).instance_count == 12


# --------------------------------------------------------------------------------------------- jobs


def test_create_job(index: Index) -> None:
    record(index, header(), now=at(0))
    job_id = complete(index, now=at(100))
    job = get_job(index, job_id)
    assert (job.state, job.study_version, job.routes, job.forced, job.attempts) == (
        JobState.PENDING,
        1,
        ROUTES,
        False,
        0,
    )
    assert (job.created_at, job.updated_at) == (at(100), at(100))
    assert (job.enqueued_at, job.run_after, job.started_at, job.lease_until, job.worker) == (None,) * 5
    study = get_study(index)
    assert (study.state, study.anatomy, study.laterality, study.route_reason, study.state_changed_at) == (
        StudyState.COMPLETE,
        "knee",
        "R",
        "knee MRI",
        at(100),
    )


def test_one_job_per_study_version(index: Index) -> None:
    record(index, header(), now=at(0))
    complete(index, now=at(100))
    with pytest.raises(IntegrityError):
        complete(index, now=at(101))
    assert count(index, Job) == 1
    record(index, header(sop="2.25.100.1.2"), now=at(200))  # reopens: version 2
    second = complete(index, now=at(300))
    assert get_job(index, second).study_version == 2
    assert count(index, Job) == 2


def test_take_jobs_to_enqueue(index: Index) -> None:
    a = new_job(index, "2.25.1", at(0))
    b = new_job(index, "2.25.2", at(0))
    assert take(index, at(10)) == [a, b]
    assert get_job(index, a).enqueued_at == at(10)
    assert take(index, at(15)) == []  # stamped 5 s ago: a concurrent sweeper skips them
    assert take(index, at(19.999)) == []
    assert take(index, at(20)) == [a, b]  # not handed over within retry_after: taken again
    with transaction(index.sessions) as session:
        repo.mark_enqueued(session, a, at(21))
    assert get_job(index, a).state == JobState.QUEUED
    assert take(index, at(100)) == [b]  # QUEUED jobs are the broker's


def test_queued_jobs_nobody_claimed_are_handed_over_again(index: Index) -> None:
    """A broker that lost its messages loses no job: QUEUED past ``requeue_after`` is taken again."""
    job_id = new_job(index, "2.25.1", at(0))
    assert take(index, at(1)) == [job_id]
    with transaction(index.sessions) as session:
        repo.mark_enqueued(session, job_id, at(1))

    def requeue(now: datetime) -> list[int]:
        with transaction(index.sessions) as session:
            return repo.take_jobs_to_enqueue(
                session, now=now, retry_after=timedelta(seconds=10), requeue_after=timedelta(seconds=900)
            )

    assert requeue(at(900)) == []
    assert requeue(at(901)) == [job_id]
    assert get_job(index, job_id).state == JobState.QUEUED  # still queued, stamped again
    assert requeue(at(1000)) == []
    assert claim(index, job_id, at(1001)) is not None  # the duplicate message's claim then does nothing
    assert claim(index, job_id, at(1002)) is None
    assert requeue(at(5000)) == []  # RUNNING is the lease's business, not the hand-over's


def test_take_jobs_limit_and_order(index: Index) -> None:
    ids = [new_job(index, f"2.25.{i}", at(0)) for i in range(1, 5)]
    assert take(index, at(1), limit=3) == ids[:3]
    assert take(index, at(2), limit=3) == ids[3:]


def test_take_jobs_respects_run_after(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    assert claim(index, job_id, at(1)) is not None
    assert fail(index, job_id, at(2), retry_after=timedelta(seconds=60)) == JobState.PENDING
    assert take(index, at(3)) == []
    assert take(index, at(61.9)) == []
    assert take(index, at(62)) == [job_id]


def test_claim_job_is_exclusive(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    job = claim(index, job_id, at(10), worker="host-a:1")
    assert job is not None
    assert (job.id, job.state, job.attempts, job.worker) == (job_id, JobState.RUNNING, 1, "host-a:1")
    assert (job.started_at, job.lease_until, job.updated_at) == (at(10), at(10) + LEASE, at(10))
    assert claim(index, job_id, at(11), worker="host-b:2") is None
    assert claim(index, job_id, at(10) + LEASE, worker="host-b:2") is None  # lease still live at its end
    stored_job = get_job(index, job_id)
    assert (stored_job.worker, stored_job.attempts) == ("host-a:1", 1)


def test_claim_job_after_lease_expiry(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    assert claim(index, job_id, at(10), worker="host-a:1") is not None
    later = at(10) + LEASE + timedelta(seconds=1)
    job = claim(index, job_id, later, worker="host-b:2")
    assert job is not None
    assert (job.worker, job.attempts, job.started_at, job.lease_until) == (
        "host-b:2",
        2,
        later,
        later + LEASE,
    )


def test_claim_queued_job_and_clears_error(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    fail(index, job_id, at(2), retry_after=timedelta(seconds=1))
    with transaction(index.sessions) as session:
        repo.mark_enqueued(session, job_id, at(5))
    job = claim(index, job_id, at(6))
    assert job is not None
    assert (job.state, job.attempts, job.error) == (JobState.RUNNING, 2, None)


def test_claim_done_failed_or_missing_job(index: Index) -> None:
    done = new_job(index, "2.25.1", at(0))
    claim(index, done, at(1))
    with transaction(index.sessions) as session:
        repo.finish_job(session, done, worker="w1", detail="ok", now=at(2))
    failed = new_job(index, "2.25.2", at(0))
    claim(index, failed, at(1))
    fail(index, failed, at(2), retry_after=None)
    assert claim(index, done, at(3)) is None
    assert claim(index, failed, at(3)) is None
    assert claim(index, 999_999, at(3)) is None


def test_claim_truncates_worker_name(index: Index) -> None:
    job = claim(index, new_job(index, now=at(0)), at(1), worker="w" * 300)
    assert job is not None and job.worker == "w" * 128


def test_concurrent_claims_one_winner(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    barrier = threading.Barrier(4)
    results: list[Job | None] = []
    errors: list[BaseException] = []

    def try_claim(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(claim(index, job_id, at(10), worker=f"w{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=try_claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    winners = [r for r in results if r is not None]
    assert len(results) == 4 and len(winners) == 1
    assert get_job(index, job_id).attempts == 1


def test_finish_job(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        assert repo.finish_job(session, job_id, worker="w1", detail="received and ready", now=at(5))
    job = get_job(index, job_id)
    assert (job.state, job.detail, job.finished_at, job.lease_until, job.updated_at) == (
        JobState.DONE,
        "received and ready",
        at(5),
        None,
        at(5),
    )


def test_finish_job_only_when_running(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    with transaction(index.sessions) as session:
        assert not repo.finish_job(session, job_id, worker="w1", detail="too early", now=at(5))
    job = get_job(index, job_id)
    assert (job.state, job.detail) == (JobState.PENDING, None)


def test_fail_job_retry(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        state = repo.fail_job(
            session,
            job_id,
            worker="w1",
            error="x" * 5000,
            now=at(2),
            retry_after=timedelta(seconds=40),
            max_attempts=3,
        )
    assert state == JobState.PENDING
    job = get_job(index, job_id)
    assert (job.state, job.run_after, job.enqueued_at, job.lease_until, job.updated_at) == (
        JobState.PENDING,
        at(42),
        None,
        None,
        at(2),
    )
    assert job.error == "x" * 4000
    assert job.finished_at is None


def test_fail_job_after_max_attempts(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    for attempt in (1, 2):
        assert claim(index, job_id, at(attempt * 100)) is not None
        assert fail(index, job_id, at(attempt * 100 + 1), timedelta(seconds=1), max_attempts=3) == "pending"
    job = claim(index, job_id, at(300))
    assert job is not None and job.attempts == 3
    assert fail(index, job_id, at(301), timedelta(seconds=1), max_attempts=3) == "failed"
    job = get_job(index, job_id)
    assert (job.state, job.finished_at, job.error, job.attempts) == (JobState.FAILED, at(301), "peer down", 3)


def test_fail_job_permanent(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    assert fail(index, job_id, at(2), retry_after=None, max_attempts=10) == "failed"
    assert get_job(index, job_id).state == JobState.FAILED


def test_fail_missing_job(index: Index) -> None:
    assert fail(index, 424242, at(0), retry_after=None) == "missing"


def test_fail_job_does_not_reopen_a_done_job(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1), worker="slow")
    later = at(1) + LEASE + timedelta(seconds=1)
    claim(index, job_id, later, worker="fast")
    with transaction(index.sessions) as session:
        assert not repo.finish_job(session, job_id, worker="slow", detail="late", now=later)
        assert repo.finish_job(session, job_id, worker="fast", detail="done by fast", now=later)
    state = fail(
        index, job_id, later + timedelta(seconds=2), retry_after=timedelta(seconds=10), worker="slow"
    )
    assert state == JobState.DONE
    job = get_job(index, job_id)
    assert (job.state, job.detail, job.error) == (JobState.DONE, "done by fast", None)


def test_a_stale_attempt_cannot_fail_a_job_another_worker_holds(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1), worker="slow")
    later = at(1) + LEASE + timedelta(seconds=1)
    claim(index, job_id, later, worker="fast")
    assert fail(index, job_id, later, retry_after=None, worker="slow") == JobState.RUNNING
    assert get_job(index, job_id).worker == "fast"


def test_expire_leases(index: Index) -> None:
    live = new_job(index, "2.25.1", at(0))
    lost = new_job(index, "2.25.2", at(0))
    exhausted = new_job(index, "2.25.3", at(0))
    claim(index, live, at(100), worker="w-live")
    claim(index, lost, at(10), worker="w-lost")
    with transaction(index.sessions) as session:  # a job on its last attempt
        session.get(Job, exhausted).attempts = 2  # type: ignore[union-attr]
    claim(index, exhausted, at(10), worker="w-x")
    now = at(10) + LEASE + timedelta(seconds=1)
    with transaction(index.sessions) as session:
        expired = repo.expire_leases(session, now=now, max_attempts=3)
    assert sorted(expired) == [lost, exhausted]
    job = get_job(index, lost)
    assert (job.state, job.lease_until, job.enqueued_at, job.updated_at) == (
        JobState.PENDING,
        None,
        None,
        now,
    )
    assert job.error == "worker w-lost lost its lease (attempt 1)"
    job = get_job(index, exhausted)
    assert (job.state, job.finished_at) == (JobState.FAILED, now)
    assert job.error == "worker w-x lost its lease (attempt 3)"
    assert get_job(index, live).state == JobState.RUNNING
    with transaction(index.sessions) as session:
        assert repo.expire_leases(session, now=now, max_attempts=3) == []


def test_retry_job(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        assert operator.retry_job(session, job_id, at(2)) is False  # RUNNING: not the operator's to reset
    fail(index, job_id, at(3), retry_after=None)
    with transaction(index.sessions) as session:
        assert operator.retry_job(session, job_id, at(4)) is True
    job = get_job(index, job_id)
    assert (job.state, job.attempts, job.enqueued_at, job.run_after, job.finished_at, job.updated_at) == (
        JobState.PENDING,
        0,
        None,
        None,
        None,
        at(4),
    )
    assert take(index, at(5)) == [job_id]
    with transaction(index.sessions) as session:
        assert operator.retry_job(session, job_id, at(6)) is False
        assert operator.retry_job(session, 999_999, at(6)) is False


# --------------------------------------------------------------------------------------------- job_inputs


def test_job_inputs_newest_revision_and_version(index: Index) -> None:
    s1, s2 = "2.25.100.1", "2.25.100.2"
    record(index, header(series=s1, sop="2.25.100.1.2", instance_number=2), now=at(0))
    record(index, header(series=s1, sop="2.25.100.1.1", instance_number=1), now=at(1))
    record(index, header(series=s2, sop="2.25.100.2.1", instance_number=1, sop_class_uid=CR), now=at(2))
    revised = header(series=s1, sop="2.25.100.1.1", instance_number=1)
    record(index, revised, b"v2", now=at(3))  # revision 2 in version 1
    v1_job = complete(index, now=at(100))

    record(index, revised, b"v3", now=at(200))  # revision 3 arrives late: version 2
    late = header(series=s2, sop="2.25.100.2.2", instance_number=2, sop_class_uid=CR)
    record(index, late, now=at(201))
    v2_job = complete(index, now=at(300))

    def inputs(job_id: int) -> list[JobInput]:
        with transaction(index.sessions) as session:
            return repo.job_inputs(session, get_job(index, job_id))

    assert inputs(v1_job) == [
        JobInput(s1, "2.25.100.1.1", MR, stored(revised, b"v2").rel_path, 1),
        JobInput(s1, "2.25.100.1.2", MR, stored(header(series=s1, sop="2.25.100.1.2")).rel_path, 2),
        JobInput(s2, "2.25.100.2.1", CR, stored(header(series=s2, sop="2.25.100.2.1")).rel_path, 1),
    ]
    assert inputs(v2_job) == [
        JobInput(s1, "2.25.100.1.1", MR, stored(revised, b"v3").rel_path, 1),
        JobInput(s1, "2.25.100.1.2", MR, stored(header(series=s1, sop="2.25.100.1.2")).rel_path, 2),
        JobInput(s2, "2.25.100.2.1", CR, stored(header(series=s2, sop="2.25.100.2.1")).rel_path, 1),
        JobInput(s2, "2.25.100.2.2", CR, stored(late).rel_path, 2),
    ]


def test_job_inputs_only_its_own_study(index: Index) -> None:
    a = new_job(index, "2.25.1", at(0))
    new_job(index, "2.25.2", at(0))
    with transaction(index.sessions) as session:
        rows = repo.job_inputs(session, get_job(index, a))
    assert [r.sop_instance_uid for r in rows] == ["2.25.1.1.1"]


# ------------------------------------------------------------------------------------------- sweeper queries


def test_studies_to_check_and_lock(index: Index) -> None:
    record(index, header(study="2.25.1", series="2.25.1.1", sop="2.25.1.1.1"), now=at(0))
    record(index, header(study="2.25.2", series="2.25.2.1", sop="2.25.2.1.1"), now=at(50))
    complete(index, "2.25.1", now=at(60))
    record(index, header(study="2.25.3", series="2.25.3.1", sop="2.25.3.1.1"), now=at(10))
    with transaction(index.sessions) as session:
        quiet = repo.studies_to_check(session, quiet_before=at(30), started_before=at(-100), limit=10)
        forced = repo.studies_to_check(session, quiet_before=at(-100), started_before=at(55), limit=10)
        everything = repo.studies_to_check(session, quiet_before=at(100), started_before=at(-100), limit=10)
        uid = {s.id: s.study_uid for s in session.execute(select(Study)).scalars()}
        assert [uid[i] for i in quiet] == ["2.25.3"]  # the complete study is never a candidate
        assert [uid[i] for i in forced] == ["2.25.3", "2.25.2"]
        assert [uid[i] for i in everything] == ["2.25.3", "2.25.2"]  # oldest last instance first
        locked = repo.lock_study(session, quiet[0])
        assert locked is not None and locked.study_uid == "2.25.3"
        assert repo.lock_study(session, 999_999) is None


def test_image_lateralities_and_series(index: Index) -> None:
    record(index, header(sop="2.25.100.1.1", image_laterality="R"))
    record(index, header(sop="2.25.100.1.2", image_laterality="L"))
    record(index, header(sop="2.25.100.1.3", image_laterality="R"))
    record(index, header(sop="2.25.100.1.4", image_laterality=None))
    with transaction(index.sessions) as session:
        study = session.execute(select(Study)).scalar_one()
        series = repo.study_series(session, study)
        assert [s.series_uid for s in series] == ["2.25.100.1"]
        assert repo.image_lateralities(session, series[0].id) == ("L", "R")


# --------------------------------------------------------------------------------------------- status


def test_status_snapshot(index: Index) -> None:
    record(index, header(study="2.25.1", series="2.25.1.1", sop="2.25.1.1.1"), now=at(0))
    record(index, header(study="2.25.1", series="2.25.1.2", sop="2.25.1.2.1"), now=at(1))
    job_id = complete(index, "2.25.1", now=at(60))
    record(index, header(study="2.25.2", series="2.25.2.1", sop="2.25.2.1.1"), now=at(70))
    with transaction(index.sessions) as session:
        snap = repo.status_snapshot(session)
    assert set(snap) == {"studies", "jobs", "deliveries"}
    assert snap["studies"] == [
        {
            "study_uid": "2.25.2",
            "version": 1,
            "instances": 1,
            "series": 1,
            "state": StudyState.RECEIVING,
            "anatomy": None,
            "laterality": None,
            "reason": None,
            "last_received_at": at(70).isoformat(),
        },
        {
            "study_uid": "2.25.1",
            "version": 1,
            "instances": 2,
            "series": 2,
            "state": StudyState.COMPLETE,
            "anatomy": "knee",
            "laterality": "R",
            "reason": "knee MRI",
            "last_received_at": at(1).isoformat(),
        },
    ]
    assert snap["jobs"] == [
        {
            "id": job_id,
            "study_uid": "2.25.1",
            "study_version": 1,
            "state": JobState.PENDING,
            "attempts": 0,
            "results": 0,
            "detail": None,
            "error": None,
            "updated_at": at(60).isoformat(),
        }
    ]
    assert snap["deliveries"] == []


def test_status_snapshot_limit_and_empty(index: Index) -> None:
    with transaction(index.sessions) as session:
        assert repo.status_snapshot(session) == {"studies": [], "jobs": [], "deliveries": []}
    for i in range(3):
        new_job(index, f"2.25.{i + 1}", at(i))
    with transaction(index.sessions) as session:
        snap = repo.status_snapshot(session, limit=2)
    assert [s["study_uid"] for s in snap["studies"]] == ["2.25.3", "2.25.2"]
    assert len(snap["jobs"]) == 2 and snap["jobs"][0]["study_uid"] == "2.25.3"
