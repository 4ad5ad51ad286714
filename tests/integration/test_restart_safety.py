"""Kill the node (SIGKILL, the whole process group) in the middle of a 300-instance transfer: after a
restart every instance that was acknowledged is on disk, intact, and in the index, and the study still
completes exactly once ("acknowledge only what is durable").

The node stays down for longer than the study's quiet time before it restarts, and the PACS then resends
the whole study: downtime is not quiet time and a resend is arrival (``completion.policy``), so the
partial study is not reported first, however slow the machine is (no race against the quiet time)."""

from __future__ import annotations

import hashlib
import signal
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


def test_sigkill_mid_transfer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    uid = new_study_uid()
    files = write_all(mr_series(uid, n_slices=300, plane="sagittal", rows=128, cols=128), tmp_path / "study")
    by_name = {p.name: p for p in files}
    quiet = 15
    node = NodeProcess(tmp_path / "node", series_quiet_seconds=10, study_quiet_seconds=quiet)
    node.start()
    try:
        acked: list[str] = []
        sender = threading.Thread(
            target=store_until_cut, args=(node.port, files, lambda p: acked.append(p.name))
        )
        sender.start()
        deadline = time.monotonic() + 60
        while len(acked) < 100 and time.monotonic() < deadline and sender.is_alive():
            time.sleep(0.005)
        node.kill()  # mid-transfer: the sender is streaming the next instances right now
        sender.join(30)
        assert 100 <= len(acked) < 300, len(acked)

        time.sleep(quiet + 2)  # down for longer than the quiet time: it must not count as quiet
        node.start()  # same data directory and port
        db = sqlite3.connect(node.data_dir / "index.sqlite3")
        rows = db.execute("SELECT sop_instance_uid, rel_path, sha256 FROM instances").fetchall()
        db.close()
        indexed = {sop: (rel, sha) for sop, rel, sha in rows}
        from pydicom import dcmread

        for name in acked:
            sop = dcmread(by_name[name], stop_before_pixels=True).SOPInstanceUID
            assert sop in indexed, f"acknowledged {name} is not in the index after the crash"
            rel, sha = indexed[sop]
            data = (node.data_dir / rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha

        # The PACS retries the whole study (as PACS do after an aborted association).
        again: list[str] = []
        store_until_cut(node.port, files, lambda p: again.append(p.name))
        assert len(again) == 300

        def complete(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "done"

        status = node.wait_for(complete, timeout=120, what="the study to complete once")
        study = study_of(status, uid)
        assert study is not None and (study["instances"], study["version"]) == (300, 1)
        time.sleep(2)
        assert len(jobs_of(node.status(), uid)) == 1
    finally:
        node.__exit__(None, None, None)


def test_sigterm_mid_transfer_finishes_the_association_then_exits_0(tmp_path: Path) -> None:
    """``orthonode serve`` on SIGTERM stops listening, lets the association in progress finish, exits 0."""
    uid = new_study_uid()
    files = write_all(mr_series(uid, n_slices=200, plane="sagittal", rows=128, cols=128), tmp_path / "study")
    node = NodeProcess(tmp_path / "node", embedded_worker=False)
    node.start()
    try:
        acked: list[str] = []
        sender = threading.Thread(
            target=store_until_cut, args=(node.port, files, lambda p: acked.append(p.name))
        )
        sender.start()
        deadline = time.monotonic() + 60
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(120) == 0
        sender.join(30)
        assert len(acked) == 200  # every instance of the association in progress was acknowledged
        db = sqlite3.connect(node.data_dir / "index.sqlite3")
        (count,) = db.execute("SELECT count(*) FROM instances").fetchone()
        db.close()
        assert count == 200
        assert "SCP stopped (1 association(s) drained, 0 closed)" in node.log_text()
    finally:
        node.__exit__(None, None, None)
