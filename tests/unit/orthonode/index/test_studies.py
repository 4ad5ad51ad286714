"""Tests of orthonode.index.studies on SQLite and on PostgreSQL (the ``index`` fixture, conftest.py):
recording received instances (new, duplicate, new revision, late after completion, refused) and the
sweeper's reads and closes. All UIDs are synthetic.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from support.index_rows import (
    EXPLICIT,
    MR,
    T0,
    Index,
    at,
    complete,
    count,
    get_study,
    header,
    record,
    stored,
)

from orthonode.completion.policy import SeriesTiming
from orthonode.completion.sweeper import study_timing
from orthonode.dicom.contexts import StoreStatus
from orthonode.dicom.handlers import rejected
from orthonode.index import studies
from orthonode.index.db import transaction
from orthonode.index.models import Instance, Series, Study, StudyState
from orthonode.index.studies import InstanceRefused, Recorded, RecordOutcome, Refusal, SeriesTimes


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
        row = session.get(Study, study.id)
        assert row is not None
        assert studies.series_times(session, row) == [
            SeriesTimes("2.25.100.1", at(0), at(5)),
            SeriesTimes("2.25.100.2", at(9), at(9)),
        ]
        timing = study_timing(session, row)  # the completion policy's input, built by the sweeper
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
        studies.close_study(session, study, state, "no pipeline for HAND", at(60))
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
    with pytest.raises(InstanceRefused) as info:
        record(index, header(sop="2.25.100.1.3"), max_instances=2)
    assert info.value.refusal is Refusal.STUDY_FULL
    assert "2 instances" in info.value.detail
    answer = rejected(info.value)  # the C-STORE handler's answer
    assert answer.status == StoreStatus.STUDY_TOO_LARGE == 0xA702
    assert answer.quarantine is False
    assert "2 instances" in answer.reason
    assert count(index, Instance) == 2
    # A resend of an instance already held is still a duplicate, not a refusal.
    assert record(index, header(sop="2.25.100.1.2"), max_instances=2).outcome is RecordOutcome.DUPLICATE
    # Other studies are not affected.
    other = header(study="2.25.200", series="2.25.200.1", sop="2.25.200.1.1")
    assert record(index, other, max_instances=2).outcome is RecordOutcome.STORED


def test_series_of_another_study_is_refused(index: Index) -> None:
    record(index, header())
    intruder = header(study="2.25.200", series="2.25.100.1", sop="2.25.200.1.1")
    with pytest.raises(InstanceRefused) as info:
        record(index, intruder)
    assert info.value.refusal is Refusal.SERIES_OF_ANOTHER_STUDY
    answer = rejected(info.value)  # the C-STORE handler's answer
    assert answer.status == StoreStatus.IDENTIFIER_MISMATCH == 0xC214
    assert answer.quarantine is True
    assert answer.reason == "Series Instance UID already belongs to another study"
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


def test_studies_to_check_and_lock(index: Index) -> None:
    record(index, header(study="2.25.1", series="2.25.1.1", sop="2.25.1.1.1"), now=at(0))
    record(index, header(study="2.25.2", series="2.25.2.1", sop="2.25.2.1.1"), now=at(50))
    complete(index, "2.25.1", now=at(60))
    record(index, header(study="2.25.3", series="2.25.3.1", sop="2.25.3.1.1"), now=at(10))
    with transaction(index.sessions) as session:
        quiet = studies.studies_to_check(session, quiet_before=at(30), started_before=at(-100), limit=10)
        forced = studies.studies_to_check(session, quiet_before=at(-100), started_before=at(55), limit=10)
        everything = studies.studies_to_check(
            session, quiet_before=at(100), started_before=at(-100), limit=10
        )
        uid = {s.id: s.study_uid for s in session.execute(select(Study)).scalars()}
        assert [uid[i] for i in quiet] == ["2.25.3"]  # the complete study is never a candidate
        assert [uid[i] for i in forced] == ["2.25.3", "2.25.2"]
        assert [uid[i] for i in everything] == ["2.25.3", "2.25.2"]  # oldest last instance first
        locked = studies.lock_study(session, quiet[0])
        assert locked is not None and locked.study_uid == "2.25.3"
        assert studies.lock_study(session, 999_999) is None


def test_image_lateralities_and_series(index: Index) -> None:
    record(index, header(sop="2.25.100.1.1", image_laterality="R"))
    record(index, header(sop="2.25.100.1.2", image_laterality="L"))
    record(index, header(sop="2.25.100.1.3", image_laterality="R"))
    record(index, header(sop="2.25.100.1.4", image_laterality=None))
    with transaction(index.sessions) as session:
        study = session.execute(select(Study)).scalar_one()
        series = studies.study_series(session, study)
        assert [s.series_uid for s in series] == ["2.25.100.1"]
        assert studies.image_lateralities(session, series[0].id) == ("L", "R")
