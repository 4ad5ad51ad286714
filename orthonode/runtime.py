"""What a node process holds: settings, the file store (with its fsync threads), the index and the
loaded models. Built lazily, once per process (a forked worker child builds its own engine and fsync
threads rather than sharing the parent's); no module of the node keeps any of it as module state.

Opening the index never changes it: the schema is migrated by :meth:`Runtime.migrate`, which
``orthonode migrate``, ``serve`` and ``worker`` call at start-up; the read-and-act commands (``status``,
``retry``) check that the schema is current and name the command that fixes it when it is not."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orthonode.dicom.storage import InstanceStore
from orthonode.errors import SchemaOutOfDate
from orthonode.index import db
from orthonode.settings import Settings

if TYPE_CHECKING:
    from orthonode.inference.pipeline import ModelCache


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()

    @cached_property
    def store(self) -> InstanceStore:
        return InstanceStore(self.settings.data_dir)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.effective_database_url)

    def migrate(self) -> None:
        """Bring the index schema to the newest migration (idempotent; safe with concurrent callers)."""
        db.upgrade(self.engine)

    def require_current_schema(self) -> None:
        """Raise :class:`SchemaOutOfDate` unless the index schema is at the newest migration."""
        current, head = db.current_revision(self.engine), db.head_revision()
        if current != head:
            raise SchemaOutOfDate(
                f"the index schema is at revision {current or 'none'}, this node needs {head}: "
                "run `orthonode migrate`"
            )

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.engine)

    @cached_property
    def models(self) -> ModelCache:
        """The models this process loaded (each once, on first use by a job)."""
        from orthonode.inference.pipeline import ModelCache  # torch: only processes that run jobs load it

        return ModelCache()

    def after_fork(self) -> None:
        """Drop connections and helper threads inherited from a parent process."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            if "engine" in self.__dict__:
                self.engine.dispose(close=False)
            if "store" in self.__dict__:
                self.store.after_fork()

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "store" in self.__dict__:
            self.store.close()
