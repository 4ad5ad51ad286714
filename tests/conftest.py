"""Fixtures shared by the whole suite: real peers and the node as real processes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a record whose arguments do not format: nothing of it reaches a log either
            pass


@pytest.fixture(autouse=True)
def no_patient_identifiers_in_logs() -> Iterator[None]:
    """Every test: no patient name, ID or birth date of the test data in what it logged -- the node and
    worker processes' log files and the test process's own records (``support.phi``)."""
    from support import node, phi

    first = len(node.LOG_FILES)
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        yield
    finally:
        root.removeHandler(records)
    texts = [("test process log", "\n".join(records.lines))]
    texts += [(p.name, p.read_text(errors="replace")) for p in node.LOG_FILES[first:] if p.exists()]
    found = phi.leaks(texts)
    if found:
        pytest.fail("patient identifiers in the logs: " + "; ".join(found))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (real DICOM and knee radiographs); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see README 'Data')")
    return SHARED_DATA


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Any]:
    """A real Orthanc (Debian `orthanc`) on free loopback ports."""
    from support.peers.orthanc import Orthanc
    from support.services import require_binary

    require_binary("Orthanc", "orthanc")
    with Orthanc(tmp_path / "orthanc") as pacs:
        yield pacs


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory of ``orthonode serve`` processes; each gets its own data directory and free port."""
    from support.node import NodeProcess

    nodes: list[NodeProcess] = []

    def factory(name: str = "node", **settings: Any) -> NodeProcess:
        node = NodeProcess(tmp_path / name, **settings)
        nodes.append(node)
        return node.start()

    yield factory
    for node in nodes:
        node.__exit__(None, None, None)


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards); skips or fails (CI) without PostgreSQL."""
    from support.services import fresh_postgres_database, postgres_url

    with fresh_postgres_database(postgres_url()) as url:
        yield url
