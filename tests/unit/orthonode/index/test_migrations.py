"""Tests of the index schema migrations (orthonode.index.db.upgrade and the Alembic scripts).

Every test starts from an EMPTY database: a new SQLite file, or a new PostgreSQL database (tests/conftest.py
``postgres_db``: skipped outside CI when PostgreSQL is not reachable, a failure when CI is set).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from support.index import open_index

from orthonode.index.db import current_revision, head_revision, make_engine, upgrade
from orthonode.index.models import Base

TABLES = {"alembic_version", "studies", "series", "instances", "jobs", "results", "deliveries"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'index.sqlite3'}"  # the folder does not exist yet
    url: str = request.getfixturevalue("postgres_db")
    return url


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    eng = make_engine(empty_url)
    try:
        yield eng
    finally:
        eng.dispose()


def test_head_revision() -> None:
    assert head_revision() == "0002"


def test_upgrade_empty_database_reaches_head(engine: Engine) -> None:
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) == set()
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) == TABLES


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO studies (study_uid, version, state, instance_count, version_started_at, "
            "last_received_at, state_changed_at) VALUES ('2.25.1', 1, 'receiving', 0, "
            "'2024-01-02 10:00:00', '2024-01-02 10:00:00', '2024-01-02 10:00:00')"
        )
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT study_uid FROM studies").scalars().all() == ["2.25.1"]
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == ["0002"]


def test_opening_does_not_migrate_and_migrate_does(tmp_path: Path) -> None:
    """The runtime opens the index without touching it; only Runtime.migrate (``orthonode migrate``, serve,
    worker) changes the schema, and the read-and-act commands refuse an outdated one by name."""
    from support.runtime import isolated_settings

    from orthonode.errors import SchemaOutOfDate
    from orthonode.runtime import Runtime

    rt = Runtime(isolated_settings(data_dir=tmp_path))
    try:
        assert current_revision(rt.engine) is None
        with pytest.raises(SchemaOutOfDate, match="run `orthonode migrate`"):
            rt.require_current_schema()
        assert current_revision(rt.engine) is None
        rt.migrate()
        assert current_revision(rt.engine) == head_revision()
        rt.require_current_schema()
        with rt.sessions() as session:
            assert session.get_bind() is rt.engine
    finally:
        rt.close()


def test_models_match_migrations(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_sqlite_pragmas(tmp_path: Path) -> None:
    eng, _ = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        eng.dispose()


def test_concurrent_upgrades_on_postgresql(postgres_db: str) -> None:
    """Several node processes starting together on a fresh database: the advisory lock serialises them."""
    engines = [make_engine(postgres_db) for _ in range(3)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(eng: Engine) -> None:
        try:
            barrier.wait(timeout=10)
            upgrade(eng)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(eng,), daemon=True) for eng in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
        with engines[0].connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        assert set(inspect(engines[0]).get_table_names()) == TABLES
    finally:
        for eng in engines:
            eng.dispose()
