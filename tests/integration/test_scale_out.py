"""Scale out (README "Operating at scale"): two ``orthonode serve`` processes on one PostgreSQL index and
one data volume, each receiving part of the same studies, make exactly one job per study; two workers
share the queue and run each job once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.node import NodeProcess, WorkerProcess, jobs_of, study_of
from support.peers.dcmtk import storescu
from support.peers.synthetic import mr_series, new_study_uid, write_all
from support.services import redis_url

pytestmark = pytest.mark.integration


def test_two_nodes_one_index_exactly_one_job_per_study(postgres_db: str, tmp_path: Path) -> None:
    shared = {
        "database_url": postgres_db,
        "broker_url": redis_url(),
        "queue_name": f"orthonode.test.{uuid.uuid4().hex[:12]}",
        "data_dir": tmp_path / "shared-volume",
        "series_quiet_seconds": 2,
        "study_quiet_seconds": 3,
    }
    studies = {}
    for i in range(3):
        uid = new_study_uid()
        studies[uid] = write_all(
            mr_series(uid, n_slices=8, plane="sagittal", description="PD FS SAG", seed=i), tmp_path / f"s{i}"
        )
    nodes = [NodeProcess(tmp_path / name, **shared) for name in ("a", "b")]
    workers = []
    try:
        for node in nodes:
            node.start()
        workers = [
            WorkerProcess(tmp_path / f"w{i}", nodes[0].env, name=f"worker{i}").start() for i in range(2)
        ]

        def push(node: NodeProcess, files: list[Path]) -> None:
            result = storescu("127.0.0.1", node.port, files, called_aet=node.ae_title)
            assert result.returncode == 0, result.stdout + result.stderr

        threads = []
        for files in studies.values():  # even slices to node a, odd to node b, at the same time
            for node, part in ((nodes[0], files[0::2]), (nodes[1], files[1::2])):
                threads.append(threading.Thread(target=push, args=(node, part)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

        def all_done(status: dict[str, Any]) -> bool:
            return all(
                len(jobs := jobs_of(status, uid)) == 1 and jobs[0]["state"] == "done" for uid in studies
            )

        status = nodes[0].wait_for(all_done, timeout=120, what="one finished job per study")
        for uid in studies:
            assert study_of(status, uid)["instances"] == 8  # type: ignore[index]
            (job,) = jobs_of(status, uid)
            assert job["attempts"] == 1
        logs = "".join(w.log_text() for w in workers)
        done_lines = [line for line in logs.splitlines() if "job done:" in line]
        assert len(done_lines) == 3
        # Both nodes received and both workers were available; the sweepers never doubled a job.
        assert all("listening as ORTHONODE" in n.log_text() for n in nodes)
        assert nodes[1].status()["jobs"] == status["jobs"]
    finally:
        for w in workers:
            w.__exit__(None, None, None)
        for node in nodes:
            node.__exit__(None, None, None)
