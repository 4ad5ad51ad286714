"""run_job end to end on real stored DICOM (SYNTHETIC radiographs) with tiny UNTRAINED models.

The instances are written through the InstanceStore and indexed as the C-STORE handler does; the job's
routes come from the sweeper's own routing (``route_study`` / ``routes_json``). The one destination is
down (a free loopback port with nothing listening), so the first delivery attempt fails and is left
PENDING for the sweeper's retry (``delivery_max_attempts`` 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import delete, func, select, update
from support.peers import synthetic
from support.runtime import isolated_settings, job_row

from orthonode.completion.selection import route_study
from orthonode.completion.sweeper import routes_json, study_facts
from orthonode.dicom.header import read_header
from orthonode.index import jobs as job_rows
from orthonode.index import studies
from orthonode.index.db import transaction
from orthonode.index.models import Delivery, DeliveryState, Job, JobState, Result, Study
from orthonode.index.studies import StoredCopy
from orthonode.inference import pipeline
from orthonode.inference.untrained import write_untrained_models
from orthonode.peers.ports import free_port
from orthonode.runtime import Runtime
from orthonode.worker.jobs import JobOutcome, run_job

TASKS = ("kl_grade",)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_untrained_models(root, arch="vit_test_patch16_dinov3", img_size=64, tasks=TASKS)


@pytest.fixture
def rt(tmp_path: Path, models_dir: Path) -> Iterator[Runtime]:
    settings = isolated_settings(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}],
        delivery_max_attempts=2,
        delivery_timeout_seconds=5,
        job_max_attempts=3,
        job_lease_seconds=600,
    )
    runtime = Runtime(settings)
    runtime.migrate()
    try:
        yield runtime
    finally:
        runtime.close()


def store(rt: Runtime, ds: pydicom.Dataset, now: datetime) -> str:
    """The C-STORE handler's path: bytes to incoming/, header read, committed, indexed; returns rel_path."""
    data = synthetic.dataset_bytes(ds)
    src = rt.store.write_incoming(data)
    header = read_header(src, affected_sop_class=str(ds.SOPClassUID), affected_sop_instance=None)
    digest = hashlib.sha256(data).hexdigest()
    rel = rt.store.relative_path(header.study_uid, header.series_uid, header.sop_instance_uid, digest)
    stored = rt.store.commit(src, rel, digest, len(data))
    with transaction(rt.sessions) as session:
        copy = StoredCopy(stored.rel_path, stored.sha256, stored.size)
        studies.record_instance(
            session, header, copy, calling_aet="MOD", now=now, max_instances_per_study=100
        )
    return rel


