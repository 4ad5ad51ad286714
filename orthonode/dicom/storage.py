"""Durable, UID-safe storage of received instances.

Layout under the data directory::

    incoming/                      files being received (same filesystem, so the final rename is atomic)
    studies/<hh>/<study>/<series>/<sop>.<sha256[:16]>.dcm
    quarantine/<utc time>-<token>.dcm  and  .reason.txt

``<hh>`` is a 2-hex-digit shard of the study UID's hash. A path component is only ever a UID that passed
:func:`validate_uid` (PS3.5 §9.1: digits and dots, at most 64 characters, no leading zeros in a
component), so a UID received from the network can never name a path outside the tree. A file is
written, renamed into place, and it and its directory fsynced before the index records it
("acknowledge only what is durable"; :meth:`InstanceStore.commit`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import secrets
import shutil
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orthonode.errors import StorageError
from orthonode.uid import validate_uid

_CHUNK = 1 << 20
_SYNC_THREADS = 8
_DURABLE_DIRS_LIMIT = 100_000


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-out of dirty pages in the range, do not wait


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk now, without
    waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; nothing elsewhere). Only a head start
    for the fsync that follows: it guarantees nothing by itself."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsyncPool:
    """Helper threads that force files to stable storage, started on first use. One belongs to each
    :class:`InstanceStore` (and so to the process's ``Runtime``); a forked child drops its parent's
    (threads do not survive a fork) and starts its own."""

    def __init__(self, threads: int = _SYNC_THREADS) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def sync_async(self, path: Path) -> Future[None]:
        """Start forcing ``path``'s content to stable storage on a helper thread and return at once.

        fsync waits on the disk with the GIL released, so the caller can parse and hash the file
        meanwhile; it must wait on the returned future (which raises fsync's error) before relying on
        durability.
        """
        fd = os.open(path, os.O_RDWR)
        try:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="orthonode-fsync")
                return self._pool.submit(_fsync_and_close, fd)
        except BaseException:
            os.close(fd)
            raise

    def hash_and_sync(self, path: Path) -> tuple[str, int]:
        """SHA-256 and size of ``path``, after forcing its content to stable storage (the fsync runs
        while the file is hashed)."""
        synced = self.sync_async(path)
        try:
            result = file_sha256(path)
        finally:
            synced.result()
        return result

    def after_fork(self) -> None:
        """In a forked child: forget the parent's threads (they did not survive the fork)."""
        self._pool = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the helper threads once the syncs in flight are done (a later sync starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of ``path`` (read in 1 MiB chunks; hashlib releases the GIL on each)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ReceivedDigests:
    """SHA-256 (as a future: it may still be computing) and size of received files, worked out by the
    SCP's transport while the bytes arrived, for the C-STORE handler to take instead of reading the
    file again. Bounded: an entry nobody takes (an association aborted between the last fragment and
    its handler) is dropped oldest first."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, tuple[Future[str], int]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, path: Path, sha256: Future[str], size: int) -> None:
        with self._lock:
            self._entries[str(path)] = (sha256, size)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def take(self, path: Path) -> tuple[Future[str], int] | None:
        with self._lock:
            return self._entries.pop(str(path), None)


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
        self.received_digests = ReceivedDigests()
        self.fsync = FsyncPool()
        self._real_root = self.root.resolve()
        self._durable_dirs: set[Path] = set()  # directories whose own entry this process made durable
        self._durable_lock = threading.Lock()

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

    def sync_async(self, path: Path) -> Future[None]:
        return self.fsync.sync_async(path)

    def after_fork(self) -> None:
        """In a forked child: nothing of the parent's helper threads is reused."""
        self.fsync.after_fork()

    def close(self) -> None:
        self.fsync.close()

    def _make_durable_dir(self, directory: Path) -> None:
        """Create ``directory`` (and its missing parents under the data directory) so that its entry
        survives a power cut: the parent of each directory not yet known durable is fsynced once per
        process, so a later rename into ``directory`` needs only ``directory`` itself fsynced."""
        chain: list[Path] = []
        current = directory
        while current != self._real_root and current.parent != current:
            with self._durable_lock:
                if current in self._durable_dirs:
                    break
            chain.append(current)
            current = current.parent
        for path in reversed(chain):
            path.mkdir(exist_ok=True)
            fsync_dir(path.parent)
            with self._durable_lock:
                if len(self._durable_dirs) >= _DURABLE_DIRS_LIMIT:
                    self._durable_dirs.clear()  # forgetting only costs an extra fsync later
                self._durable_dirs.add(path)

    def commit(
        self, src: Path, rel_path: str, sha256: str, size: int, synced: Future[None] | None = None
    ) -> StoredFile:
        """Move the received file ``src`` to ``rel_path`` and force its bytes and its new directory entry
        to stable storage; only then may the index record it and the sender be answered Success.

        The two fsyncs overlap: the file's runs on a helper thread (``synced``, when the caller started
        it as soon as the bytes were in, e.g. while it parsed them; else it starts after the rename)
        while the directory's runs here, so that a journalling filesystem (ext4, XFS) commits both in
        one journal transaction instead of one after the other (on this project's VMs about 3 ms
        instead of about 10 per instance). The directories above were made durable when they were
        created (:meth:`_make_durable_dir`).

        Until both fsyncs return nothing is indexed or acknowledged, so a crash in between leaves at
        most an *unindexed* file at ``rel_path``, possibly short. A later copy of the same instance
        (the sender resends what was not acknowledged) therefore trusts an existing destination only
        if it has the instance's size and its bytes hash to ``sha256`` (a short leftover is told by its
        size alone, without reading it): then it is kept, forced to disk again (cheap when it already
        is) and ``src`` removed; otherwise it is that leftover, and it is replaced by ``src`` only
        after ``src`` itself is on disk, so that a good file is never swapped for unsynced bytes.
        """
        dst = self.absolute(rel_path)
        try:
            self._make_durable_dir(dst.parent)
            if dst.exists():
                if synced is not None:
                    synced.result()
                if dst.stat().st_size == size and file_sha256(dst)[0] == sha256:
                    self._sync_entry(dst)
                    src.unlink(missing_ok=True)
                    return StoredFile(rel_path, sha256, size, already_present=True)
                # a leftover of an interrupted store: replaced, by bytes already on disk
                (synced or self.fsync.sync_async(src)).result()
                synced = None
            try:
                src.replace(dst)
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: src on another filesystem; copy then sync
                    raise
                tmp = dst.with_suffix(".part")
                shutil.copyfile(src, tmp)
                self.fsync.hash_and_sync(tmp)
                tmp.replace(dst)
                src.unlink(missing_ok=True)
            self._sync_entry(dst, synced)
        except OSError as exc:
            raise StorageError(f"cannot store {rel_path}: {exc}") from exc
        return StoredFile(rel_path, sha256, size, already_present=False)

    def _sync_entry(self, path: Path, synced: Future[None] | None = None) -> None:
        """fsync ``path`` (on a helper thread, or the fsync already running as ``synced``) and its
        directory (here) at the same time; both are waited for, and the first error is raised."""
        if synced is None:
            synced = self.fsync.sync_async(path)
        try:
            fsync_dir(path.parent)
        finally:
            synced.result()

    def write_result(self, job_id: int, sop_uid: str, kind: str, data: bytes) -> str:
        """Write one produced object (SR, SC) durably to ``results/<job>/<kind>-<SOP UID>.dcm``.

        Written to a temporary name, fsynced, renamed, directory fsynced: a crash leaves either no file or
        the whole file. Rewriting the same object replaces it (same name: same SOP Instance UID)."""
        sop = validate_uid(sop_uid, "SOP Instance UID")
        if not re.fullmatch(r"[a-z]{2,8}", kind):
            raise ValueError(f"bad result kind {kind!r}")
        rel_path = f"results/{int(job_id)}/{kind}-{sop}.dcm"
        dst = self.absolute(rel_path)
        try:
            self._make_durable_dir(dst.parent)
            tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.part")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(dst)
            fsync_dir(dst.parent)
        except OSError as exc:
            raise StorageError(f"cannot write result {rel_path}: {exc}") from exc
        return rel_path

    def remove(self, rel_path: str) -> None:
        self.absolute(rel_path).unlink(missing_ok=True)

    def quarantine(self, src: Path, reason: str, context: dict[str, str]) -> Path:
        """Keep a rejected file with a reason file beside it; returns the quarantined path."""
        name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"
        dst = self.quarantine_dir / f"{name}.dcm"
        try:
            src.replace(dst)
        except OSError:
            shutil.copyfile(src, dst)
        lines = [f"reason: {reason}", *(f"{k}: {v}" for k, v in sorted(context.items()))]
        (self.quarantine_dir / f"{name}.reason.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
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
