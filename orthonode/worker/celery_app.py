"""The Celery application: the distributed engine that carries jobs to workers (we do not write one).

Long tasks: ``acks_late`` with prefetch 1, so a message is acknowledged only after its job ran and a
worker takes one job at a time; ``task_reject_on_worker_lost`` re-queues the message of a worker that
died. The index is the source of truth for job state and the sweeper re-hands any job the broker lost
(see orthonode.completion.sweeper), so the node stays correct on brokers without acknowledgements too.

Default broker: Kombu's ``filesystem://`` transport under ``<data_dir>/broker`` -- no server, messages
on local disk. At scale: ``redis://`` or ``amqp://`` (RabbitMQ); nothing else changes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from orthonode.runtime import Runtime
from orthonode.settings import Settings

PROCESS_STUDY = "orthonode.process_study"
DELIVER_RESULTS = "orthonode.deliver_results"

app = Celery("orthonode", include=["orthonode.worker.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    enable_utc=True,
)

_runtime: Runtime | None = None


def configure(settings: Settings, runtime: Runtime | None = None) -> Celery:
    """Point the app at the configured broker and give tasks their runtime."""
    global _runtime
    _runtime = runtime or Runtime(settings)
    options: dict[str, Any] = {
        "broker_url": settings.effective_broker_url,
        "task_default_queue": settings.queue_name,
    }
    if settings.broker_is_local:
        folder = settings.broker_dir
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        # Remote control and events need broadcast; the local transport is one machine anyway.
        options["worker_enable_remote_control"] = False
        options["worker_send_task_events"] = False
    else:
        options["broker_transport_options"] = {"visibility_timeout": int(settings.job_lease_seconds * 2)}
    app.conf.update(options)
    return app


def runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("orthonode.worker.celery_app.configure(settings) was not called in this process")
    return _runtime


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    if _runtime is not None:
        _runtime.after_fork()
