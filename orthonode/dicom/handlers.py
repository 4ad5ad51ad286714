"""The C-ECHO and C-STORE handlers (PS3.4 Annex A and B): thin, as in pynetdicom's qrscp app.

A C-STORE is acknowledged with Success only after the received bytes are renamed into place, fsynced
with their directory, and indexed in a committed transaction. No decoding of pixels, no inference, no
network calls here. Every refusal is a *named* status (:class:`~orthonode.dicom.contexts.StoreStatus`)
with an Error Comment, and one log line that names the problem but no patient identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from orthonode import metrics
from orthonode.dicom.contexts import StoreStatus
from orthonode.dicom.header import read_header
from orthonode.dicom.storage import InstanceStore, file_sha256
from orthonode.errors import RejectedInstance
from orthonode.index import db, studies
from orthonode.index.db import transaction
from orthonode.index.models import utcnow
from orthonode.index.studies import InstanceRefused, RecordOutcome, Refusal, StoredCopy
from orthonode.settings import Settings

log = logging.getLogger(__name__)


def status(code: int, comment: str | None = None) -> Dataset:
    """A C-STORE response status with an Error Comment (0000,0902), at most 64 characters (LO)."""
    ds = Dataset()
    ds.Status = int(code)
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def _known_sha256(known: tuple[Future[str], int] | None, size: int) -> str | None:
    """The digest computed while the file arrived, if it covers the file's ``size`` bytes."""
    if known is None or known[1] != size:
        return None
    try:
        return known[0].result()
    except Exception:  # the transfer's hashing failed: the handler reads the file instead
        log.debug("no digest from the transfer", exc_info=True)
        return None


#: What the C-STORE answers when the index refuses an instance, and whether the bytes are quarantined.
REFUSAL_STATUS: dict[Refusal, tuple[StoreStatus, bool]] = {
    Refusal.STUDY_FULL: (StoreStatus.STUDY_TOO_LARGE, False),
    Refusal.SERIES_OF_ANOTHER_STUDY: (StoreStatus.IDENTIFIER_MISMATCH, True),
}


def rejected(refused: InstanceRefused) -> RejectedInstance:
    """The named C-STORE status (PS3.4 B.2.3) for an instance the index refuses."""
    code, quarantine = REFUSAL_STATUS[refused.refusal]
    return RejectedInstance(code, refused.detail, quarantine=quarantine)


def _wait_quietly(future: Future[None]) -> None:
    try:
        future.result()
    except Exception:  # the instance is refused anyway; its fsync error changes nothing
        log.debug("fsync of a refused instance failed", exc_info=True)


def _peer(event: Any) -> str:
    req = event.assoc.requestor
    return f"{req.ae_title}@{req.address}:{req.port}"


class StoreHandlers:
    """Handlers bound to one running SCP."""

    def __init__(
        self,
        settings: Settings,
        store: InstanceStore,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.clock = clock

    def on_echo(self, event: Any) -> int:
        log.info("C-ECHO from %s", _peer(event))
        return StoreStatus.SUCCESS

    def on_store(self, event: Any) -> Dataset | int:
        peer = _peer(event)
        received: Path | None = None
        try:
            received = self._received_file(event)
            return self._store(event, received, peer)
        except RejectedInstance as exc:
            log.warning("C-STORE from %s refused 0x%04X: %s", peer, exc.status, exc.reason)
            metrics.STORE_REFUSED.labels(status=f"0x{exc.status:04X}").inc()
            if received is not None and exc.quarantine and received.exists():
                kept = self.store.quarantine(
                    received,
                    exc.reason,
                    {
                        "status": f"0x{exc.status:04X}",
                        "calling_aet": str(event.assoc.requestor.ae_title),
                        "peer": peer,
                        "received_at": self.clock().isoformat(),
                    },
                )
                log.warning("quarantined as %s", kept.name)
            return status(exc.status, exc.reason)
        except Exception as exc:
            reason = db.unreachable(exc)
            if reason is None:
                log.exception("C-STORE from %s failed inside the node; answered Out of Resources", peer)
            else:  # one line per refusal while the database is away, not a stack trace each
                log.error(
                    "C-STORE from %s refused 0xA700: the index database is unavailable (%s)", peer, reason
                )
            metrics.STORE_REFUSED.labels(status=f"0x{StoreStatus.OUT_OF_RESOURCES:04X}").inc()
            return status(StoreStatus.OUT_OF_RESOURCES, "internal error in the receiving node; retry later")
        finally:
            if received is not None and received.parent == self.store.incoming:
                received.unlink(missing_ok=True)

    def _received_file(self, event: Any) -> Path:
        try:
            return Path(event.dataset_path)  # STORE_RECV_CHUNKED_DATASET: already on disk in incoming/
        except AttributeError:
            return self.store.write_incoming(event.encoded_dataset())

    def _store(self, event: Any, received: Path, peer: str) -> Dataset | int:
        if self.store.free_bytes() < self.settings.min_free_bytes:
            raise RejectedInstance(
                StoreStatus.OUT_OF_RESOURCES, "free disk space below the node's watermark", quarantine=False
            )
        size = received.stat().st_size
        if size > self.settings.max_instance_bytes:
            raise RejectedInstance(
                StoreStatus.INSTANCE_TOO_LARGE,
                f"instance of {size} bytes exceeds max_instance_bytes {self.settings.max_instance_bytes}",
                quarantine=False,
            )
        request = event.request
        # The file's fsync starts on a helper thread while this one parses it; its SHA-256 was usually
        # worked out while the bytes arrived (orthonode.dicom.transport), else it is read here.
        known = self.store.received_digests.take(received)
        synced = self.store.sync_async(received)
        try:
            header = read_header(
                received,
                affected_sop_class=str(request.AffectedSOPClassUID),
                affected_sop_instance=str(request.AffectedSOPInstanceUID),
            )
            sha256 = _known_sha256(known, size)
            if sha256 is None:
                sha256, size = file_sha256(received)
            rel_path = self.store.relative_path(
                header.study_uid, header.series_uid, header.sop_instance_uid, sha256
            )
        except BaseException:
            _wait_quietly(synced)  # before the file is quarantined or removed
            raise
        # renamed into place while that fsync runs, its directory fsynced beside it: durable on return
        # (an fsync error is raised here: answered Out of Resources)
        stored = self.store.commit(received, rel_path, sha256, size, synced)
        try:
            with transaction(self.sessions) as session:
                recorded = studies.record_instance(
                    session,
                    header,
                    StoredCopy(stored.rel_path, stored.sha256, stored.size),
                    calling_aet=str(event.assoc.requestor.ae_title),
                    now=self.clock(),
                    max_instances_per_study=self.settings.max_instances_per_study,
                )
        except Exception as exc:
            if not stored.already_present:
                self.store.remove(rel_path)
            if isinstance(exc, InstanceRefused):
                raise rejected(exc) from exc
            raise
        if recorded.outcome is RecordOutcome.NEW_REVISION:
            log.warning(
                "instance %s received again with different content: kept as revision %d (study %s)",
                header.sop_instance_uid,
                recorded.revision,
                header.study_uid,
            )
        if recorded.reopened:
            log.info(
                "study %s received a late instance: version %d begins",
                header.study_uid,
                recorded.study_version,
            )
        log.debug("stored %s from %s (%s)", header.sop_instance_uid, peer, recorded.outcome)
        metrics.INSTANCES_RECEIVED.labels(outcome=str(recorded.outcome)).inc()
        metrics.BYTES_RECEIVED.inc(size)
        return StoreStatus.SUCCESS
