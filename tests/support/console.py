"""An index with a little of everything for the console's tests: a reported study whose delivery failed,
a failed job, a study still arriving, a study with no pipeline; real DICOM files on disk (the source
image carries a patient name so that tests can check it stays hidden)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction
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
from orthonode.runtime import Runtime
from support.peers.synthetic import dataset_bytes, new_study_uid, radiograph

TOKEN = "s3cret-operator-token"


@dataclass(frozen=True)
class Fixture:
    rt: Runtime
    reported_uid: str
    reported_job: int
    failed_uid: str
    failed_job: int
    receiving_uid: str
    not_routed_uid: str
    key_image_id: int


def _study(session, uid: str, state: str, at: datetime, **extra) -> Study:  # type: ignore[no-untyped-def]
    study = Study(
        study_uid=uid, state=state, version_started_at=at, last_received_at=at, state_changed_at=at, **extra
    )
    session.add(study)
    session.flush()
    return study


def _instance(session, study: Study, at: datetime, rel_path: str, size: int = 1000) -> None:  # type: ignore[no-untyped-def]
    series = Series(
        study_id=study.id,
        series_uid=new_study_uid(),
        modality="DX",
        body_part="KNEE",
        first_received_at=at,
        last_received_at=at,
        instance_count=1,
    )
    session.add(series)
    session.flush()
    session.add(
        Instance(
            study_id=study.id,
            series_id=series.id,
            sop_instance_uid=new_study_uid(),
            sop_class_uid="1.2.3",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            study_version=1,
            sha256="0" * 64,
            size_bytes=size,
            rel_path=rel_path,
            received_at=at,
        )
    )
    study.instance_count += 1


def populate(rt: Runtime, now: datetime) -> Fixture:
    uids = [new_study_uid() for _ in range(4)]
    source = radiograph(uids[0], laterality="R", seed=1)
    source.PatientName = "Doe^Jane"
    source.PatientID = "PID-0042"
    rel_source = f"studies/source-{uids[0][-8:]}.dcm"
    path = rt.store.absolute(rel_source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dataset_bytes(source))
    with transaction(rt.sessions) as session:
        reported = _study(
            session,
            uids[0],
            StudyState.COMPLETE,
            now,
            anatomy="knee",
            laterality="R",
            route_reason="knee radiograph (DX, BodyPartExamined KNEE)",
        )
        _instance(session, reported, now, rel_source)
        failed = _study(session, uids[1], StudyState.COMPLETE, now - timedelta(minutes=5), anatomy="knee")
        _instance(session, failed, now - timedelta(minutes=5), "studies/missing.dcm")
        receiving = _study(session, uids[2], StudyState.RECEIVING, now - timedelta(minutes=1))
        _instance(session, receiving, now - timedelta(minutes=1), "studies/r.dcm")
        _study(session, uids[3], StudyState.NOT_ROUTED, now - timedelta(days=2), route_reason="no pipeline")
        job = Job(
            study_id=reported.id,
            study_version=1,
            routes=[{"pipeline": "knee_radiograph"}],
            created_at=now,
            updated_at=now,
        )
        bad = Job(
            study_id=failed.id,
            study_version=1,
            routes=[],
            created_at=now,
            updated_at=now,
            state=JobState.FAILED,
            attempts=5,
            error="PermanentJobError: 1 stored instance file(s) missing",
        )
        session.add_all([job, bad])
        session.flush()
        job_id, bad_id = job.id, bad.id
    with transaction(rt.sessions) as session:
        assert job_rows.claim(session, job_id, holder="hostA:4242:abcd", now=now, lease=timedelta(minutes=5))
    key = radiograph(uids[0], laterality="R", seed=2)
    rel = rt.store.write_result(job_id, str(key.SOPInstanceUID), "sc", dataset_bytes(key))
    record = job_rows.ResultRecord(
        "kl_grade:R",
        "sc",
        str(key.SOPInstanceUID),
        str(key.SeriesInstanceUID),
        rel,
        {"finding": "KL 2", "probability": 0.71},
    )
    with transaction(rt.sessions) as session:
        assert job_rows.record_results(
            session, job_id, holder="hostA:4242:abcd", results=[record], destinations=["pacs"], now=now
        )
        assert job_rows.finish(session, job_id, holder="hostA:4242:abcd", now=now, detail="2 objects")
        delivery = session.query(Delivery).filter(Delivery.job_id == job_id).one()
        delivery.state, delivery.attempts = DeliveryState.FAILED, 12
        delivery.last_error = "association rejected by PACS"
        key_id = session.execute(select(Result.id).where(Result.job_id == job_id)).scalar_one()
    return Fixture(rt, uids[0], job_id, uids[1], bad_id, uids[2], uids[3], int(key_id))
