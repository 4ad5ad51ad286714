"""Logging set-up for the entry points (modules only call ``logging.getLogger(__name__)``).

Every record carries ``job`` (the job id being worked on, from a context variable, or ``-``), so that all
lines about one study's processing can be found together. Patient name, id and birth date are never
logged by the node's own code (there is no setting that turns them on).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current_job: ContextVar[str] = ContextVar("orthonode_job", default="-")
FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s [job %(job)s] %(message)s"


class JobContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job = _current_job.get()
        return True


@contextmanager
def job_context(job_id: int | str) -> Iterator[None]:
    token = _current_job.set(str(job_id))
    try:
        yield
    finally:
        _current_job.reset(token)


class PeerErrorFilter(logging.Filter):
    """pynetdicom logs a full traceback (``LOGGER.exception``) for every PDU it cannot read -- a reset
    connection, an unknown item type, a lying length. That is the peer's fault, handled (the association
    is aborted or closed), and a hostile peer could fill the log with it: the record keeps one line
    naming the exception, without the traceback (kept at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pynetdicom") and record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"peer input not understood: {type(exc).__name__}: {exc}"[:300], ()
            record.exc_info, record.exc_text = None, None
        return True


def configure(level: str = "INFO") -> None:
    """Configure the root logger once, for an entry point (CLI command, worker)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_orthonode", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobContextFilter())
    if level != "DEBUG":
        handler.addFilter(PeerErrorFilter())
    handler._orthonode = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom logs every PDU at DEBUG and each association at INFO: keep it at WARNING unless debugging.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # highdicom logs each module it copies from a source at INFO (several lines per created object).
    logging.getLogger("highdicom").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
