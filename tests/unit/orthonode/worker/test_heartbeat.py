"""orthonode.worker.heartbeat: a slow attempt keeps its job; a dead or superseded one does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from support.index import open_index
from support.index_rows import Index, get_job, new_job

from orthonode.index import jobs
from orthonode.index.db import transaction
from orthonode.index.models import Job, utcnow
from orthonode.worker.heartbeat import LeaseKeeper

LEASE = timedelta(seconds=1.5)  # renewed every 0.5 s: a second of slack for a loaded machine


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    engine, sessions = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        yield Index(engine, sessions, "sqlite")
    finally:
        engine.dispose()


def _claimed(index: Index, holder: str = "w1") -> int:
    job_id = new_job(index, now=utcnow())
    with transaction(index.sessions) as session:
        assert jobs.claim(session, job_id, holder=holder, now=utcnow(), lease=LEASE) is not None
    return job_id


def _expired(index: Index) -> list[int]:
    with transaction(index.sessions) as session:
        return jobs.expire_leases(session, now=utcnow(), max_attempts=5)


def test_an_attempt_longer_than_its_lease_keeps_the_job(index: Index) -> None:
    job_id = _claimed(index)
    with LeaseKeeper(index.sessions, job_id, "w1", LEASE) as keeper:
        for _ in range(9):  # three leases long, checked as the sweeper would
            time.sleep(0.5)
            assert _expired(index) == []
    assert keeper.renewals >= 3 and not keeper.lost
    with transaction(index.sessions) as session:
        assert jobs.finish(session, job_id, holder="w1", now=utcnow(), detail="done")


def test_once_the_attempt_stops_beating_the_job_is_free_a_lease_later(index: Index) -> None:
    job_id = _claimed(index)
    with LeaseKeeper(index.sessions, job_id, "w1", LEASE):
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while not _expired(index):  # as a killed worker's: the sweeper gives it back
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.1)
    assert get_job(index, job_id).state == "pending"


def test_a_superseded_attempt_stops_renewing_and_says_so(index: Index) -> None:
    job_id = _claimed(index)
    with transaction(index.sessions) as session:  # another attempt took the job over
        job = session.get(Job, job_id)
        assert job is not None
        job.holder = "w2"
    with LeaseKeeper(index.sessions, job_id, "w1", LEASE) as keeper:
        deadline = time.monotonic() + 10
        while not keeper.lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert keeper.lost and keeper.renewals == 0
    assert get_job(index, job_id).holder == "w2"
