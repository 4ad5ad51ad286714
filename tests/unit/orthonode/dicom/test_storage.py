"""Tests of orthonode.dicom.storage: UID validation, the file layout, atomic commit, quarantine, sweeping."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from orthonode.dicom.storage import FsyncPool, InstanceStore, StoredFile
from orthonode.errors import InvalidUID, StorageError
from orthonode.uid import is_valid_uid, validate_uid

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.2"
SOP = "1.2.826.0.1.3680043.8.498.1.2.3"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> InstanceStore:
    return InstanceStore(tmp_path / "data")


def received(store: InstanceStore, data: bytes) -> tuple[Path, str, int]:
    """A file in incoming/ as the handler has it before commit: written, hashed, synced."""
    path = store.write_incoming(data)
    digest, size = store.fsync.hash_and_sync(path)
    return path, digest, size


# --------------------------------------------------------------------------------------------- UIDs


@pytest.mark.parametrize(
    "uid",
    [
        "1.2",
        "0.0",
        "1.2.840.10008.5.1.4.1.1.4",
        "2.25.329800735698586629295641978511506172918",
        "1.2.0.3",
        "1." + "2" * 62,  # exactly 64 characters
        "1.2.3.10.100",
    ],
)
def test_valid_uids_are_accepted(uid: str) -> None:
    assert is_valid_uid(uid) is True
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    [
        "../../etc",
        "../../etc/passwd",
        "",
        "1",
        "1..2",
        ".1.2",
        "1.2.",
        "01.2",
        "1.02",
        "1.2.00",
        "1." + "2" * 63,  # 65 characters
        "1.2/3",
        "1.2\\3",
        "1.2.3 ",
        " 1.2.3",
        "1.2.a",
        "1.2.-3",
        "1.2.+3",
        "\u0661.\u0662",  # Arabic-Indic digits: str.isdigit() is true for them
        "1.\u0662",
        "\uff11.\uff12",  # fullwidth digits
        "1.2\x00",
        "/1.2",
    ],
)
def test_invalid_uids_are_rejected(uid: str) -> None:
    assert is_valid_uid(uid) is False
    with pytest.raises(InvalidUID, match=r"not a valid DICOM UID \(PS3\.5 9\.1\)"):
        validate_uid(uid, "Study Instance UID")


@pytest.mark.parametrize("value", [None, 1.2, 12, b"1.2", ["1", "2"], ("1.2",), object()])
def test_non_strings_are_rejected(value: object) -> None:
    assert is_valid_uid(value) is False
    with pytest.raises(InvalidUID):
        validate_uid(value)


def test_invalid_uid_message_names_what_and_is_bounded() -> None:
    with pytest.raises(InvalidUID) as info:
        validate_uid("9" * 500, "Series Instance UID")
    message = str(info.value)
    assert message.startswith("Series Instance UID '999")
    assert len(message) < 160


@pytest.mark.parametrize("uid", ["1.2.3\n", "1.2.3\r\n", "\n1.2.3", "1.2\n.3"])
def test_uid_with_newline_is_rejected(uid: str) -> None:
    """(A regex ending in '$' also matches before a trailing newline: the check must use fullmatch.)"""
    assert is_valid_uid(uid) is False
    with pytest.raises(InvalidUID):
        validate_uid(uid)


# --------------------------------------------------------------------------------------------- layout


def test_store_creates_its_folders(tmp_path: Path) -> None:
    s = InstanceStore(tmp_path / "new" / "data")
    assert s.incoming.is_dir() and s.studies.is_dir() and s.quarantine_dir.is_dir()
    assert (s.incoming, s.studies, s.quarantine_dir) == (
        tmp_path / "new" / "data" / "incoming",
        tmp_path / "new" / "data" / "studies",
        tmp_path / "new" / "data" / "quarantine",
    )


def test_relative_path_layout_and_shard(store: InstanceStore) -> None:
    digest = sha(b"content")
    shard = hashlib.sha256(STUDY.encode()).hexdigest()[:2]
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    assert rel == f"studies/{shard}/{STUDY}/{SERIES}/{SOP}.{digest[:16]}.dcm"


def test_shards_spread_studies(store: InstanceStore) -> None:
    digest = sha(b"x")
    shards = {store.relative_path(f"1.2.3.{i}", SERIES, SOP, digest).split("/")[1] for i in range(200)}
    assert len(shards) > 100  # 200 studies over 256 two-hex-digit shards
    assert all(len(s) == 2 and int(s, 16) >= 0 for s in shards)


@pytest.mark.parametrize(
    ("study", "series", "sop"),
    [
        ("../../etc", SERIES, SOP),
        (STUDY, "..", SOP),
        (STUDY, SERIES, "../../../../tmp/x"),
        (STUDY, SERIES, "1.2/../../3"),
        ("/etc", SERIES, SOP),
        (STUDY, SERIES, ""),
    ],
)
def test_relative_path_refuses_bad_uids(store: InstanceStore, study: str, series: str, sop: str) -> None:
    with pytest.raises(InvalidUID):
        store.relative_path(study, series, sop, sha(b"x"))


@pytest.mark.parametrize("digest", ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" + "0" * 61])
def test_relative_path_refuses_bad_sha256(store: InstanceStore, digest: str) -> None:
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex digits"):
        store.relative_path(STUDY, SERIES, SOP, digest)


def test_relative_path_never_escapes(store: InstanceStore) -> None:
    root = store.root.resolve()
    for i in range(50):
        rel = store.relative_path(f"1.2.{i}", f"1.2.{i}.1", f"1.2.{i}.1.{i}", sha(str(i).encode()))
        path = store.absolute(rel)
        assert path.is_relative_to(root / "studies")
        assert ".." not in Path(rel).parts


# --------------------------------------------------------------------------------------------- absolute


@pytest.mark.parametrize(
    "rel", ["../outside.dcm", "studies/../../outside", "/etc/passwd", "studies/aa/../../../x"]
)
def test_absolute_refuses_escaping_paths(store: InstanceStore, rel: str) -> None:
    with pytest.raises(StorageError, match="path escapes the data directory"):
        store.absolute(rel)


def test_absolute_refuses_symlink_out_of_root(store: InstanceStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.studies / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        store.absolute("studies/link/file.dcm")


def test_absolute_inside_root(store: InstanceStore) -> None:
    assert store.absolute("studies/ab/x.dcm") == store.root.resolve() / "studies" / "ab" / "x.dcm"
    assert store.absolute("studies/ab/../cd/x.dcm") == store.root.resolve() / "studies" / "cd" / "x.dcm"


def test_remove_refuses_escaping_paths_and_tolerates_missing(store: InstanceStore, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with pytest.raises(StorageError):
        store.remove("../victim.txt")
    assert victim.read_text() == "keep"
    store.remove("studies/ab/absent.dcm")  # no error


# --------------------------------------------------------------------------------------------- hashing


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) * 2 + 17])
def test_hash_and_sync(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    pool = FsyncPool()
    try:
        assert pool.hash_and_sync(path) == (hashlib.sha256(data).hexdigest(), size)
    finally:
        pool.close()
    assert path.read_bytes() == data  # unchanged


# --------------------------------------------------------------------------------------------- commit


def test_write_incoming_is_in_incoming(store: InstanceStore) -> None:
    a = store.write_incoming(b"abc")
    b = store.write_incoming(b"abc")
    assert a != b
    assert a.parent == store.incoming == b.parent
    assert a.suffix == ".part"
    assert a.read_bytes() == b"abc"


def test_commit_moves_the_file_into_place(store: InstanceStore) -> None:
    data = b"DICM" + os.urandom(5000)
    src, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    stored = store.commit(src, rel, digest, size)
    assert stored == StoredFile(rel, digest, len(data), already_present=False)
    assert not src.exists()
    assert (store.root / rel).read_bytes() == data
    assert list(store.incoming.iterdir()) == []
    # Nothing but the final file in the series folder: no temporaries left beside it.
    assert [p.name for p in (store.root / rel).parent.iterdir()] == [Path(rel).name]


def test_commit_existing_destination_is_already_present(store: InstanceStore) -> None:
    data = b"first copy"
    src1, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    store.commit(src1, rel, digest, size)
    before = (store.root / rel).stat()

    src2, digest2, size2 = received(store, data)
    stored = store.commit(src2, rel, digest2, size2)
    assert stored == StoredFile(rel, digest, size, already_present=True)
    assert not src2.exists()
    after = (store.root / rel).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # kept, not replaced
    assert (store.root / rel).read_bytes() == data
    assert list(store.incoming.iterdir()) == []


def test_commit_forces_the_file_and_its_directory_to_disk(
    store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before commit returns (and so before the index or the sender hears of it), the stored file and
    the directory that names it have each been fsynced."""
    data = os.urandom(4000)
    src, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fsync", fsync)
    store.commit(src, rel, digest, size)
    dst = store.root / rel
    assert dst.stat().st_ino in synced and dst.parent.stat().st_ino in synced


