"""Fixtures shared by the whole suite: real peers and the node as real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (real DICOM and knee radiographs); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see README 'Data')")
    return SHARED_DATA


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Any]:
    """A real Orthanc (Debian `orthanc`) on free loopback ports."""
    from support.services import require_binary

    from orthonode.peers.orthanc import Orthanc

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
