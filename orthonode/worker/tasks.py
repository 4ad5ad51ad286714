"""Celery tasks: thin and idempotent. Ids in, nothing heavy out; the work is in orthonode.worker.jobs.

Registered on each process's app (:func:`register`, called by ``celery_app.make_app``): a task runs with
the runtime its app holds, not with module state.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from orthonode.send import delivery
from orthonode.worker import jobs
from orthonode.worker.celery_app import DELIVER_RESULTS, PROCESS_STUDY, NodeApp

log = logging.getLogger(__name__)

RETRIES = {
    "acks_late": True,
    "autoretry_for": (OperationalError,),  # the index itself unreachable: the broker retries with backoff
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 20,
}


def register(app: NodeApp) -> None:
    """Define the node's tasks on ``app`` only (``shared=False``: Celery would otherwise add them to every
    app made later in the process, bound to this one's runtime)."""

    @app.task(name=PROCESS_STUDY, shared=False, **RETRIES)
    def process_study(job_id: int) -> str:
        """Run the job for one complete study version (safe to deliver more than once)."""
        return jobs.run_job(app.runtime, int(job_id)).value

    @app.task(name=DELIVER_RESULTS, shared=False, **RETRIES)
    def deliver_results(job_id: int) -> str:
        """Send the job's due deliveries (safe to deliver more than once: each send is claimed first)."""
        outcomes = delivery.deliver_job(app.runtime, int(job_id))
        return ", ".join(f"{o.destination}: {o.state}" for o in outcomes) or "nothing due"