def test_commit_replaces_a_short_leftover_of_an_interrupted_store(store: InstanceStore) -> None:
    """A crash after the rename but before the fsyncs can leave a short, unindexed file at the final
    path; the resent copy does not trust it but takes its place."""
    data = b"DICM" + os.urandom(6000)
    src, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    dst = store.root / rel
    dst.parent.mkdir(parents=True)
    dst.write_bytes(data[:1000])  # what a power cut mid-write-out leaves
    stored = store.commit(src, rel, digest, size)
    assert stored == StoredFile(rel, digest, size, already_present=False)
    assert dst.read_bytes() == data
    assert not src.exists()
    assert [p.name for p in dst.parent.iterdir()] == [dst.name]


def test_commit_refuses_escaping_rel_path(store: InstanceStore) -> None:
    src, digest, size = received(store, b"x")
    with pytest.raises(StorageError):
        store.commit(src, "../../evil.dcm", digest, size)
    assert src.exists()  # nothing moved


def test_commit_failure_is_a_storage_error(store: InstanceStore) -> None:
    src, digest, size = received(store, b"x")
    src.unlink()  # the source vanished: the rename fails
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    with pytest.raises(StorageError, match="cannot store"):
        store.commit(src, rel, digest, size)
    assert not (store.root / rel).exists()


