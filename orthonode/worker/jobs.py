"""Running one job: claim it, do the work, record the outcome. Safe under duplicate delivery.

A job is claimed with a lease in the index (``claim_job``); a second delivery of the same message finds
it running or done and returns. Transient failures go back to PENDING with exponential backoff (the
sweeper hands them to the broker again when due); permanent ones end FAILED with the reason, which
``orthonode retry JOB`` can reset.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from datetime import timedelta
from enum import StrEnum

from orthonode.errors import PermanentJobError, TransientError
from orthonode.index import repository
from orthonode.index.db import transaction
from orthonode.index.models import Job, utcnow
from orthonode.logging import job_context
from orthonode.runtime import Runtime

log = logging.getLogger(__name__)


class JobOutcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # another delivery holds or finished it
    RETRY = "retry"
    FAILED = "failed"


def backoff(attempt: int, *, base: float = 10.0, cap: float = 900.0) -> timedelta:
    """Exponential backoff with full jitter: up to base * 2**(attempt-1), capped."""
    exponent = min(max(0, attempt - 1), 60)  # 2**60 s is past any cap: no overflow for huge counts
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2.0**exponent))


def run_job(rt: Runtime, job_id: int) -> JobOutcome:
    settings = rt.settings
    # One identity per attempt: a stale attempt (its lease expired and passed on) can neither finish nor
    # fail the job, even in the same process.
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    with job_context(job_id):
        with transaction(rt.sessions) as session:
            job = repository.claim_job(
                session,
                job_id,
                worker=holder,
                now=utcnow(),
                lease=timedelta(seconds=settings.job_lease_seconds),
            )
            if job is None:
                log.info("job already taken or finished; nothing to do")
                return JobOutcome.SKIPPED
            attempt = job.attempts
        log.info("job started (attempt %d)", attempt)
        try:
            detail = _work(rt, job_id)
        except TransientError as exc:
            return _record_failure(rt, job_id, holder, f"{exc}", backoff(attempt))
        except Exception as exc:
            if not isinstance(exc, PermanentJobError):
                log.exception("job failed with an unexpected error")
            return _record_failure(rt, job_id, holder, f"{type(exc).__name__}: {exc}", None)
        with transaction(rt.sessions) as session:
            finished = repository.finish_job(session, job_id, worker=holder, detail=detail, now=utcnow())
        if not finished:
            log.warning("job finished after its lease had passed to another attempt; result discarded")
            return JobOutcome.SKIPPED
        log.info("job done: %s", detail)
        return JobOutcome.DONE


def _record_failure(
    rt: Runtime, job_id: int, holder: str, error: str, retry_after: timedelta | None
) -> JobOutcome:
    with transaction(rt.sessions) as session:
        state = repository.fail_job(
            session,
            job_id,
            worker=holder,
            error=error,
            now=utcnow(),
            retry_after=retry_after,
            max_attempts=rt.settings.job_max_attempts,
        )
    if state == "pending":
        log.warning(
            "job will be retried in %.0fs: %s", retry_after.total_seconds() if retry_after else 0, error
        )
        return JobOutcome.RETRY
    if state == "failed":
        log.error("job failed: %s", error)
        return JobOutcome.FAILED
    log.warning(
        "attempt failed after its lease had passed to another attempt (%s); job left %s", error, state
    )
    return JobOutcome.SKIPPED


def _work(rt: Runtime, job_id: int) -> str:
    """Load the study version and check every instance is on disk ("received and ready").

    The inference pipeline (encoder, heads, SR/SC, delivery) plugs in here.
    """
    with transaction(rt.sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise PermanentJobError(f"job {job_id} vanished from the index")
        inputs = repository.job_inputs(session, job)
        routes = list(job.routes)
    missing = [i.sop_instance_uid for i in inputs if not rt.store.absolute(i.rel_path).is_file()]
    if missing:
        raise PermanentJobError(f"{len(missing)} stored instance file(s) missing, e.g. {missing[0]}")
    series = {i.series_uid for i in inputs}
    names = ", ".join(sorted({r.get("pipeline", "?") for r in routes}))
    return f"received and ready: {len(inputs)} instances in {len(series)} series for {names}"
