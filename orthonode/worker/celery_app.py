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

BASE_CONFIG: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "task_serializer": "json",
    "accept_content": ["json"],
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
    "worker_redirect_stdouts": False,
    "enable_utc": True,
}


class NodeApp(Celery):
    """The Celery app of one node process: it holds that process's :class:`Runtime`, which its tasks
    (orthonode.worker.tasks) run with. A forked pool child (``worker_process_init``) makes the runtime
    drop what it inherited from the parent (its engine's connections, the fsync threads)."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__("orthonode")
        self.runtime = rt
        self.conf.update(BASE_CONFIG)
        self.conf.update(broker_options(rt.settings))
        worker_process_init.connect(self._after_fork)  # weak: gone with the app

    def _after_fork(self, **_: Any) -> None:
        self.runtime.after_fork()


def broker_options(settings: Settings) -> dict[str, Any]:
    """The configured broker and queue (the local folders created for the ``filesystem://`` one)."""
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
    return options


def make_app(rt: Runtime) -> NodeApp:
    """The app for ``rt``'s broker, with the node's tasks registered."""
    from orthonode.worker import tasks

    app = NodeApp(rt)
    tasks.register(app)
    return app
