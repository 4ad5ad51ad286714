"""Tests of orthonode.index.deliveries on SQLite and PostgreSQL (the ``index`` fixture, conftest.py):
which deliveries are due, and finishing one. The lease itself is tested in test_leases.py and, with a
real destination, in tests/unit/orthonode/send/test_delivery.py."""

from __future__ import annotations

from support.index_rows import LEASE, Index, at, claim, new_job

from orthonode.index import deliveries, jobs
from orthonode.index.db import transaction
from orthonode.index.jobs import ResultRecord
from orthonode.index.models import Delivery, DeliveryState


def _with_deliveries(ix: Index, uid: str, destinations: list[str]) -> int:
    job_id = new_job(ix, uid, now=at(0))
    claim(ix, job_id, at(1), holder="w1")
    record = ResultRecord("kl_grade:R", "sr", f"{uid}.9", f"{uid}.8", f"results/{job_id}/sr.dcm", None)
    with transaction(ix.sessions) as session:
        assert jobs.record_results(
            session, job_id, holder="w1", results=[record], destinations=destinations, now=at(2)
        )
    return job_id


def _ids(ix: Index, job_id: int) -> list[int]:
    with transaction(ix.sessions) as session:
        rows = session.query(Delivery).filter(Delivery.job_id == job_id).order_by(Delivery.id).all()
        return [r.id for r in rows]


def test_due_by_job_limit_and_lease(index: Index) -> None:
    a = _with_deliveries(index, "2.25.1", ["pacs", "archive"])
    b = _with_deliveries(index, "2.25.2", ["pacs"])
    a_ids, b_ids = _ids(index, a), _ids(index, b)
    with transaction(index.sessions) as session:
        assert deliveries.due(session, now=at(3)) == [(i, a) for i in a_ids] + [(b_ids[0], b)]
        assert deliveries.due(session, now=at(3), job_id=b) == [(b_ids[0], b)]
        assert deliveries.due(session, now=at(3), limit=1) == [(a_ids[0], a)]
        assert deliveries.claim(session, a_ids[0], holder="s", now=at(3), lease=LEASE) is not None
    with transaction(index.sessions) as session:
        assert deliveries.due(session, now=at(4), job_id=a) == [(a_ids[1], a)]  # held: not due
        assert deliveries.due(session, now=at(3) + LEASE + LEASE, job_id=a) == [(i, a) for i in a_ids]


def test_finish_marks_sent(index: Index) -> None:
    job_id = _with_deliveries(index, "2.25.1", ["pacs"])
    (delivery_id,) = _ids(index, job_id)
    with transaction(index.sessions) as session:
        assert deliveries.claim(session, delivery_id, holder="s", now=at(3), lease=LEASE) is not None
        assert deliveries.finish(session, delivery_id, holder="s", now=at(4))
        assert not deliveries.finish(session, delivery_id, holder="s", now=at(5))  # no longer held
    with transaction(index.sessions) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert (row.state, row.sent_at, row.lease_until, row.last_error, row.updated_at, row.attempts) == (
            DeliveryState.SENT,
            at(4),
            None,
            None,
            at(4),
            1,
        )
        assert deliveries.due(session, now=at(10_000)) == []
