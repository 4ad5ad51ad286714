"""A real Celery worker (never eager mode) processes jobs with every supported broker and index:
the embedded on-disk broker, Redis and RabbitMQ; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from support.node import WorkerProcess, jobs_of
from support.peers.dcmtk import storescu
from support.services import rabbitmq_url, redis_url

from orthonode.peers.synthetic import new_study_uid, radiograph, write_all

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("index", "broker"),
    [
        ("sqlite", "embedded"),
        ("postgresql", "embedded"),
        ("sqlite", "redis"),
        ("postgresql", "redis"),
        ("sqlite", "rabbitmq"),
        ("postgresql", "rabbitmq"),
    ],
)
def test_worker_processes_a_job(
    index: str, broker: str, make_node: Any, tmp_path: Path, request: Any
) -> None:
    settings: dict[str, Any] = {"queue_name": f"orthonode.test.{uuid.uuid4().hex[:12]}"}
    if index == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_db")
    if broker == "redis":
        settings["broker_url"] = redis_url()
    elif broker == "rabbitmq":
        settings["broker_url"] = rabbitmq_url()

    node = make_node(**settings)
    worker = None
    if broker != "embedded":  # a remote broker: workers run as their own processes (any machine)
        assert "starting the embedded worker" not in node.log_text()
        worker = WorkerProcess(tmp_path / "worker", node.env).start()
    try:
        uid = new_study_uid()
        files = write_all([radiograph(uid, laterality="R", seed=1)], tmp_path / "study")
        result = storescu("127.0.0.1", node.port, files, called_aet=node.ae_title)
        assert result.returncode == 0, result.stdout + result.stderr

        def done(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "done"

        status = node.wait_for(done, timeout=90, what=f"the job to finish with {index} and {broker}")
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 1
        assert job["detail"].startswith("no report: no encoder in")
        worker_log = worker.log_text() if worker else node.log_text()
        assert f"[job {job['id']}] job done" in worker_log
    finally:
        if worker is not None:
            worker.__exit__(None, None, None)
