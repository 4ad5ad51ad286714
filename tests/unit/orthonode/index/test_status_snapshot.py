"""Tests of orthonode.index.reads.status_snapshot (``orthonode status``) on SQLite and PostgreSQL."""

from __future__ import annotations

from support.index_rows import Index, at, complete, header, new_job, record

from orthonode.index import reads
from orthonode.index.db import transaction
from orthonode.index.models import JobState, StudyState


def test_status_snapshot(index: Index) -> None:
    record(index, header(study="2.25.1", series="2.25.1.1", sop="2.25.1.1.1"), now=at(0))
    record(index, header(study="2.25.1", series="2.25.1.2", sop="2.25.1.2.1"), now=at(1))
    job_id = complete(index, "2.25.1", now=at(60))
    record(index, header(study="2.25.2", series="2.25.2.1", sop="2.25.2.1.1"), now=at(70))
    with transaction(index.sessions) as session:
        snap = reads.status_snapshot(session)
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
        assert reads.status_snapshot(session) == {"studies": [], "jobs": [], "deliveries": []}
    for i in range(3):
        new_job(index, f"2.25.{i + 1}", at(i))
    with transaction(index.sessions) as session:
        snap = reads.status_snapshot(session, limit=2)
    assert [s["study_uid"] for s in snap["studies"]] == ["2.25.3", "2.25.2"]
    assert len(snap["jobs"]) == 2 and snap["jobs"][0]["study_uid"] == "2.25.3"
