"""Tests of orthonode.index.jobs on SQLite and on PostgreSQL (the ``index`` fixture, conftest.py):
creating a study version's job, handing jobs to the broker, the job's lease (claim, finish, fail,
expiry), the operator's retry, and the job's inputs. All UIDs are synthetic.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from support.index_rows import (
    CR,
    LEASE,
    MR,
    ROUTES,
    Index,
    at,
    claim,
    complete,
    count,
    fail,
    get_job,
    get_study,
    header,
    new_job,
    record,
    stored,
    take,
)

from orthonode.index import jobs, operator
from orthonode.index.db import transaction
from orthonode.index.jobs import JobInput
from orthonode.index.leases import Release, Released
from orthonode.index.models import Job, JobState, StudyState


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
    assert (job.enqueued_at, job.next_attempt_at, job.started_at, job.lease_until, job.holder) == (None,) * 5
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
        jobs.mark_enqueued(session, a, at(21))
    assert get_job(index, a).state == JobState.QUEUED
    assert take(index, at(100)) == [b]  # QUEUED jobs are the broker's


def test_queued_jobs_nobody_claimed_are_handed_over_again(index: Index) -> None:
    """A broker that lost its messages loses no job: QUEUED past ``requeue_after`` is taken again."""
    job_id = new_job(index, "2.25.1", at(0))
    assert take(index, at(1)) == [job_id]
    with transaction(index.sessions) as session:
        jobs.mark_enqueued(session, job_id, at(1))

    def requeue(now: datetime) -> list[int]:
        with transaction(index.sessions) as session:
            return jobs.take_to_enqueue(
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


def test_take_jobs_respects_next_attempt_at(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    assert claim(index, job_id, at(1)) is not None
    assert fail(index, job_id, at(2), retry_after=timedelta(seconds=60)) == Released(
        Release.RETRY, JobState.PENDING
    )
    assert take(index, at(3)) == []
    assert take(index, at(61.9)) == []
    assert take(index, at(62)) == [job_id]


def test_claim_job_is_exclusive(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    job = claim(index, job_id, at(10), holder="host-a:1")
    assert job is not None
    assert (job.id, job.state, job.attempts, job.holder) == (job_id, JobState.RUNNING, 1, "host-a:1")
    assert (job.started_at, job.lease_until, job.updated_at) == (at(10), at(10) + LEASE, at(10))
    assert claim(index, job_id, at(11), holder="host-b:2") is None
    assert claim(index, job_id, at(10) + LEASE, holder="host-b:2") is None  # lease still live at its end
    stored_job = get_job(index, job_id)
    assert (stored_job.holder, stored_job.attempts) == ("host-a:1", 1)


def test_claim_job_after_lease_expiry(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    assert claim(index, job_id, at(10), holder="host-a:1") is not None
    later = at(10) + LEASE + timedelta(seconds=1)
    job = claim(index, job_id, later, holder="host-b:2")
    assert job is not None
    assert (job.holder, job.attempts, job.started_at, job.lease_until) == (
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
        jobs.mark_enqueued(session, job_id, at(5))
    job = claim(index, job_id, at(6))
    assert job is not None
    assert (job.state, job.attempts, job.error) == (JobState.RUNNING, 2, None)


def test_claim_done_failed_or_missing_job(index: Index) -> None:
    done = new_job(index, "2.25.1", at(0))
    claim(index, done, at(1))
    with transaction(index.sessions) as session:
        jobs.finish(session, done, holder="w1", detail="ok", now=at(2))
    failed = new_job(index, "2.25.2", at(0))
    claim(index, failed, at(1))
    fail(index, failed, at(2), retry_after=None)
    assert claim(index, done, at(3)) is None
    assert claim(index, failed, at(3)) is None
    assert claim(index, 999_999, at(3)) is None


def test_claim_truncates_holder_name(index: Index) -> None:
    job = claim(index, new_job(index, now=at(0)), at(1), holder="w" * 300)
    assert job is not None and job.holder == "w" * 128


def test_concurrent_claims_one_winner(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    barrier = threading.Barrier(4)
    results: list[Job | None] = []
    errors: list[BaseException] = []

    def try_claim(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(claim(index, job_id, at(10), holder=f"w{i}"))
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
        assert jobs.finish(session, job_id, holder="w1", detail="received and ready", now=at(5))
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
        assert not jobs.finish(session, job_id, holder="w1", detail="too early", now=at(5))
    job = get_job(index, job_id)
    assert (job.state, job.detail) == (JobState.PENDING, None)


def test_fail_job_retry(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        released = jobs.fail(
            session,
            job_id,
            holder="w1",
            error="x" * 5000,
            now=at(2),
            retry_after=timedelta(seconds=40),
            max_attempts=3,
        )
    assert released == Released(Release.RETRY, JobState.PENDING)
    job = get_job(index, job_id)
    assert (job.state, job.next_attempt_at, job.enqueued_at, job.lease_until, job.updated_at) == (
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
        released = fail(index, job_id, at(attempt * 100 + 1), timedelta(seconds=1), max_attempts=3)
        assert released == Released(Release.RETRY, JobState.PENDING)
    job = claim(index, job_id, at(300))
    assert job is not None and job.attempts == 3
    released = fail(index, job_id, at(301), timedelta(seconds=1), max_attempts=3)
    assert released == Released(Release.FAILED, JobState.FAILED)
    job = get_job(index, job_id)
    assert (job.state, job.finished_at, job.error, job.attempts) == (JobState.FAILED, at(301), "peer down", 3)


def test_fail_job_permanent(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    assert fail(index, job_id, at(2), retry_after=None, max_attempts=10) == Released(
        Release.FAILED, JobState.FAILED
    )
    assert get_job(index, job_id).state == JobState.FAILED


def test_fail_missing_job(index: Index) -> None:
    assert fail(index, 424242, at(0), retry_after=None) == Released(Release.MISSING, None)


def test_fail_job_does_not_reopen_a_done_job(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1), holder="slow")
    later = at(1) + LEASE + timedelta(seconds=1)
    claim(index, job_id, later, holder="fast")
    with transaction(index.sessions) as session:
        assert not jobs.finish(session, job_id, holder="slow", detail="late", now=later)
        assert jobs.finish(session, job_id, holder="fast", detail="done by fast", now=later)
    released = fail(
        index, job_id, later + timedelta(seconds=2), retry_after=timedelta(seconds=10), holder="slow"
    )
    assert released == Released(Release.NOT_HELD, JobState.DONE)
    job = get_job(index, job_id)
    assert (job.state, job.detail, job.error) == (JobState.DONE, "done by fast", None)


def test_a_stale_attempt_cannot_fail_a_job_another_worker_holds(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1), holder="slow")
    later = at(1) + LEASE + timedelta(seconds=1)
    claim(index, job_id, later, holder="fast")
    assert fail(index, job_id, later, retry_after=None, holder="slow") == Released(
        Release.NOT_HELD, JobState.RUNNING
    )
    assert get_job(index, job_id).holder == "fast"


def test_expire_leases(index: Index) -> None:
    live = new_job(index, "2.25.1", at(0))
    lost = new_job(index, "2.25.2", at(0))
    exhausted = new_job(index, "2.25.3", at(0))
    claim(index, live, at(100), holder="w-live")
    claim(index, lost, at(10), holder="w-lost")
    with transaction(index.sessions) as session:  # a job on its last attempt
        session.get(Job, exhausted).attempts = 2  # type: ignore[union-attr]
    claim(index, exhausted, at(10), holder="w-x")
    now = at(10) + LEASE + timedelta(seconds=1)
    with transaction(index.sessions) as session:
        expired = jobs.expire_leases(session, now=now, max_attempts=3)
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
        assert jobs.expire_leases(session, now=now, max_attempts=3) == []


def test_retry_job(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        assert operator.retry_job(session, job_id, at(2)) is False  # RUNNING: not the operator's to reset
    fail(index, job_id, at(3), retry_after=None)
    with transaction(index.sessions) as session:
        assert operator.retry_job(session, job_id, at(4)) is True
    job = get_job(index, job_id)
    assert (
        job.state,
        job.attempts,
        job.enqueued_at,
        job.next_attempt_at,
        job.finished_at,
        job.updated_at,
    ) == (
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
            return jobs.inputs(session, get_job(index, job_id))

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
        rows = jobs.inputs(session, get_job(index, a))
    assert [r.sop_instance_uid for r in rows] == ["2.25.1.1.1"]
