"""Tests of orthonode.index.leases: one lease mechanism, the same names and return types for jobs and
deliveries, on SQLite and on PostgreSQL (the ``index`` fixture, conftest.py)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from support.index_rows import LEASE, Index, at, claim, get_job, new_job

from orthonode.index import deliveries, jobs, leases
from orthonode.index.db import transaction
from orthonode.index.deliveries import DELIVERY_LEASE
from orthonode.index.jobs import JOB_LEASE
from orthonode.index.leases import Release, Released
from orthonode.index.models import Delivery, DeliveryState, Job, JobState


@pytest.mark.parametrize("name", ["claim", "renew", "finish", "fail"])
def test_jobs_and_deliveries_share_names_keywords_and_return_types(name: str) -> None:
    """The same lease calls, keyword for keyword (a job's finish also takes its ``detail``)."""
    job_call: Callable[..., Any] = getattr(jobs, name)
    delivery_call: Callable[..., Any] = getattr(deliveries, name)
    job_sig, delivery_sig = inspect.signature(job_call), inspect.signature(delivery_call)
    job_keywords = [p for p in job_sig.parameters if p != "detail"]
    assert job_keywords[2:] == list(delivery_sig.parameters)[2:]  # after (session, row id)
    job_return = str(job_sig.return_annotation).replace("Job", "ROW")
    assert job_return == str(delivery_sig.return_annotation).replace("Delivery", "ROW")


def test_both_models_have_the_lease_columns() -> None:
    for model in (Job, Delivery):
        columns = set(model.__table__.columns.keys())
        assert {"holder", "lease_until", "attempts", "next_attempt_at", "state", "updated_at"} <= columns
    assert "worker" not in Job.__table__.columns and "run_after" not in Job.__table__.columns


def test_lease_states() -> None:
    assert (JOB_LEASE.pending, JOB_LEASE.held, JOB_LEASE.done, JOB_LEASE.failed) == (
        JobState.PENDING,
        JobState.RUNNING,
        JobState.DONE,
        JobState.FAILED,
    )
    assert JOB_LEASE.free == (JobState.PENDING, JobState.QUEUED) and not JOB_LEASE.due_only
    assert (DELIVERY_LEASE.pending, DELIVERY_LEASE.held, DELIVERY_LEASE.done, DELIVERY_LEASE.failed) == (
        DeliveryState.PENDING,
        DeliveryState.SENDING,
        DeliveryState.SENT,
        DeliveryState.FAILED,
    )
    assert DELIVERY_LEASE.free == (DeliveryState.PENDING,) and DELIVERY_LEASE.due_only


def test_release_values_are_the_strings_they_were() -> None:
    assert [r.value for r in Release] == ["retry", "failed", "not_held", "missing"]
    assert leases.holder_name("h" * 200) == "h" * leases.HOLDER_LENGTH


def _delivery(ix: Index) -> int:
    job_id = new_job(ix, now=at(0))
    with transaction(ix.sessions) as session:
        row = Delivery(job_id=job_id, destination="pacs", state=DeliveryState.PENDING, updated_at=at(0))
        session.add(row)
        session.flush()
        return row.id


def test_held_by(index: Index) -> None:
    job_id = new_job(index, now=at(0))
    assert not leases.held_by(get_job(index, job_id), JOB_LEASE, "w1")
    claim(index, job_id, at(1), holder="w1")
    job = get_job(index, job_id)
    assert leases.held_by(job, JOB_LEASE, "w1")
    assert not leases.held_by(job, JOB_LEASE, "w2")
    assert not leases.held_by(None, JOB_LEASE, "w1")
    assert not leases.held_by(job, DELIVERY_LEASE, "w1")  # RUNNING is not a delivery's held state


def test_claimable_due_only_waits_for_next_attempt_at(index: Index) -> None:
    delivery_id = _delivery(index)
    with transaction(index.sessions) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        row.next_attempt_at = at(100)
    with transaction(index.sessions) as session:
        assert deliveries.claim(session, delivery_id, holder="a", now=at(99), lease=LEASE) is None
        claimed = deliveries.claim(session, delivery_id, holder="a", now=at(100), lease=LEASE)
        assert claimed is not None
        assert (claimed.state, claimed.holder, claimed.attempts, claimed.lease_until) == (
            DeliveryState.SENDING,
            "a",
            1,
            at(100) + LEASE,
        )


def test_a_job_is_claimed_before_its_next_attempt_at(index: Index) -> None:
    """A job's backoff delays its hand-over to the broker (jobs.take_to_enqueue), not a message that
    arrives anyway: the claim of a PENDING job does not wait (as before the leases were one)."""
    job_id = new_job(index, now=at(0))
    claim(index, job_id, at(1))
    with transaction(index.sessions) as session:
        released = jobs.fail(
            session,
            job_id,
            holder="w1",
            error="peer down",
            now=at(2),
            retry_after=timedelta(seconds=60),
            max_attempts=3,
        )
    assert released == Released(Release.RETRY, JobState.PENDING)
    assert claim(index, job_id, at(3), holder="w2") is not None


def test_delivery_fail_and_finish_by_holder_only(index: Index) -> None:
    delivery_id = _delivery(index)

    def fail(holder: str, now_s: float, retry: bool = True) -> Released:
        with transaction(index.sessions) as session:
            return deliveries.fail(
                session,
                delivery_id,
                holder=holder,
                error="x" * 5000,
                now=at(now_s),
                retry_after=timedelta(seconds=30) if retry else None,
                max_attempts=3,
            )

    with transaction(index.sessions) as session:
        assert deliveries.claim(session, delivery_id, holder="a", now=at(1), lease=LEASE) is not None
    assert fail("b", 2) == Released(Release.NOT_HELD, DeliveryState.SENDING)
    assert fail("a", 2) == Released(Release.RETRY, DeliveryState.PENDING)
    with transaction(index.sessions) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert (row.next_attempt_at, row.lease_until, row.last_error) == (at(32), None, "x" * 4000)
        assert deliveries.claim(session, delivery_id, holder="a", now=at(32), lease=LEASE) is not None
    assert fail("a", 33, retry=False) == Released(Release.FAILED, DeliveryState.FAILED)
    with transaction(index.sessions) as session:
        assert not deliveries.finish(session, delivery_id, holder="a", now=at(34))
        assert deliveries.fail(
            session,
            999_999,
            holder="a",
            error="e",
            now=at(34),
            retry_after=None,
            max_attempts=3,
        ) == Released(Release.MISSING, None)


def test_renew_extends_only_the_holders_lease(index: Index) -> None:
    job_id = new_job(index)
    assert claim(index, job_id, at(0), holder="w1") is not None
    with transaction(index.sessions) as session:
        assert jobs.renew(session, job_id, holder="w1", now=at(600), lease=LEASE)
        assert not jobs.renew(session, job_id, holder="w2", now=at(600), lease=LEASE)  # not its lease
    job = get_job(index, job_id)
    assert job.lease_until == at(600) + LEASE and job.holder == "w1" and job.attempts == 1
    with transaction(index.sessions) as session:  # the first lease would have expired at 900 s: not now
        assert jobs.expire_leases(session, now=at(1000), max_attempts=5) == []
        assert jobs.finish(session, job_id, holder="w1", now=at(1001), detail="ok")
        assert not jobs.renew(session, job_id, holder="w1", now=at(1002), lease=LEASE)  # done: nothing held
