"""Celery tasks: thin and idempotent. Ids in, nothing heavy out; the work is in orthonode.worker.jobs."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from orthonode.send import delivery
from orthonode.worker import jobs
from orthonode.worker.celery_app import DELIVER_RESULTS, PROCESS_STUDY, app, runtime

log = logging.getLogger(__name__)


@app.task(
    name=PROCESS_STUDY,
    acks_late=True,
    autoretry_for=(OperationalError,),  # the index itself unreachable: the broker retries with backoff
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=20,
)
def process_study(job_id: int) -> str:
    """Run the job for one complete study version (safe to deliver more than once)."""
    return jobs.run_job(runtime(), int(job_id)).value


@app.task(
    name=DELIVER_RESULTS,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=20,
)
def deliver_results(job_id: int) -> str:
    """Send the job's due deliveries (safe to deliver more than once: each send is claimed first)."""
    outcomes = delivery.deliver_job(runtime(), int(job_id))
    return ", ".join(f"{o.destination}: {o.state}" for o in outcomes) or "nothing due"
