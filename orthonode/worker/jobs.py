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
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2 ** max(0, attempt - 1)))


def run_job(rt: Runtime, job_id: int) -> JobOutcome:
    settings = rt.settings
    with job_context(job_id):
        with transaction(rt.sessions) as session:
            job = repository.claim_job(
                session,
                job_id,
                worker=f"{socket.gethostname()}:{os.getpid()}",
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
            return _record_failure(rt, job_id, f"{exc}", backoff(attempt))
        except Exception as exc:
            if not isinstance(exc, PermanentJobError):
                log.exception("job failed with an unexpected error")
            return _record_failure(rt, job_id, f"{type(exc).__name__}: {exc}", None)
        with transaction(rt.sessions) as session:
            repository.finish_job(session, job_id, detail=detail, now=utcnow())
        log.info("job done: %s", detail)
        return JobOutcome.DONE


def _record_failure(rt: Runtime, job_id: int, error: str, retry_after: timedelta | None) -> JobOutcome:
    with transaction(rt.sessions) as session:
        state = repository.fail_job(
            session,
            job_id,
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
    log.error("job failed: %s", error)
    return JobOutcome.FAILED


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