def make_job(rt: Runtime) -> tuple[int, dict[str, pydicom.Dataset]]:
    """A complete knee study (left and right DX) with its job; returns the job id and the instances."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    uid = synthetic.new_study_uid()
    instances = {
        "L": synthetic.radiograph(uid, laterality="L", rows=80, cols=64, seed=1, series_number=1),
        "R": synthetic.radiograph(uid, laterality="R", rows=80, cols=64, seed=2, series_number=2),
    }
    for ds in instances.values():
        store(rt, ds, now)
    with transaction(rt.sessions) as session:
        study = session.execute(select(Study)).scalar_one()
        decision = route_study(study_facts(session, study))
        routes = routes_json(decision)
        assert [(r["pipeline"], r["laterality"]) for r in routes] == [("knee_radiograph", "B")]
        job = job_rows.create(
            session,
            study,
            routes=routes,
            anatomy="knee",
            laterality="B",
            reason=decision.reason,
            forced=False,
            now=now,
        )
        return job.id, instances


def results(rt: Runtime, job_id: int) -> list[Result]:
    with transaction(rt.sessions) as session:
        return list(
            session.execute(select(Result).where(Result.job_id == job_id).order_by(Result.id)).scalars()
        )


def deliveries(rt: Runtime, job_id: int) -> list[Delivery]:
    with transaction(rt.sessions) as session:
        return list(session.execute(select(Delivery).where(Delivery.job_id == job_id)).scalars())


def files_on_disk(rt: Runtime, job_id: int) -> dict[str, bytes]:
    directory = rt.settings.data_dir / "results" / str(job_id)
    if not directory.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def reset_to_pending(rt: Runtime, job_id: int) -> None:
    with transaction(rt.sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.PENDING, lease_until=None, finished_at=None, detail=None)
        )


# --------------------------------------------------------------------------------------------- tests


def test_job_on_stored_dicom_reports_and_tries_to_deliver(rt: Runtime) -> None:
    job_id, instances = make_job(rt)
    before = datetime.now(UTC)
    assert run_job(rt, job_id) is JobOutcome.DONE
    job = job_row(rt, job_id)
    assert job.state == JobState.DONE
    assert job.detail is not None and "UNTRAINED" in job.detail
    assert job.detail.startswith("3 objects for 1 destination(s): ")
    assert "Kellgren-Lawrence grade (L): untrained output" in job.detail
    assert "Kellgren-Lawrence grade (R): untrained output" in job.detail
    assert "not reported" not in job.detail
    assert (job.attempts, job.error) == (1, None)

    rows = results(rt, job_id)
    assert [(r.kind, r.task) for r in rows] == [("sr", "report"), ("sc", "kl_grade:L"), ("sc", "kl_grade:R")]
    assert len({r.sop_instance_uid for r in rows}) == 3
    on_disk = files_on_disk(rt, job_id)
    assert sorted(on_disk) == sorted(f"{r.kind}-{r.sop_instance_uid}.dcm" for r in rows)
    study_uid = str(instances["L"].StudyInstanceUID)
    for row in rows:
        assert row.rel_path == f"results/{job_id}/{row.kind}-{row.sop_instance_uid}.dcm"
        ds = pydicom.dcmread(rt.store.absolute(row.rel_path))
        assert ds.SOPInstanceUID == row.sop_instance_uid
        assert ds.SeriesInstanceUID == row.series_uid
        assert ds.StudyInstanceUID == study_uid
        assert ds.PatientID == synthetic.SYNTHETIC_PATIENT_ID
        assert "UNTRAINED" in str(ds.SeriesDescription).upper()
        assert row.summary is not None
        if row.kind == "sc":
            side = row.task.split(":")[1]
            assert [str(i.ReferencedSOPInstanceUID) for i in ds.SourceImageSequence] == [
                str(instances[side].SOPInstanceUID)
            ]
            assert (row.summary["laterality"], row.summary["trained"]) == (side, False)
            assert row.summary["sources"] == [str(instances[side].SOPInstanceUID)]
        else:
            assert ds.Modality == "SR"
            assert [(f["task"], f["laterality"]) for f in row.summary["findings"]] == [
                ("kl_grade", "L"),
                ("kl_grade", "R"),
            ]

    (delivery,) = deliveries(rt, job_id)
    assert (delivery.destination, delivery.state, delivery.attempts) == ("pacs", DeliveryState.PENDING, 1)
    assert delivery.last_error is not None and "association not established" in delivery.last_error
    assert delivery.sent_at is None
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at > before


def test_rerun_of_a_recorded_job_makes_nothing_new(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    assert run_job(rt, job_id) is JobOutcome.DONE
    first = [(r.id, r.kind, r.task, r.sop_instance_uid, r.rel_path) for r in results(rt, job_id)]
    first_files = files_on_disk(rt, job_id)
    (first_delivery,) = deliveries(rt, job_id)

    reset_to_pending(rt, job_id)
    assert run_job(rt, job_id) is JobOutcome.DONE
    job = job_row(rt, job_id)
    assert job.detail == "results already recorded (3 objects); delivering those"
    assert job.attempts == 2
    assert [(r.id, r.kind, r.task, r.sop_instance_uid, r.rel_path) for r in results(rt, job_id)] == first
    assert files_on_disk(rt, job_id) == first_files
    (delivery,) = deliveries(rt, job_id)
    assert delivery.id == first_delivery.id
    # Not due yet (backoff): the re-run does not send again.
    assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 1)


def test_rerun_after_a_crash_before_recording_reuses_the_uids(rt: Runtime) -> None:
    """A worker that died after writing the files but before recording them: the next attempt writes the
    same objects (same SOP Instance UIDs, same bytes) over them."""
    job_id, _ = make_job(rt)
    assert run_job(rt, job_id) is JobOutcome.DONE
    first = [(r.kind, r.task, r.sop_instance_uid, r.series_uid, r.rel_path) for r in results(rt, job_id)]
    first_files = files_on_disk(rt, job_id)
    with transaction(rt.sessions) as session:
        session.execute(delete(Delivery).where(Delivery.job_id == job_id))
        session.execute(delete(Result).where(Result.job_id == job_id))
    reset_to_pending(rt, job_id)

    assert run_job(rt, job_id) is JobOutcome.DONE
    assert job_row(rt, job_id).detail.startswith("3 objects for 1 destination(s)")  # type: ignore[union-attr]
    again = [(r.kind, r.task, r.sop_instance_uid, r.series_uid, r.rel_path) for r in results(rt, job_id)]
    assert again == first
    assert files_on_disk(rt, job_id) == first_files  # same names, byte-identical, nothing extra
    (delivery,) = deliveries(rt, job_id)
    assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 1)
    with transaction(rt.sessions) as session:
        assert session.execute(select(func.count()).select_from(Result)).scalar_one() == 3


def test_attempt_without_the_lease_records_nothing(rt: Runtime) -> None:
    job_id, _ = make_job(rt)
    with transaction(rt.sessions) as session:
        held = job_rows.claim(
            session, job_id, holder="other:1", now=datetime.now(UTC), lease=timedelta(minutes=10)
        )
        assert held is not None
    assert run_job(rt, job_id) is JobOutcome.SKIPPED
    job = job_row(rt, job_id)
    assert (job.state, job.holder, job.attempts, job.detail) == (JobState.RUNNING, "other:1", 1, None)
    assert results(rt, job_id) == []
    assert deliveries(rt, job_id) == []
    assert files_on_disk(rt, job_id) == {}


def test_attempt_whose_lease_passed_on_mid_run_records_nothing(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease expires while the pipeline runs and another worker claims the job: this (stale) attempt
    may write its files but records no result and no delivery, and leaves the job to the other worker."""
    job_id, _ = make_job(rt)
    real = pipeline.run_pipeline

    def slow_pipeline(*args: object, **kwargs: object) -> pipeline.PipelineOutput:
        now = datetime.now(UTC)
        with transaction(rt.sessions) as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(lease_until=now - timedelta(seconds=1))
            )
        with transaction(rt.sessions) as session:
            assert job_rows.claim(session, job_id, holder="other:2", now=now, lease=timedelta(minutes=10))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_pipeline", slow_pipeline)
    assert run_job(rt, job_id) is JobOutcome.SKIPPED
    job = job_row(rt, job_id)
    assert (job.state, job.holder, job.attempts) == (JobState.RUNNING, "other:2", 2)
    assert (job.detail, job.error, job.finished_at) == (None, None, None)
    assert results(rt, job_id) == []
    assert deliveries(rt, job_id) == []


