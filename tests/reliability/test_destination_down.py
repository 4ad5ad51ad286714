"""The destination PACS is down for many retry intervals and the node is SIGKILLed meanwhile, twice: once
while every delivery waits out its backoff (the destination refuses connections), once while a delivery
is being sent to a destination that hangs (a real ``storescp``, stopped with SIGSTOP: the kernel accepts
the connection, nobody answers), so the killed attempt leaves its lease behind. When the destination
comes back, every report (its SR and its SC key images) arrives, each SOP Instance UID exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from pydicom import dcmread
from support.node import NodeProcess, deliveries_of, index_values, jobs_of
from support.peers.dcmtk import StoreSCP, storescu
from support.peers.ports import free_port
from support.peers.synthetic import new_study_uid, radiograph, write_all

from orthonode.inference.untrained import write_untrained_models

pytestmark = pytest.mark.integration

STUDIES = 2
OBJECTS_PER_REPORT = 3  # one SR and one SC key image per knee (a left and a right radiograph)
FAILED_BEFORE_KILL = 3
SIDES: tuple[Literal["L", "R"], ...] = ("L", "R")


def _each_delivery(uids: list[str], ok: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    """Every study has one done job whose only delivery satisfies ``ok``."""

    def check(status: dict[str, Any]) -> bool:
        for uid in uids:
            jobs = jobs_of(status, uid)
            if len(jobs) != 1 or jobs[0]["state"] != "done":
                return False
            rows = deliveries_of(status, jobs[0]["id"])
            if len(rows) != 1 or not ok(rows[0]):
                return False
        return True

    return check


def _attempts(status: dict[str, Any], uids: list[str]) -> dict[str, int]:
    return {uid: deliveries_of(status, jobs_of(status, uid)[0]["id"])[0]["attempts"] for uid in uids}


def test_destination_down_across_two_sigkills_delivers_every_report_once(tmp_path: Path) -> None:
    models = write_untrained_models(
        tmp_path / "models", tasks=("kl_grade",), arch="vit_test_patch16_dinov3", img_size=64
    )
    port = free_port()
    archive = StoreSCP(tmp_path / "archive", port=port)  # down: not started yet
    node = NodeProcess(
        tmp_path / "node",
        models_dir=models,
        destinations=[{"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1", "port": port}],
        delivery_backoff_seconds=0.5,
        delivery_backoff_cap_seconds=1,
        delivery_max_attempts=1000,  # never FAILED while the destination is down
        delivery_timeout_seconds=4,  # a hanging destination fails an attempt after 4 s ...
        delivery_lease_seconds=10,  # ... well inside its lease, which a killed attempt leaves behind
        web_enabled=False,
    )
    uids = [new_study_uid() for _ in range(STUDIES)]
    try:
        node.start()
        for n, uid in enumerate(uids):
            knees = [
                radiograph(uid, laterality=side, seed=n, series_number=i + 1) for i, side in enumerate(SIDES)
            ]
            sent = storescu(
                "127.0.0.1", node.port, write_all(knees, tmp_path / f"study{n}"), called_aet=node.ae_title
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr

        # 1. Refused: every delivery fails several times, then the node dies between two attempts.
        def failed_often(d: dict[str, Any]) -> bool:
            return d["state"] == "pending" and d["attempts"] >= FAILED_BEFORE_KILL and bool(d["error"])

        node.wait_for(_each_delivery(uids, failed_often), timeout=180, what="deliveries failing while down")
        node.kill()
        before = _attempts(node.status(), uids)
        node.start()
        status = node.wait_for(
            lambda s: all(a > before[u] for u, a in _attempts(s, uids).items()),
            timeout=120,
            what="the retries carrying on after the restart",
        )
        assert not any(d["state"] == "sent" for d in status["deliveries"])

        # 2. Hanging: the destination accepts connections and never answers; the node dies mid-send.
        archive.start()
        archive.pause()
        try:
            status = node.wait_for(
                lambda s: any(d["state"] == "sending" for d in s["deliveries"]),
                timeout=120,
                what="a delivery being sent to the hanging destination",
            )
            node.kill()
            held = _attempts(node.status(), uids)
            assert any(d["state"] == "sending" for d in node.status()["deliveries"])  # its lease left behind
            node.start()
            # the killed attempt's lease expires and the delivery is tried again (and hangs again)
            node.wait_for(
                lambda s: all(a > held[u] for u, a in _attempts(s, uids).items()),
                timeout=180,
                what="the killed send's lease to expire and the delivery to be tried again",
            )
        finally:
            archive.resume()

        # 3. The destination answers again: everything arrives.
        status = node.wait_for(
            _each_delivery(uids, lambda d: d["state"] == "sent"), timeout=180, what="every report delivered"
        )
        assert node.terminate() == 0  # nothing is left in flight when the files are counted
        received = archive.wait_for_files(STUDIES * OBJECTS_PER_REPORT, timeout=30)
    finally:
        node.__exit__(None, None, None)
        archive.stop()

    sops = Counter(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in received)
    assert [uid for uid, n in sops.items() if n > 1] == []  # nothing delivered twice
    results = index_values(node, "SELECT sop_instance_uid FROM results")
    assert len(results) == STUDIES * OBJECTS_PER_REPORT and set(sops) == set(results)  # every object
    modalities = Counter(str(dcmread(f, stop_before_pixels=True).Modality) for f in received)
    assert modalities["SR"] == STUDIES
    final = _attempts(status, uids)
    for uid in uids:
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 1  # the kills never re-ran a finished job
        assert final[uid] > held[uid] > before[uid] >= FAILED_BEFORE_KILL  # one row, retried throughout
