"""SIGKILL the node ten times while a PACS sends it a 1,000-instance study, the PACS resending after each
crash what was not acknowledged (as PACS do after an aborted association): in the end every
acknowledged instance is on disk and in the index exactly once, intact, and the study completes once
(PS3.4 B.2.3: Success is an acknowledgement that the SCP has stored the instance)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.node import NodeProcess, jobs_of, study_of
from support.peers.pacs import store_until_cut
from support.peers.synthetic import mr_series, new_study_uid, write_all

pytestmark = pytest.mark.integration

INSTANCES = 1000
KILLS = 10


def _indexed(node: NodeProcess) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(node.data_dir / "index.sqlite3")
    try:
        return db.execute("SELECT sop_instance_uid, rel_path, sha256 FROM instances").fetchall()
    finally:
        db.close()


def test_ten_sigkills_during_a_1000_instance_transfer_lose_nothing_and_report_once(tmp_path: Path) -> None:
    uid = new_study_uid()
    series = mr_series(uid, n_slices=INSTANCES, plane="sagittal", rows=64, cols=64)
    files = write_all(series, tmp_path / "study")
    sop_of = {p.name: str(ds.SOPInstanceUID) for p, ds in zip(files, series, strict=True)}
    node = NodeProcess(tmp_path / "node", series_quiet_seconds=10, study_quiet_seconds=15)
    acked: set[str] = set()

    def ack(path: Path) -> None:
        acked.add(path.name)

    try:
        for life in range(1, KILLS + 1):
            node.start()  # same data directory and port each time
            before = len(acked)
            remaining = [f for f in files if f.name not in acked]
            sender = threading.Thread(target=store_until_cut, args=(node.port, remaining, ack))
            sender.start()
            deadline = time.monotonic() + 60
            # Each life of the node acknowledges some 40 more instances, then dies mid-stream.
            while len(acked) < before + 40 and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
            node.kill()
            sender.join(30)
            assert len(acked) > before, f"life {life}: nothing acknowledged"
            # After each crash: what was acknowledged is there, intact, once.
            rows = _indexed(node)
            indexed = {sop: (rel, sha) for sop, rel, sha in rows}
            assert len(indexed) == len(rows)
            for name in acked:
                rel, sha = indexed[sop_of[name]]
                assert hashlib.sha256((node.data_dir / rel).read_bytes()).hexdigest() == sha, name
        assert len(acked) < INSTANCES  # the kills really landed mid-transfer

        node.start()
        for _ in range(3):  # the PACS sends what is still unacknowledged until none is left
            remaining = [f for f in files if f.name not in acked]
            if not remaining:
                break
            store_until_cut(node.port, remaining, ack)
        assert len(acked) == INSTANCES

        def complete(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "done"

        status = node.wait_for(complete, timeout=180, what="the study to complete once")
        study = study_of(status, uid)
        assert study is not None and (study["instances"], study["version"]) == (INSTANCES, 1)
        rows = _indexed(node)
        assert sorted(sop for sop, _, _ in rows) == sorted(sop_of.values())  # each once, none missing
        stored = [p for p in (node.data_dir / "studies").rglob("*") if p.is_file()]
        assert len(stored) == INSTANCES  # no orphan files left by the crashes
        time.sleep(2)
        assert len(jobs_of(node.status(), uid)) == 1
    finally:
        node.__exit__(None, None, None)
