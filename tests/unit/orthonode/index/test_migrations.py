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

from orthonode.index.db import current_revision, downgrade, head_revision, make_engine, upgrade
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
    assert head_revision() == "0003"


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
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == ["0003"]


JOB_COLUMNS_0002 = "id, study_id, study_version, state, routes, forced, attempts, created_at, updated_at"


def _study_and_job_at_0002(engine: Engine) -> None:
    """A study with a job that a worker held and that failed once, written with 0002's column names."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO studies (study_uid, version, state, instance_count, version_started_at, "
            "last_received_at, state_changed_at) VALUES ('2.25.1', 1, 'complete', 0, "
            "'2024-01-02 10:00:00', '2024-01-02 10:00:00', '2024-01-02 10:00:00')"
        )
        conn.exec_driver_sql(
            f"INSERT INTO jobs ({JOB_COLUMNS_0002}, worker, run_after, lease_until, error) VALUES "
            "(7, 1, 1, 'pending', '[]', false, 1, '2024-01-02 10:00:00', '2024-01-02 10:01:00', "
            "'host:42:abcd', '2024-01-02 10:05:00', NULL, 'peer down')"
        )


def _columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_0003_renames_the_job_lease_columns_and_keeps_the_data(engine: Engine) -> None:
    """0002 -> 0003: ``jobs.worker`` is ``holder`` and ``jobs.run_after`` is ``next_attempt_at`` (the
    names a delivery's lease has), values kept; the downgrade gives the old names and values back."""
    upgrade(engine, "0002")
    assert {"worker", "run_after"} <= _columns(engine, "jobs")
    _study_and_job_at_0002(engine)

    upgrade(engine)
    assert current_revision(engine) == "0003"
    columns = _columns(engine, "jobs")
    assert {"holder", "next_attempt_at"} <= columns and not {"worker", "run_after"} & columns
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT id, state, attempts, holder, next_attempt_at, error FROM jobs"
        ).one()
        assert row[:4] == (7, "pending", 1, "host:42:abcd") and row[5] == "peer down"
        assert str(row[4]).startswith("2024-01-02 10:05:00")
    with engine.connect() as conn:  # the data is what the models read
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []

    downgrade(engine, "0002")
    assert current_revision(engine) == "0002"
    columns = _columns(engine, "jobs")
    assert {"worker", "run_after"} <= columns and not {"holder", "next_attempt_at"} & columns
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT id, worker, run_after FROM jobs").one()
        assert row[:2] == (7, "host:42:abcd") and str(row[2]).startswith("2024-01-02 10:05:00")
    indexes = {i["name"] for i in inspect(engine).get_indexes("jobs")}
    assert {"ix_jobs_state", "ix_jobs_study_id"} <= indexes


def test_0003_keeps_the_job_constraints(engine: Engine) -> None:
    """The rebuilt jobs table (SQLite) keeps its indexes, its one-job-per-version constraint and its
    foreign key to the study."""
    upgrade(engine, "0002")
    _study_and_job_at_0002(engine)
    upgrade(engine)
    indexes = {i["name"] for i in inspect(engine).get_indexes("jobs")}
    assert {"ix_jobs_state", "ix_jobs_study_id"} <= indexes
    uniques = {u["name"] for u in inspect(engine).get_unique_constraints("jobs")}
    assert "uq_job_study_version" in uniques
    assert [fk["referred_table"] for fk in inspect(engine).get_foreign_keys("jobs")] == ["studies"]


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
