"""The index each test of orthonode.index runs on: SQLite and PostgreSQL.

Each test starts from an empty index: a new SQLite file under tmp_path, or emptied tables (identities
reset) in a PostgreSQL database created once for the session and dropped afterwards (skipped outside
CI when PostgreSQL is not reachable, a failure when CI is set).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.index import open_index
from support.index_rows import Index, empty_tables


@pytest.fixture(scope="session")
def pg_index() -> Iterator[Index]:
    """A new PostgreSQL database, opened with open_index (migrated to head), through
    tests/support/services.py.

    Each test then starts from empty tables with reset identities (see ``index``): CREATE DATABASE is
    fsync-bound here (0.15-0.4 s), so a database per test would double the run time. The migrations
    themselves are tested on truly empty databases in test_migrations.py.
    """
    from support.services import fresh_postgres_database, postgres_url

    with fresh_postgres_database(postgres_url()) as url:
        engine, sessions = open_index(url)
        try:
            yield Index(engine, sessions, "postgresql")
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    """An empty index per test: a new SQLite file, or emptied tables in the PostgreSQL database."""
    if request.param == "postgresql":
        pg: Index = request.getfixturevalue("pg_index")
        empty_tables(pg.engine)
        yield pg
        return
    engine, sessions = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        yield Index(engine, sessions, "sqlite")
    finally:
        engine.dispose()