def test_a_job_of_not_graded_outcomes_alone_still_reports_them(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lateral film and a film without a knee (issue 14): one SR that says so, no key image."""
    from orthonode.encode import codes as oc
    from orthonode.encode.sr import read_outcomes
    from orthonode.inference.findings import ModelIdentity, NotGraded, SourceImage

    job_id, instances = make_job(rt)
    task = oc.task_codes("kl_grade")
    model = ModelIdentity(name="OrthoFoundation knee localiser", version="loc 1")

    def outcome(ds: pydicom.Dataset, reason: str, code: oc.Code) -> NotGraded:
        source = SourceImage(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))
        side = str(ds.ImageLaterality)
        return NotGraded(
            "kl_grade", task.concept.meaning, task.finding_site, side, reason, code, source, model
        )

    outcomes = [
        outcome(instances["L"], "not graded: lateral view", oc.NOT_GRADED_LATERAL),
        outcome(instances["R"], "no knee joint found", oc.NO_KNEE_JOINT),
    ]

    def not_graded_only(*args: object, **kwargs: object) -> pipeline.PipelineOutput:
        return pipeline.PipelineOutput(not_graded=list(outcomes))

    monkeypatch.setattr(pipeline, "run_pipeline", not_graded_only)
    assert run_job(rt, job_id) is JobOutcome.DONE
    job = job_row(rt, job_id)
    assert job.detail is not None and job.detail.startswith("1 objects for 1 destination(s): ")
    assert "Kellgren-Lawrence grade (L): not graded: lateral view" in job.detail
    assert "Kellgren-Lawrence grade (R): no knee joint found" in job.detail
    (row,) = results(rt, job_id)
    assert (row.kind, row.task) == ("sr", "report")
    assert row.summary == {"findings": [], "not_graded": [o.summary() for o in outcomes]}
    read = read_outcomes(pydicom.dcmread(rt.store.absolute(row.rel_path)))
    assert read.findings == []
    assert [(o.laterality, o.code[0]) for o in read.not_graded] == [("L", "NGLATERAL"), ("R", "NOKNEEJOINT")]
    assert len(deliveries(rt, job_id)) == 1
