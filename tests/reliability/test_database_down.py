"""PostgreSQL stops while a PACS is sending: every store that cannot be indexed is refused (never
acknowledged: PS3.4 B.2.3, Success means stored), nothing refused is left on disk, the node keeps
answering; when the database returns the node accepts again by itself, the PACS resends what was
refused, and the study completes once.

The database is a throw-away PostgreSQL cluster of the test's own (initdb on a free loopback port), so
stopping it disturbs no other test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from support.node import NodeProcess, jobs_of, study_of
from support.peers.ports import free_port, wait_for_port
from support.peers.synthetic import mr_series
from support.services import unavailable

from orthonode.peers.synthetic import new_study_uid, write_all

pytestmark = pytest.mark.integration

MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        unavailable(f"{name} not found: install the Debian package `postgresql`")
    return str(found)


class PostgresCluster:
    """initdb + pg_ctl in a private directory (as the ``postgres`` user when run as root)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data, self.log = root / "data", root / "server.log"

    def _run(self, *args: str) -> None:
        argv = list(args)
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    def init(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def stop(self) -> None:
        """``-m immediate``: the server goes away as in a crash, connections cut."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    root = Path(tempfile.mkdtemp(prefix="orthonode-pg-"))  # not under pytest's 0700 tmp: postgres reads it
    root.chmod(0o755)
    server = PostgresCluster(root, free_port()).init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)


def _send(port: int, files: list[Path]) -> dict[str, int]:
    """C-STORE each file on one association; the status per file name."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(MR, ["1.2.840.10008.1.2.1"])
    ae.add_requested_context(VERIFICATION)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHONODE")
    assert assoc.is_established
    statuses = {}
    try:
        for path in files:
            rsp = assoc.send_c_store(path)
            statuses[path.name] = int(rsp.Status) if "Status" in rsp else -1
        echo = assoc.send_c_echo()
        assert int(echo.Status) == 0  # the node answers throughout
    finally:
        assoc.release()
    return statuses


def test_postgres_stopped_during_receive_refuses_stores_and_recovers(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    uid = new_study_uid()
    files = write_all(mr_series(uid, n_slices=60, plane="sagittal", rows=64, cols=64), tmp_path / "study")
    node = NodeProcess(
        tmp_path / "node", database_url=cluster.url, series_quiet_seconds=15, study_quiet_seconds=15
    )
    node.start()
    try:
        first = _send(node.port, files[:20])
        assert set(first.values()) == {0}

        cluster.stop()
        down = _send(node.port, files[20:40])
        assert all(s != 0 for s in down.values()), down  # nothing acknowledged that is not indexed
        assert {s >> 8 for s in down.values()} <= {0xA7, 0xC0}, down  # Out of Resources / cannot process
        stored = [p for p in (node.data_dir / "studies").rglob("*.dcm")]
        assert len(stored) == 20  # the refused instances left nothing behind
        assert node.running

        cluster.start()
        acked = {n for n, s in first.items() if s == 0}
        for _ in range(3):  # the PACS resends what was refused (a stale pooled connection may cost one try)
            pending = [f for f in files if f.name not in acked]
            if not pending:
                break
            acked |= {n for n, s in _send(node.port, pending).items() if s == 0}
            time.sleep(1)
        assert len(acked) == 60

        def complete(status: dict[str, Any]) -> bool:
            jobs = jobs_of(status, uid)
            return len(jobs) == 1 and jobs[0]["state"] == "done"

        status = node.wait_for(complete, timeout=120, what="the study to complete once")
        study = study_of(status, uid)
        assert study is not None and (study["instances"], study["version"]) == (60, 1)
        assert len(list((node.data_dir / "studies").rglob("*.dcm"))) == 60
        assert "Traceback" not in node.log_text()  # one line per refusal, not a stack per instance
    finally:
        node.__exit__(None, None, None)
