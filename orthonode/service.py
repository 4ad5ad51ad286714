"""``orthonode serve``: the SCP, the sweeper, the operator console (``orthonode.console``) and (on the
embedded default) a worker child, in one process tree, until SIGTERM.

On SIGTERM the listening socket closes, associations in progress finish (bounded by the network
timeout), the sweeper and the console stop, the worker child finishes its current job, and the process
exits 0."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from orthonode.completion.sweeper import Enqueue, Sweeper
from orthonode.console.server import ConsoleServer
from orthonode.dicom.handlers import StoreHandlers
from orthonode.dicom.scp import StorageSCP
from orthonode.index.models import utcnow
from orthonode.runtime import Runtime
from orthonode.settings import Settings
from orthonode.worker.celery_app import DELIVER_RESULTS, PROCESS_STUDY, NodeApp

log = logging.getLogger(__name__)


def enqueuer(app: NodeApp, task_name: str) -> Enqueue:
    """Hand a job id to the task ``task_name``, by name, on the configured queue (task_default_queue).
    The receiving process only sends: it does not register the tasks, so it never imports the worker's
    inference code (torch) and stays small."""

    def enqueue(job_id: int) -> None:
        app.send_task(task_name, args=[job_id])

    return enqueue


class Node:
    """The receiving node (SCP + sweeper + console) of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rt = Runtime(settings)
        self.app = NodeApp(self.rt)  # a sender only: the tasks run in `orthonode worker`
        self.scp = StorageSCP(settings, StoreHandlers(settings, self.rt.store, self.rt.sessions))
        self.sweeper = Sweeper(
            self.rt,
            enqueuer(self.app, PROCESS_STUDY),
            enqueue_delivery=enqueuer(self.app, DELIVER_RESULTS),
        )
        self.worker: subprocess.Popen[bytes] | None = None
        self.console: ConsoleServer | None = None
        if settings.web_enabled:
            self.console = ConsoleServer(self.rt, embedded_worker_alive=self.embedded_worker_alive)

    def embedded_worker_alive(self) -> bool | None:
        if not self.settings.runs_embedded_worker:
            return None
        return self.worker is not None and self.worker.poll() is None

    def start(self) -> None:
        self.rt.migrate()  # the schema is current before anything is accepted
        stale = self.rt.store.sweep_incoming()
        if stale:
            log.info("removed %d unacknowledged partial file(s) from an earlier run", stale)
        if self.console is not None:
            self.console.start()  # before the SCP: a busy web port fails start-up before anything is accepted
        self.scp.start()
        # Quiet time counts from now: while the node was down, senders could not reach it.
        self.sweeper.listening_since = utcnow()
        self.sweeper.start()

    def stop(self) -> None:
        self.scp.stop(drain_seconds=self.settings.network_timeout)
        self.sweeper.stop()
        if self.console is not None:
            self.console.stop()
        self.rt.close()


def _start_worker_child(config_file: Path | None, *, quiet: bool = False) -> subprocess.Popen[bytes]:
    """``orthonode worker`` as a child process with this process's configuration."""
    cmd = [sys.executable, "-m", "orthonode"]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    cmd += ["worker"]
    log.info("starting the embedded worker: %s", " ".join(cmd))
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=os.environ.copy(), stdout=out, stderr=out)


def _stop_worker_child(worker: subprocess.Popen[bytes], timeout: float) -> None:
    """Celery's warm shutdown (SIGTERM) lets the job in hand finish; SIGKILL after ``timeout``."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def serve(settings: Settings, config_file: Path | None) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    node = Node(settings)
    node.start()
    node.worker = _start_worker_child(config_file) if settings.runs_embedded_worker else None
    try:
        while not stop.wait(1.0):
            if node.worker is not None and node.worker.poll() is not None:
                log.error("embedded worker exited with %s; restarting it", node.worker.returncode)
                node.worker = _start_worker_child(config_file)
    finally:
        node.stop()
        if node.worker is not None:
            _stop_worker_child(node.worker, max(30.0, settings.job_lease_seconds))
    log.info("stopped")
    return 0
