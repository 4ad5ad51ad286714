"""What a node process holds: settings, the file store and the index. Built lazily, once per process
(a forked worker child builds its own engine rather than sharing the parent's connections)."""

from __future__ import annotations

import os
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orthonode.dicom.storage import InstanceStore
from orthonode.index import db
from orthonode.settings import Settings


class Runtime:
    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._migrate = migrate
        self._pid = os.getpid()

    @cached_property
    def store(self) -> InstanceStore:
        return InstanceStore(self.settings.data_dir)

    @cached_property
    def engine(self) -> Engine:
        engine = db.make_engine(self.settings.effective_database_url)
        if self._migrate:
            db.upgrade(engine)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.engine)

    def after_fork(self) -> None:
        """Drop connections inherited from a parent process."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            if "engine" in self.__dict__:
                self.engine.dispose(close=False)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
