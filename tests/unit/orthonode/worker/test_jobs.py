"""Tests of orthonode.worker.jobs.run_job called directly (no Celery) on a SQLite index in tmp_path."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from support.runtime import isolated_settings, job_row

from orthonode.completion.selection import Route, SeriesRole
from orthonode.dicom.header import InstanceHeader
from orthonode.errors import TransientError
from orthonode.index import jobs as job_rows
from orthonode.index import operator, studies
from orthonode.index.db import transaction
from orthonode.index.models import Job, JobState, Study
from orthonode.index.studies import StoredCopy
from orthonode.runtime import Runtime
from orthonode.tasks.pipelines import Anatomy, ModalityKind
from orthonode.worker import jobs
from orthonode.worker.jobs import JobOutcome, run_job

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "2.25.700"
ROUTES = [
    Route(
        "knee_mri", Anatomy.KNEE, ModalityKind.MRI, "R",
        (SeriesRole("2.25.700.1", None, None, False, "R"), SeriesRole("2.25.700.2", None, None, False, "R")),
    ).as_json()
]  # fmt: skip


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = isolated_settings(
        data_dir=tmp_path / "data", models_dir=tmp_path / "models", job_max_attempts=3, job_lease_seconds=600
    )
    runtime = Runtime(settings)
    runtime.migrate()
    try:
        yield runtime
    finally:
        runtime.close()


def header(series: str, sop: str, number: int) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid=MR,
        sop_instance_uid=sop,
        study_uid=STUDY,
        series_uid=series,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="MR",
        body_part="KNEE",
        study_description="MRI KNEE",
        series_description=None,
        protocol_name=None,
        anatomic_region=(),
        laterality="R",
        image_laterality=None,
        image_orientation=None,
        scanning_sequence=None,
        sequence_name=None,
        instance_number=number,
    )


def store_instance(rt: Runtime, h: InstanceHeader, now: datetime) -> str:
    """Write a file through the InstanceStore and index it, as the C-STORE handler does; returns rel_path."""
    data = b"SYNTHETIC " + h.sop_instance_uid.encode()
    src = rt.store.write_incoming(data)
    digest = hashlib.sha256(data).hexdigest()
    rel = rt.store.relative_path(h.study_uid, h.series_uid, h.sop_instance_uid, digest)
    stored = rt.store.commit(src, rel, digest, len(data))
    with transaction(rt.sessions) as session:
        copy = StoredCopy(stored.rel_path, stored.sha256, stored.size)
        studies.record_instance(session, h, copy, calling_aet="MOD", now=now, max_instances_per_study=100)
    return rel


def make_job(rt: Runtime) -> tuple[int, list[str]]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    paths = [
        store_instance(rt, header("2.25.700.1", "2.25.700.1.1", 1), now),
        store_instance(rt, header("2.25.700.1", "2.25.700.1.2", 2), now),
        store_instance(rt, header("2.25.700.2", "2.25.700.2.1", 1), now),
    ]
    with transaction(rt.sessions) as session:
        study = session.execute(select(Study)).scalar_one()
        job = job_rows.create(
            session,
            study,
            routes=ROUTES,
            anatomy="knee",
            laterality="R",
            reason="test",
            forced=False,
            now=now,
        )
        return job.id, paths


# --------------------------------------------------------------------------------------------- run_job


def test_malformed_stored_routes_fail_the_job_permanently(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    with transaction(rt.sessions) as session:
        session.get(Job, job_id).routes = [{"pipeline": "knee_mri"}]  # type: ignore[union-attr]
    assert run_job(rt, job_id) is JobOutcome.FAILED
    job = job_row(rt, job_id)
    assert job.state == JobState.FAILED and "stored routes are malformed" in (job.error or "")
    assert job.attempts == 1  # not retried: it cannot succeed


def test_run_job_done(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    before = datetime.now(UTC)
    assert run_job(rt, job_id) is JobOutcome.DONE
    job = job_row(rt, job_id)
    assert job.state == JobState.DONE
    # No model installed: the job is done and says why nothing was reported.
    assert job.detail == f"no report: no encoder in {rt.settings.models_dir}/encoder (see README 'Models')"
    assert (job.attempts, job.lease_until, job.error) == (1, None, None)
    assert job.holder is not None and job.holder.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert job.started_at is not None and job.finished_at is not None
    assert before <= job.started_at <= job.finished_at <= datetime.now(UTC)


def test_duplicate_delivery_is_skipped(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    assert run_job(rt, job_id) is JobOutcome.DONE
    finished = job_row(rt, job_id)
    assert run_job(rt, job_id) is JobOutcome.SKIPPED
    again = job_row(rt, job_id)
    assert (again.state, again.attempts, again.finished_at, again.detail) == (
        JobState.DONE,
        1,
        finished.finished_at,
        finished.detail,
    )


def test_job_held_by_another_worker_is_skipped(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    with transaction(rt.sessions) as session:
        held = job_rows.claim(
            session, job_id, holder="other:1", now=datetime.now(UTC), lease=timedelta(minutes=10)
        )
        assert held is not None
    assert run_job(rt, job_id) is JobOutcome.SKIPPED
    job = job_row(rt, job_id)
    assert (job.state, job.holder, job.attempts) == (JobState.RUNNING, "other:1", 1)


def test_job_with_expired_lease_runs_again(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    with transaction(rt.sessions) as session:
        job_rows.claim(
            session,
            job_id,
            holder="dead:1",
            now=datetime.now(UTC) - timedelta(hours=1),
            lease=timedelta(seconds=1),
        )
    assert run_job(rt, job_id) is JobOutcome.DONE
    assert job_row(rt, job_id).attempts == 2


def test_unknown_job_is_skipped(rt: Runtime) -> None:
    make_job(rt)
    assert run_job(rt, 987_654) is JobOutcome.SKIPPED


def test_missing_file_fails_permanently(rt: Runtime) -> None:
    job_id, paths = make_job(rt)
    rt.store.absolute(paths[1]).unlink()
    assert run_job(rt, job_id) is JobOutcome.FAILED
    job = job_row(rt, job_id)
    assert job.state == JobState.FAILED
    assert job.error == "PermanentJobError: 1 stored instance file(s) missing, e.g. 2.25.700.1.2"
    assert (job.attempts, job.next_attempt_at, job.lease_until) == (1, None, None)
    assert job.finished_at is not None
    # A permanent failure is not retried by a second delivery either.
    assert run_job(rt, job_id) is JobOutcome.SKIPPED


def test_transient_error_is_retried_with_backoff(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id, _ = make_job(rt)

    def broken(_rt: Runtime, _job_id: int, _holder: str) -> str:
        raise TransientError("PACS not reachable")

    monkeypatch.setattr(jobs, "_work", broken)
    before = datetime.now(UTC)
    assert run_job(rt, job_id) is JobOutcome.RETRY
    job = job_row(rt, job_id)
    assert (job.state, job.error, job.attempts, job.enqueued_at) == (
        JobState.PENDING,
        "PACS not reachable",
        1,
        None,
    )
    assert job.next_attempt_at is not None
    delay = job.next_attempt_at - before
    assert timedelta(seconds=5) <= delay <= timedelta(seconds=10) + (datetime.now(UTC) - before)

    # Attempts 2 and 3 (job_max_attempts = 3): the last transient failure is final.
    assert run_job(rt, job_id) is JobOutcome.RETRY
    assert run_job(rt, job_id) is JobOutcome.FAILED
    job = job_row(rt, job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 3)


def test_unexpected_error_fails_without_retry(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id, _ = make_job(rt)

    def broken(_rt: Runtime, _job_id: int, _holder: str) -> str:
        raise KeyError("routes")

    monkeypatch.setattr(jobs, "_work", broken)
    assert run_job(rt, job_id) is JobOutcome.FAILED
    job = job_row(rt, job_id)
    assert (job.state, job.error, job.attempts) == (JobState.FAILED, "KeyError: 'routes'", 1)


def test_retry_after_permanent_failure(rt: Runtime) -> None:
    """The operator restores the file and resets the job (`orthonode retry`): it then runs."""
    job_id, paths = make_job(rt)
    path = rt.store.absolute(paths[0])
    content = path.read_bytes()
    path.unlink()
    assert run_job(rt, job_id) is JobOutcome.FAILED
    path.write_bytes(content)
    with transaction(rt.sessions) as session:
        assert operator.retry_job(session, job_id, datetime.now(UTC)) is True
    assert run_job(rt, job_id) is JobOutcome.DONE
    assert job_row(rt, job_id).attempts == 1
