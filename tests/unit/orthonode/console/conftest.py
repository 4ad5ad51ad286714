"""Fixtures of the console tests: a populated index (support.console) and a client of the app over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.console import TOKEN, Fixture, populate
from support.runtime import isolated_settings

from orthonode.console.app import ConsoleContext, create_app
from orthonode.runtime import Runtime


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def make_console(tmp_path: Path, now: datetime) -> Iterator[Callable[..., tuple[Fixture, TestClient]]]:
    """``make_console(**settings)``: a populated index and a client of the console over it."""
    opened: list[tuple[Runtime, TestClient]] = []

    def factory(**settings: Any) -> tuple[Fixture, TestClient]:
        values = {
            "data_dir": tmp_path / f"data{len(opened)}",
            "min_free_bytes": 0,
            "web_token": TOKEN,
            "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}],
            **settings,
        }
        rt = Runtime(isolated_settings(**values))
        rt.migrate()
        fixture = populate(rt, now)
        client = TestClient(create_app(ConsoleContext(rt)))
        opened.append((rt, client))
        return fixture, client

    yield factory
    for rt, client in opened:
        client.close()
        rt.close()


@pytest.fixture
def console(make_console: Callable[..., tuple[Fixture, TestClient]]) -> tuple[Fixture, TestClient]:
    return make_console()
