"""SIGKILL the worker mid-inference twice in a row: the job's lease runs out each time, a fresh worker
runs it again (attempt 3), and the destination receives one report and its key images, once (storescp
keeps a second file for a repeated SOP Instance UID, so a duplicate send would show)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from support.node import WorkerProcess, jobs_of
from support.peers.dcmtk import StoreSCP
from support.services import redis_url

from orthonode.inference.untrained import write_untrained_models
from orthonode.peers.synthetic import new_study_uid, radiograph, write_all

pytestmark = pytest.mark.integration


def _running_attempt(uid: str, attempt: int) -> Any:
    def check(status: dict[str, Any]) -> bool:
        jobs = jobs_of(status, uid)
        return bool(jobs) and jobs[0]["state"] == "running" and jobs[0]["attempts"] == attempt

    return check


def _delivered(uid: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        jobs = jobs_of(status, uid)
        if len(jobs) != 1 or jobs[0]["state"] != "done":
            return False
        return any(d["job_id"] == jobs[0]["id"] and d["state"] == "sent" for d in status["deliveries"])

    return check


def test_worker_killed_twice_mid_inference_runs_the_job_again_and_reports_once(
    tmp_path: Path, make_node: Any
) -> None:
    # A ViT-S encoder and 24 images make the job run for seconds, so each kill lands while it runs.
    models = write_untrained_models(tmp_path / "models", tasks=("kl_grade",), arch="vit_small_patch16_dinov3")
    with StoreSCP(tmp_path / "archive") as archive:
        destination = {"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1", "port": archive.port}
        node = make_node(
            models_dir=models, destinations=[destination], broker_url=redis_url(),
            queue_name=f"orthonode.test.{uuid.uuid4().hex[:12]}", job_lease_seconds=20,
        )  # fmt: skip
        uid = new_study_uid()
        datasets = [
            radiograph(uid, laterality=side, seed=i, series_number=1 if side == "L" else 2)
            for i, side in enumerate(["L", "R"] * 12)
        ]
        files = write_all(datasets, tmp_path / "xr")
        out = node.cli("send", "127.0.0.1", str(node.port), "--aet", node.ae_title, *map(str, files))
        assert out.returncode == 0, out.stdout + out.stderr
        for attempt in (1, 2):
            worker = WorkerProcess(tmp_path / f"worker{attempt}", node.env).start()
            try:
                # the second worker waits for the first one's lease to run out (job_lease_seconds)
                node.wait_for(_running_attempt(uid, attempt), timeout=180, what=f"attempt {attempt} to run")
                worker.kill()
            finally:
                worker.__exit__(None, None, None)
            killed = jobs_of(node.status(), uid)[0]
            assert (killed["state"], killed["attempts"]) == ("running", attempt)  # died holding the job
            assert not archive.files()  # nothing went out from a killed attempt
        with WorkerProcess(tmp_path / "worker3", node.env):
            status = node.wait_for(_delivered(uid), timeout=240, what="the third attempt's delivery")
            received = archive.wait_for_files(3, timeout=30)
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 3
    kinds = sorted(str(dcmread(f, stop_before_pixels=True).Modality) for f in archive.files())
    assert kinds.count("SR") == 1 and len(received) == 3 and len(archive.files()) == 3
