"""Engines, sessions and schema migrations for the index (SQLite by default, PostgreSQL at scale).

SQLite is opened in WAL mode with ``synchronous=FULL`` so that a committed row survives power loss, and
every transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the busy timeout
instead of failing on a lock upgrade. Migrations are Alembic's, run at start-up under an advisory lock on
PostgreSQL so that several node processes can start together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x0127_0F0D  # arbitrary constant key for pg_advisory_xact_lock


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the settings the node relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 60, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def unreachable(exc: BaseException) -> str | None:
    """One line saying why the index database cannot be used now, when ``exc`` is the driver's word that
    it cannot be reached or has gone away (server stopped, connection cut, disk or lock trouble); ``None``
    for any other error. The line is the driver's first line only: SQLAlchemy's full message carries the
    statement and its parameters, which may hold patient data, and never goes to the log."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    cause = exc.orig if exc.orig is not None else exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return f"{type(cause).__name__}: {first[:200]}"


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception."""
    with factory() as session, session.begin():
        yield session


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(engine: Engine, target: str = "head") -> None:
    """Bring the schema to ``target``, the newest migration by default (idempotent; safe with concurrent
    callers)."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def downgrade(engine: Engine, target: str) -> None:
    """Take the schema back to the migration ``target``. No command calls it yet: the migration tests step
    through revisions with it, and an operator going back to an older node runs it (or Alembic) by hand."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, target)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
