"""orthonode.send.delivery and its index state: claims, retries with backoff, the terminal FAILED state,
the operator's retry, and real C-STORE to dcmtk's storescp as the destination (down, then back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import update
from support.peers.dcmtk import StoreSCP
from support.peers.synthetic import dataset_bytes, new_study_uid, radiograph
from support.runtime import isolated_settings
from support.services import require_binary

from orthonode.completion.sweeper import Sweeper
from orthonode.index import deliveries, operator
from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction
from orthonode.index.leases import Release, Released
from orthonode.index.models import Delivery, DeliveryState, Job, JobState, Study, StudyState
from orthonode.peers.ports import free_port
from orthonode.runtime import Runtime
from orthonode.send import delivery

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def rt(tmp_path: Path, port: int) -> Iterator[Runtime]:
    settings = isolated_settings(
        data_dir=tmp_path / "data",
        destinations=[{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}],
        delivery_max_attempts=3,
        delivery_backoff_seconds=5,
        delivery_timeout_seconds=5,
        delivery_lease_seconds=60,
    )
    runtime = Runtime(settings)
    runtime.migrate()
    try:
        yield runtime
    finally:
        runtime.close()


def make_job_with_results(rt: Runtime, count: int = 2) -> tuple[int, list[str]]:
    """A study, a RUNNING job, ``count`` real DICOM result files and their recorded deliveries."""
    uid = new_study_uid()
    with transaction(rt.sessions) as session:
        study = Study(
            study_uid=uid,
            state=StudyState.COMPLETE,
            version_started_at=NOW,
            last_received_at=NOW,
            state_changed_at=NOW,
        )
        session.add(study)
        session.flush()
        job = Job(study_id=study.id, study_version=1, routes=[], created_at=NOW, updated_at=NOW)
        session.add(job)
        session.flush()
        job_id = job.id
    with transaction(rt.sessions) as session:
        assert job_rows.claim(session, job_id, holder="w1", now=NOW, lease=timedelta(minutes=5)) is not None
    records, sops = [], []
    for i in range(count):
        ds = radiograph(uid, laterality="L", seed=i)
        sop = str(ds.SOPInstanceUID)
        rel = rt.store.write_result(job_id, sop, "sc", dataset_bytes(ds))
        records.append(job_rows.ResultRecord(f"task{i}:L", "sc", sop, str(ds.SeriesInstanceUID), rel, None))
        sops.append(sop)
    with transaction(rt.sessions) as session:
        assert job_rows.record_results(
            session, job_id, holder="w1", results=records, destinations=["pacs"], now=NOW
        )
    return job_id, sops


def delivery_row(rt: Runtime, job_id: int) -> Delivery:
    with transaction(rt.sessions) as session:
        (row,) = session.query(Delivery).filter(Delivery.job_id == job_id).all()
        session.expunge(row)
        return row


def make_due(rt: Runtime, job_id: int) -> None:
    with transaction(rt.sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.job_id == job_id)
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


# ------------------------------------------------------------------------------------------ index state


def test_record_results_is_for_the_holder_only_and_idempotent(rt: Runtime) -> None:
    job_id, sops = make_job_with_results(rt)
    with transaction(rt.sessions) as session:
        assert not job_rows.record_results(
            session, job_id, holder="stale", results=[], destinations=["x"], now=NOW
        )
        again = [job_rows.ResultRecord("task0:L", "sc", sops[0], "2.25.1", "results/x", None)]
        assert job_rows.record_results(
            session, job_id, holder="w1", results=again, destinations=["pacs"], now=NOW
        )
    with transaction(rt.sessions) as session:
        assert [r.sop_instance_uid for r in job_rows.results(session, job_id)] == sops
        assert len(session.query(Delivery).filter(Delivery.job_id == job_id).all()) == 1


def test_claim_is_exclusive_and_a_stale_holder_cannot_finish(rt: Runtime) -> None:
    job_id, _ = make_job_with_results(rt)
    d = delivery_row(rt, job_id)
    lease = timedelta(seconds=60)
    with transaction(rt.sessions) as session:
        assert deliveries.claim(session, d.id, holder="a", now=NOW, lease=lease) is not None
    with transaction(rt.sessions) as session:
        assert (
            deliveries.claim(session, d.id, holder="b", now=NOW + timedelta(seconds=10), lease=lease) is None
        )
        assert deliveries.due(session, now=NOW + timedelta(seconds=10)) == []
        # the lease ran out: due again, and b takes it over
        assert deliveries.due(session, now=NOW + timedelta(seconds=61)) == [(d.id, job_id)]
        assert deliveries.claim(session, d.id, holder="b", now=NOW + timedelta(seconds=61), lease=lease)
    with transaction(rt.sessions) as session:
        assert deliveries.finish(session, d.id, holder="a", now=NOW) is False
        assert deliveries.finish(session, d.id, holder="b", now=NOW) is True
    row = delivery_row(rt, job_id)
    assert (row.state, row.attempts, row.holder, row.lease_until) == (DeliveryState.SENT, 2, "b", None)


def test_failures_back_off_then_fail_and_retry_resets(rt: Runtime) -> None:
    job_id, _ = make_job_with_results(rt)
    d = delivery_row(rt, job_id)
    now = NOW
    states = []
    for attempt in range(1, 4):
        with transaction(rt.sessions) as session:
            assert deliveries.claim(session, d.id, holder=f"h{attempt}", now=now, lease=timedelta(60))
            states.append(
                deliveries.fail(
                    session,
                    d.id,
                    holder=f"h{attempt}",
                    error=f"refused {attempt}",
                    now=now,
                    retry_after=timedelta(seconds=30),
                    max_attempts=3,
                )
            )
        row = delivery_row(rt, job_id)
        if attempt < 3:
            assert row.next_attempt_at == now + timedelta(seconds=30)
            with transaction(rt.sessions) as session:  # not due before its time
                assert deliveries.due(session, now=now + timedelta(seconds=29)) == []
        now += timedelta(seconds=31)
    assert states == [
        Released(Release.RETRY, DeliveryState.PENDING),
        Released(Release.RETRY, DeliveryState.PENDING),
        Released(Release.FAILED, DeliveryState.FAILED),
    ]
    assert delivery_row(rt, job_id).last_error == "refused 3"
    with transaction(rt.sessions) as session:
        assert deliveries.due(session, now=now + timedelta(days=1)) == []
        assert operator.retry_deliveries(session, job_id, now) == 1
        assert operator.retry_deliveries(session, job_id, now) == 0  # nothing FAILED any more
    row = delivery_row(rt, job_id)
    assert (row.state, row.attempts, row.next_attempt_at) == (DeliveryState.PENDING, 0, None)


# ------------------------------------------------------------------------------------ real C-STORE sends


def test_destination_down_then_back_delivers_the_same_objects(rt: Runtime, tmp_path: Path, port: int) -> None:
    require_binary("storescp", "dcmtk")
    job_id, sops = make_job_with_results(rt)
    d = delivery_row(rt, job_id)

    down = delivery.attempt_delivery(rt, d.id)
    assert down.state == DeliveryState.PENDING
    assert down.error is not None and "not sent" in down.error
    row = delivery_row(rt, job_id)
    assert row.attempts == 1 and row.next_attempt_at is not None and row.next_attempt_at > datetime.now(UTC)
    assert delivery.deliver_job(rt, job_id) == []  # not due yet: nothing is attempted

    make_due(rt, job_id)
    with StoreSCP(tmp_path / "pacs", port=port) as pacs:
        back = delivery.attempt_delivery(rt, d.id)
        assert (back.state, back.error) == (DeliveryState.SENT, None)
        received = pacs.wait_for_files(2, timeout=20)
    assert sorted(str(dcmread(f).SOPInstanceUID) for f in received) == sorted(sops)
    row = delivery_row(rt, job_id)
    assert (row.state, row.attempts, row.last_error) == (DeliveryState.SENT, 2, None)
    assert delivery.deliver_job(rt, job_id) == []  # sent: never sent twice


def test_attempts_exhausted_is_failed_until_an_operator_retries(
    rt: Runtime, tmp_path: Path, port: int
) -> None:
    require_binary("storescp", "dcmtk")
    job_id, _ = make_job_with_results(rt, count=1)
    d = delivery_row(rt, job_id)
    outcomes = []
    for _ in range(3):
        outcomes.append(delivery.attempt_delivery(rt, d.id).state)
        make_due(rt, job_id)
    assert outcomes == [DeliveryState.PENDING, DeliveryState.PENDING, DeliveryState.FAILED]
    assert delivery.deliver_job(rt, job_id) == []
    with transaction(rt.sessions) as session:
        assert operator.retry_deliveries(session, job_id, datetime.now(UTC)) == 1
    with StoreSCP(tmp_path / "pacs", port=port) as pacs:
        (outcome,) = delivery.deliver_job(rt, job_id)
        assert outcome.state == DeliveryState.SENT
        pacs.wait_for_files(1, timeout=20)


def test_missing_result_file_is_an_error_not_a_silent_success(rt: Runtime) -> None:
    job_id, _ = make_job_with_results(rt, count=1)
    with transaction(rt.sessions) as session:
        (result,) = job_rows.results(session, job_id)
    rt.store.absolute(result.rel_path).unlink()
    outcome = delivery.attempt_delivery(rt, delivery_row(rt, job_id).id)
    assert outcome.state == DeliveryState.PENDING
    assert outcome.error is not None and "missing" in outcome.error


def test_sweeper_hands_due_deliveries_over_once_per_window(rt: Runtime) -> None:
    job_id, _ = make_job_with_results(rt)
    with transaction(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(state=JobState.DONE))
    handed: list[int] = []
    clock = [datetime.now(UTC)]
    sweeper = Sweeper(rt, lambda _: None, clock=lambda: clock[0], enqueue_delivery=handed.append)
    assert sweeper.hand_over_deliveries() == 1
    assert sweeper.hand_over_deliveries() == 0  # queued a moment ago: not again
    clock[0] += timedelta(seconds=rt.settings.enqueue_retry_seconds + 1)
    assert sweeper.hand_over_deliveries() == 1
    assert handed == [job_id, job_id]


def test_a_send_slower_than_its_lease_keeps_the_delivery_and_is_not_sent_twice(
    tmp_path: Path, port: int
) -> None:
    """A destination that hangs (storescp stopped with SIGSTOP) holds a send past its lease: the attempt
    renews the lease while it sends, so a second attempt (another worker) cannot take the delivery and
    send the same objects again; once the destination answers, each object arrives once."""
    require_binary("storescp", "dcmtk")
    lease = 3.0  # renewed every second while the send waits
    settings = isolated_settings(
        data_dir=tmp_path / "data",
        destinations=[{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}],
        delivery_timeout_seconds=60,
        delivery_lease_seconds=lease,
    )
    runtime = Runtime(settings)
    runtime.migrate()
    try:
        job_id, sops = make_job_with_results(runtime)
        d = delivery_row(runtime, job_id)
        with StoreSCP(tmp_path / "pacs", port=port) as pacs:
            pacs.pause()
            first: list[delivery.DeliveryOutcome] = []
            sender = threading.Thread(target=lambda: first.append(delivery.attempt_delivery(runtime, d.id)))
            try:
                sender.start()
                for _ in range(200):  # bounded: the first attempt has claimed the delivery
                    claimed = delivery_row(runtime, job_id)
                    if claimed.state == DeliveryState.SENDING:
                        break
                    time.sleep(0.05)
                assert claimed.state == DeliveryState.SENDING and claimed.lease_until is not None
                first_lease_end = claimed.lease_until.replace(tzinfo=UTC)
                for _ in range(200):  # bounded: wait until the first lease has run out
                    if datetime.now(UTC) > first_lease_end + timedelta(seconds=1):
                        break
                    time.sleep(0.05)
                second = delivery.attempt_delivery(runtime, d.id)
                assert second.state == "skipped"  # still held: its holder is alive and sending
            finally:
                pacs.resume()
                sender.join(90)
            assert [o.state for o in first] == [DeliveryState.SENT]
            received = pacs.wait_for_files(len(sops), timeout=20)
        assert sorted(str(dcmread(f).SOPInstanceUID) for f in received) == sorted(sops)  # each once
        assert delivery_row(runtime, job_id).attempts == 1
    finally:
        runtime.close()
