"""An index opened for a test: engine and session factory, the schema migrated to head."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orthonode.index.db import make_engine, session_factory, upgrade


def open_index(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Engine and session factory for ``url``, with the schema migrated to head."""
    engine = make_engine(url)
    upgrade(engine)
    return engine, session_factory(engine)
