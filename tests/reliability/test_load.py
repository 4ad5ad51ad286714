"""Load on one node, with real peers all round. (a) Eight PACS send at once, each its own MR study on its
own association (dcmtk ``storescu``, eight processes): every instance is stored exactly once and each
study is reported once. (b) Fifty radiograph studies complete together and two ``orthonode worker``
processes share their jobs through Redis: each study is reported once. Reports go to a real ``storescp``,
which keeps a second file for a repeated SOP Instance UID, so a duplicate send would show.

The peak resident memory of every process (node, embedded worker, workers and their children) is printed
as a table and written to ``<tmp>/<name>-peak-rss.json``; it is held only to a generous bound. Nothing
here asserts a duration. On the 2-core build machine, beside a training job and a fuzz run, 8 x 500
took 230 s and the 50 studies 94 s: 8 x 500 is marked ``slow`` and ``make test`` sends 8 x 60 instead.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from pydicom import dcmread
from support.memory import PeakRSS
from support.node import NodeProcess, WorkerProcess, deliveries_of, index_values, jobs_of, study_of
from support.peers.dcmtk import StoreSCP, storescu
from support.peers.synthetic import mr_series, new_study_uid, radiograph, write_all
from support.services import redis_url

from orthonode.inference.untrained import write_untrained_models

pytestmark = pytest.mark.integration

ASSOCIATIONS = 8
STUDIES = 50
SIDES: tuple[Literal["L", "R"], ...] = ("L", "R")
PEAK_RSS_BOUND_MIB = 2048  # a safety bound, far above what the node needs
FULL = [pytest.mark.slow, pytest.mark.timeout(1200)]  # ~4 min here: `make test-slow`


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    tasks = ("kl_grade", "acl_injury", "meniscus_injury")
    return write_untrained_models(root, tasks=tasks, arch="vit_test_patch16_dinov3", img_size=64)


def _destination(archive: StoreSCP) -> list[dict[str, Any]]:
    return [{"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1", "port": archive.port}]


def _reported(uids: list[str]) -> Callable[[dict[str, Any]], bool]:
    """Every study has one job, done, whose delivery was sent."""

    def check(status: dict[str, Any]) -> bool:
        for uid in uids:
            jobs = jobs_of(status, uid)
            if len(jobs) != 1 or jobs[0]["state"] != "done":
                return False
            if [d["state"] for d in deliveries_of(status, jobs[0]["id"])] != ["sent"]:
                return False
        return True

    return check


def _check_reported_once(status: dict[str, Any], uids: list[str], archive: StoreSCP, objects: int) -> None:
    """One job per study, run once, one delivery sent once; the destination holds each study's report
    (``objects`` files: the SR and its key images) and no SOP Instance UID twice."""
    for uid in uids:
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 1 and job["results"] == objects, job
        assert [d["attempts"] for d in deliveries_of(status, job["id"])] == [1]
    received = archive.wait_for_files(len(uids) * objects, timeout=60)
    headers = [dcmread(f, stop_before_pixels=True) for f in received]
    sops = Counter(str(ds.SOPInstanceUID) for ds in headers)
    assert [sop for sop, n in sops.items() if n > 1] == []
    reports = Counter(str(ds.StudyInstanceUID) for ds in headers if ds.Modality == "SR")
    assert reports == Counter(uids)  # one report per study, none for anything else


def _record(peaks: PeakRSS, tmp_path: Path, name: str, **figures: Any) -> None:
    print(f"\n{name}: {figures}\n{peaks.table()}")
    path = tmp_path / f"{name}-peak-rss.json"
    peaks.write_json(path, test=name, **figures)
    print(f"written to {path}")
    assert peaks.rows(), "no process was sampled"
    for row in peaks.rows():
        assert row.peak_rss_mib < PEAK_RSS_BOUND_MIB, row


@pytest.mark.parametrize(
    "instances", [pytest.param(60, id="8x60"), pytest.param(500, id="8x500", marks=FULL)]
)
def test_eight_concurrent_associations_store_every_instance_once(
    instances: int, models: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    studies: dict[str, list[Path]] = {}
    sops: set[str] = set()
    for n in range(ASSOCIATIONS):
        uid = new_study_uid()
        series = mr_series(uid, n_slices=instances, description="PD FS SAG", seed=n)
        studies[uid] = write_all(series, tmp_path / f"study{n}")
        sops |= {str(ds.SOPInstanceUID) for ds in series}
    uids = list(studies)
    with StoreSCP(tmp_path / "archive") as archive:
        node = NodeProcess(
            tmp_path / "node", models_dir=models, destinations=_destination(archive),
            series_quiet_seconds=5, study_quiet_seconds=10, web_enabled=False,
        )  # fmt: skip
        try:
            node.start()
            assert node.proc is not None
            with PeakRSS({"node": node.proc.pid}) as peaks:
                sent: dict[str, int] = {}

                def push(uid: str) -> None:
                    result = storescu(
                        "127.0.0.1", node.port, studies[uid], called_aet=node.ae_title, timeout=900
                    )
                    sent[uid] = result.returncode

                senders = [threading.Thread(target=push, args=(uid,)) for uid in uids]
                for sender in senders:
                    sender.start()
                for sender in senders:
                    sender.join(900)
                assert sent == dict.fromkeys(uids, 0)  # every association sent all its instances
                status = node.wait_for(_reported(uids), timeout=600, what="each study reported")
            for uid in uids:
                study = study_of(status, uid)
                assert study is not None and (study["instances"], study["version"]) == (instances, 1)
            indexed = index_values(node, "SELECT sop_instance_uid FROM instances")
            assert len(indexed) == len(sops) and set(indexed) == sops  # each instance stored once
            stored = [p for p in (node.data_dir / "studies").rglob("*") if p.is_file()]
            assert len(stored) == len(sops)
            _check_reported_once(status, uids, archive, objects=3)  # SR + two MRI findings' key images
        finally:
            node.__exit__(None, None, None)
    figures = {
        "associations": ASSOCIATIONS,
        "instances": len(sops),
        "seconds": round(time.monotonic() - started),
    }
    _record(peaks, tmp_path, f"load-{ASSOCIATIONS}x{instances}", **figures)


@pytest.mark.timeout(600)
def test_fifty_studies_completing_together_are_each_reported_once_by_two_workers(
    models: Path, tmp_path: Path
) -> None:
    started, count = time.monotonic(), STUDIES
    uids = [new_study_uid() for _ in range(count)]
    files = write_all(
        [radiograph(uid, laterality=SIDES[n % 2], seed=n) for n, uid in enumerate(uids)], tmp_path / "studies"
    )
    with StoreSCP(tmp_path / "archive") as archive:
        node = NodeProcess(
            tmp_path / "node", models_dir=models, destinations=_destination(archive), broker_url=redis_url(),
            queue_name=f"orthonode.test.{uuid.uuid4().hex[:12]}", series_quiet_seconds=2,
            study_quiet_seconds=3, web_enabled=False,
        )  # fmt: skip
        workers = [WorkerProcess(tmp_path / f"w{i}", node.env, name=f"worker{i}") for i in range(2)]
        try:
            node.start()
            for worker in workers:
                worker.start()
            assert node.proc is not None
            roots = {
                "node": node.proc.pid,
                **{f"worker{i}": w.proc.pid for i, w in enumerate(workers) if w.proc},
            }
            with PeakRSS(roots) as peaks:
                # every study on one association: they all go quiet, and complete, together
                result = storescu("127.0.0.1", node.port, files, called_aet=node.ae_title, timeout=600)
                assert result.returncode == 0, result.stdout + result.stderr
                status = node.wait_for(_reported(uids), timeout=480, what="each study reported")
            _check_reported_once(status, uids, archive, objects=2)  # SR + the knee's key image
            done = [sum("job done:" in line for line in w.log_text().splitlines()) for w in workers]
            assert sum(done) == count  # each job ran once, on one worker or the other
        finally:
            for worker in workers:
                worker.__exit__(None, None, None)
            node.__exit__(None, None, None)
    figures = {
        "studies": count,
        "workers": 2,
        "jobs_per_worker": done,
        "seconds": round(time.monotonic() - started),
    }
    _record(peaks, tmp_path, f"load-{count}-studies", **figures)
