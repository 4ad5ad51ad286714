"""Durable, UID-safe storage of received instances.

Layout under the data directory::

    incoming/                      files being received (same filesystem, so the final rename is atomic)
    studies/<hh>/<study>/<series>/<sop>.<sha256[:16]>.dcm
    quarantine/<utc time>-<token>.dcm  and  .reason.txt

``<hh>`` is a 2-hex-digit shard of the study UID's hash. A path component is only ever a UID that passed
:func:`validate_uid` (PS3.5 §9.1: digits and dots, at most 64 characters, no leading zeros in a
component), so a UID received from the network can never name a path outside the tree. A file is
written, fsynced, renamed into place, and its directory fsynced before the index records it
("acknowledge only what is durable").
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orthonode.errors import InvalidUID, StorageError

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_CHUNK = 1 << 20


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a valid DICOM UID (PS3.5 §9.1), else raise :class:`InvalidUID`."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{what} {shown} is not a valid DICOM UID (PS3.5 9.1)")
    return str(value)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_and_sync(path: Path) -> tuple[str, int]:
    """SHA-256 and size of ``path``, after forcing its content to stable storage."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb+") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest(), size


@dataclass(frozen=True)
class StoredFile:
    rel_path: str
    sha256: str
    size: int
    already_present: bool  # the same bytes were already stored under this path


class InstanceStore:
    """The node's files: received instances, incoming temporaries and quarantine."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.incoming = data_dir / "incoming"
        self.studies = data_dir / "studies"
        self.quarantine_dir = data_dir / "quarantine"
        for d in (self.incoming, self.studies, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- layout -----------------------------------------------------------------------------------
    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
        study = validate_uid(study_uid, "Study Instance UID")
        series = validate_uid(series_uid, "Series Instance UID")
        sop = validate_uid(sop_uid, "SOP Instance UID")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        shard = hashlib.sha256(study.encode()).hexdigest()[:2]
        return f"studies/{shard}/{study}/{series}/{sop}.{sha256[:16]}.dcm"

    def absolute(self, rel_path: str) -> Path:
        path = (self.root / rel_path).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise StorageError(f"path escapes the data directory: {rel_path!r}")
        return path

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    # -- writing ----------------------------------------------------------------------------------
    def new_incoming_path(self, suffix: str = ".part") -> Path:
        return self.incoming / f"{secrets.token_hex(12)}{suffix}"

    def write_incoming(self, data: bytes) -> Path:
        """Write ``data`` to a new file in ``incoming/`` (not yet synced)."""
        path = self.new_incoming_path()
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def commit(self, src: Path, rel_path: str, sha256: str, size: int) -> StoredFile:
        """Move the received file ``src`` (already hashed and synced) to ``rel_path`` atomically.

        If the destination exists, its content has the same SOP Instance UID and hash prefix; it is
        kept and ``src`` is removed.
        """
        dst = self.absolute(rel_path)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                src.unlink(missing_ok=True)
                return StoredFile(rel_path, sha256, size, already_present=True)
            try:
                src.replace(dst)
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: src on another filesystem; copy then sync
                    raise
                tmp = dst.with_suffix(".part")
                shutil.copyfile(src, tmp)
                hash_and_sync(tmp)
                tmp.replace(dst)
                src.unlink(missing_ok=True)
            fsync_dir(dst.parent)
            fsync_dir(dst.parent.parent)
        except OSError as exc:
            raise StorageError(f"cannot store {rel_path}: {exc}") from exc
        return StoredFile(rel_path, sha256, size, already_present=False)

    def remove(self, rel_path: str) -> None:
        self.absolute(rel_path).unlink(missing_ok=True)

    def quarantine(self, src: Path, reason: str, context: dict[str, str]) -> Path:
        """Keep a rejected file with a reason file beside it; returns the quarantined path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        base = self.quarantine_dir / f"{stamp}-{secrets.token_hex(4)}"
        dst = base.with_suffix(".dcm")
        try:
            src.replace(dst)
        except OSError:
            shutil.copyfile(src, dst)
        lines = [f"reason: {reason}", *(f"{k}: {v}" for k, v in sorted(context.items()))]
        base.with_suffix(".reason.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return dst

    def sweep_incoming(self, older_than_seconds: float = 3600.0) -> int:
        """Remove stale temporaries left by a crash mid-transfer (never acknowledged); returns count."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        removed = 0
        for path in self.incoming.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
