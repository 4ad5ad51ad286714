"""Hostile input against a real node: one ``orthonode serve`` per module, fed by hypothesis
(``support.fuzz``: example counts). Each module's last test checks the node afterwards: alive, every
refusal quarantined with a reason, nothing written outside its data directory, memory bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.node import NodeProcess


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def node(fuzz_root: Path) -> Iterator[NodeProcess]:
    """A node without a worker (nothing here should ever complete into a job worth running)."""
    proc = NodeProcess(
        fuzz_root / "node",
        embedded_worker=False,
        max_instance_bytes=8 << 20,
        max_pdu=65536,
        min_free_bytes=0,
        study_quiet_seconds=3600,
        series_quiet_seconds=3600,
        web_enabled=False,
        # a connection that stops mid-PDU holds its slot until these expire: short, so the suite stays fast
        acse_timeout=3,
        network_timeout=3,
    )
    proc.start()
    yield proc
    proc.__exit__(None, None, None)
