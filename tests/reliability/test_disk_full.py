"""Free disk below the watermark: new stores are refused with 0xA700 and nothing half-written is left;
when space returns the node accepts again by itself (no restart, no operator).

The data directory is a small tmpfs (mounted by the test, so the disk really runs low) holding a filler
file; removing the filler is "space returns".
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, _config
from support.node import NodeProcess
from support.peers.synthetic import mr_series, new_study_uid, write_all

pytestmark = pytest.mark.integration

MR = "1.2.840.10008.5.1.4.1.1.4"
MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def _send(port: int, files: list[Path]) -> list[int]:
    """One association; the status of each C-STORE."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="PACS")
    ae.add_requested_context(MR, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHONODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in files]
    finally:
        assoc.release()


def test_low_disk_refuses_with_a700_leaves_nothing_behind_and_recovers(
    small_disk: Path, tmp_path: Path
) -> None:
    files = write_all(mr_series(new_study_uid(), n_slices=40, rows=512, cols=512), tmp_path / "study")
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (20 * MIB))  # leaves about 28 MiB; the watermark is 16 MiB
    node = NodeProcess(
        tmp_path / "node", data_dir=small_disk / "data", min_free_bytes=16 * MIB, embedded_worker=False,
        web_enabled=False, study_quiet_seconds=3600, series_quiet_seconds=3600,
    )  # fmt: skip
    node.start()
    try:
        statuses = _send(node.port, files)
        accepted = [f for f, s in zip(files, statuses, strict=True) if s == 0]
        refused = [f for f, s in zip(files, statuses, strict=True) if s != 0]
        assert accepted and refused, statuses  # the disk ran low part-way
        assert set(statuses) == {0x0000, 0xA700}, statuses  # refusals are "out of resources", nothing else
        first_refusal = statuses.index(0xA700)
        assert all(s == 0xA700 for s in statuses[first_refusal:])  # once low, low until space returns

        data = node.data_dir
        assert not list((data / "incoming").iterdir()), "half-written files left in incoming/"
        db = sqlite3.connect(data / "index.sqlite3")
        rows = db.execute("SELECT rel_path, sha256 FROM instances").fetchall()
        db.close()
        assert len(rows) == len(accepted)
        for rel, sha in rows:
            assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == sha
        stored = [p for p in (data / "studies").rglob("*.dcm")]
        assert len(stored) == len(accepted)  # nothing refused was kept as a study file

        filler.unlink()  # space returns
        again = _send(node.port, refused)
        assert again == [0] * len(refused), again  # accepted again, by itself
        assert node.running
    finally:
        node.__exit__(None, None, None)
