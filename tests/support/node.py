"""The node under test as real processes: ``orthonode serve`` (and ``orthonode worker``) started with
their own environment on free loopback ports, exactly as an operator would run them."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from support.peers.ports import free_port

START_TIMEOUT_S = 60.0


def node_env(
    data_dir: Path,
    *,
    port: int,
    ae_title: str = "ORTHONODE",
    database_url: str | None = None,
    broker_url: str | None = None,
    **settings: Any,
) -> dict[str, str]:
    """The environment of a node process: ours replaces any ORTHONODE_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORTHONODE_")}
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "host": "127.0.0.1",
        "port": port,
        "ae_title": ae_title,
        "series_quiet_seconds": 1,
        "study_quiet_seconds": 2,
        "sweep_interval_seconds": 0.3,
        "enqueue_retry_seconds": 2,
        "min_free_bytes": 0,
        "log_level": "INFO",
        "web_port": 0,  # the console on a free port: NodeProcess.web_url reads it from the log
        # No model unless a test installs one: the tests of receiving and queueing stay independent of the
        # model the package ships (a job then ends done with "no report: no encoder in ...").
        "models_dir": data_dir.parent / "no-models",
    }
    if database_url:
        values["database_url"] = database_url
    if broker_url:
        values["broker_url"] = broker_url
    values.update(settings)
    for key, value in values.items():
        if isinstance(value, list | dict):
            value = json.dumps(value)
        env[f"ORTHONODE_{key.upper()}"] = str(value)
    return env


#: Every log file a node or worker process of this test session wrote (scanned for patient identifiers).
LOG_FILES: list[Path] = []


class _Process:
    args: list[str] = []

    def __init__(self, workdir: Path, env: dict[str, str], name: str) -> None:
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        LOG_FILES.append(self.log_path)

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orthonode", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() takes the embedded worker too
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group (as a power cut or OOM kill would)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class NodeProcess(_Process):
    """``orthonode serve``."""

    args = ["serve"]

    def __init__(
        self, workdir: Path, *, port: int | None = None, data_dir: Path | None = None, **settings: Any
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir or workdir / "data"
        self.ae_title = settings.get("ae_title", "ORTHONODE")
        super().__init__(workdir, node_env(self.data_dir, port=self.port, **settings), "serve")

    def start(self) -> Self:
        """Start and wait for the node's "listening" log line (not a TCP probe: a bare connection would
        hold an association slot until the ARTIM timer expires)."""
        offset = len(self.log_text())
        super().start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while f"listening as {self.ae_title} on 127.0.0.1:{self.port}" not in self.log_text()[offset:]:
            if time.monotonic() > deadline or not self.running:
                raise RuntimeError(f"node did not start listening; log:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        return self

    @property
    def web_url(self) -> str:
        """The console's base URL, from the node's "console on http://..." log line."""
        match = re.search(r"console on (http://127\.0\.0\.1:\d+)/", self.log_text())
        if match is None:
            raise RuntimeError(f"the node logged no console URL; log:\n{self.log_text()[-3000:]}")
        return match.group(1)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orthonode", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "--json")
        if out.returncode != 0:
            raise RuntimeError(f"orthonode status failed: {out.stderr}")
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = "condition"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; status: {json.dumps(status)[:3000]}\n"
                    f"log tail:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.5)
            status = self.status()
        return status


class WorkerProcess(_Process):
    """``orthonode worker`` sharing a node's index and broker."""

    args = ["worker"]

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "worker") -> None:
        super().__init__(workdir, env, name)


def jobs_of(status: dict[str, Any], study_uid: str) -> list[dict[str, Any]]:
    return [j for j in status["jobs"] if j["study_uid"] == study_uid]


def study_of(status: dict[str, Any], study_uid: str) -> dict[str, Any] | None:
    return next((s for s in status["studies"] if s["study_uid"] == study_uid), None)


def deliveries_of(status: dict[str, Any], job_id: int) -> list[dict[str, Any]]:
    return [d for d in status["deliveries"] if d["job_id"] == job_id]


def index_values(node: NodeProcess, query: str) -> list[Any]:
    """The first column of ``query`` run on the node's SQLite index (while it runs, or after)."""
    db = sqlite3.connect(node.data_dir / "index.sqlite3")
    try:
        return [row[0] for row in db.execute(query)]
    finally:
        db.close()