def test_commit_file_appears_only_complete(store: InstanceStore) -> None:
    """A reader polling the destination never sees a partial file: it is absent, then whole."""
    data = os.urandom(8 << 20)
    src, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    dst = store.root / rel
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(dst.stat().st_size)
            except FileNotFoundError:
                seen.append(-1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        time.sleep(0.01)
        store.commit(src, rel, digest, size)
        time.sleep(0.01)
    finally:
        stop.set()
        watcher.join()
    assert set(seen) <= {-1, len(data)}
    assert seen[-1] == len(data)
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest


def test_commit_across_filesystems_copies(store: InstanceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXDEV on rename: the file is copied, synced and renamed; the source is removed."""
    data = os.urandom(3000)
    src, digest, size = received(store, data)
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    real_replace = Path.replace

    def replace(self: Path, target: Path) -> Path:
        if self == src:
            raise OSError(18, "Invalid cross-device link")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    stored = store.commit(src, rel, digest, size)
    assert stored.already_present is False
    assert (store.root / rel).read_bytes() == data
    assert not src.exists()
    assert sorted(p.name for p in (store.root / rel).parent.iterdir()) == [Path(rel).name]


# --------------------------------------------------------------------------------------------- quarantine


def test_quarantine_keeps_file_and_reason(store: InstanceStore) -> None:
    src = store.write_incoming(b"not dicom")
    kept = store.quarantine(src, "cannot parse dataset", {"status": "0xC210", "calling_aet": "PACS"})
    assert kept.parent == store.quarantine_dir
    assert kept.suffix == ".dcm"
    assert kept.read_bytes() == b"not dicom"
    assert not src.exists()
    reasons = list(store.quarantine_dir.glob("*.reason.txt"))
    assert len(reasons) == 1
    assert reasons[0].read_text(encoding="utf-8") == (
        "reason: cannot parse dataset\ncalling_aet: PACS\nstatus: 0xC210\n"
    )
    assert reasons[0].name.removesuffix(".reason.txt") == kept.name.removesuffix(".dcm")


def test_quarantine_never_overwrites(store: InstanceStore) -> None:
    kept = [store.quarantine(store.write_incoming(b"bad %d" % i), f"reason {i}", {}) for i in range(3)]
    assert len(set(kept)) == 3
    assert sorted(p.read_bytes() for p in store.quarantine_dir.glob("*.dcm")) == [
        b"bad 0",
        b"bad 1",
        b"bad 2",
    ]
    assert len(list(store.quarantine_dir.glob("*.reason.txt"))) == 3


# --------------------------------------------------------------------------------------------- sweeping


def test_sweep_incoming_removes_only_old_files(store: InstanceStore) -> None:
    old = store.write_incoming(b"old")
    fresh = store.write_incoming(b"fresh")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.sweep_incoming(older_than_seconds=3600) == 1
    assert not old.exists()
    assert fresh.exists()
    assert store.sweep_incoming(older_than_seconds=3600) == 0
    assert fresh.exists()


def test_sweep_incoming_leaves_studies_alone(store: InstanceStore) -> None:
    src, digest, size = received(store, b"stored")
    rel = store.relative_path(STUDY, SERIES, SOP, digest)
    store.commit(src, rel, digest, size)
    past = time.time() - 7200
    os.utime(store.root / rel, (past, past))
    assert store.sweep_incoming(older_than_seconds=60) == 0
    assert (store.root / rel).exists()


def test_free_bytes_is_positive(store: InstanceStore) -> None:
    assert store.free_bytes() > 0
