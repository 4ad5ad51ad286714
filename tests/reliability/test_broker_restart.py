"""The broker restarts with a job queued and loses it (Redis without persistence): no job is lost,
because the index hands a queued job nobody claimed to the broker again (``job_lease_seconds``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.node import NodeProcess, WorkerProcess, jobs_of
from support.peers.dcmtk import storescu
from support.peers.ports import free_port, wait_for_port
from support.services import require_binary

from orthonode.peers.synthetic import new_study_uid, radiograph, write_all

pytestmark = pytest.mark.integration


class Redis:
    """A throw-away redis-server on a free loopback port, without persistence."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        binary = require_binary("redis-server", "redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis() -> Iterator[Redis]:
    server = Redis(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_job_lost_by_the_broker_is_handed_over_again(redis: Redis, tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node", broker_url=f"redis://127.0.0.1:{redis.port}/0", series_quiet_seconds=1,
        study_quiet_seconds=1, job_lease_seconds=5, web_enabled=False,
    )  # fmt: skip
    node.start()
    worker = None
    try:
        uid = new_study_uid()
        files = write_all([radiograph(uid, laterality="R", seed=1)], tmp_path / "study")
        assert storescu("127.0.0.1", node.port, files, called_aet=node.ae_title).returncode == 0

        def queued(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "queued"

        node.wait_for(queued, timeout=60, what="the job queued in Redis (no worker runs yet)")
        redis.stop()  # the broker goes down with the job in its queue, and comes back empty
        time.sleep(1)
        redis.start()
        worker = WorkerProcess(tmp_path / "worker", node.env).start()

        def done(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "done"

        status = node.wait_for(done, timeout=120, what="the lost job handed over again and run")
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 1
    finally:
        if worker is not None:
            worker.__exit__(None, None, None)
        node.__exit__(None, None, None)
