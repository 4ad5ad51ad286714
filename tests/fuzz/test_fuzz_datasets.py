"""Malformed datasets over real associations: each gets a status or a clean abort, the node never falls.

hypothesis builds them from a valid synthetic radiograph (``orthonode.peers.synthetic``): bytes of the
dataset overwritten, inserted or cut; element lengths that lie; VRs that lie about their values; pixel
data cut short; absurd Rows / Columns / Number of Frames; invalid and path-like UIDs (in the dataset and
in the C-STORE request); deep and huge sequences; giant private elements; bad character sets. Each input
goes on its own association, sent as raw bytes (pynetdicom's chunked send: what a broken or hostile
sender puts on the wire). After each one the node must still answer C-ECHO.
"""

from __future__ import annotations

import os
import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, _config
from support.fuzz import TRIED, alive, derandomize, examples
from support.memory import peak_rss_kib
from support.node import NodeProcess

from orthonode.peers.synthetic import new_study_uid, radiograph

pytestmark = pytest.mark.integration

DX = "1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
#: every C-STORE status the node may answer (PS3.4 Table B.2-1 and orthonode.dicom.contexts)
STATUSES = {0x0000, 0xA700, 0xA701, 0xA702, 0xA900, 0xC210, 0xC212, 0xC213, 0xC214, 0x0110, 0x0117, 0x0122}
PATH_LIKE_UIDS = ("../../../etc/passwd", "1.2.3/../../x", "..", "/", "1.2.3\x00.4", "C:\\windows", "1." * 40)
BAD_UIDS = ("", "1..2", "01.2", "1.2.a", "1.2.3.", "9" * 70, " 1.2", "\u00e91.2")
#: explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1)
LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"OV", b"UC", b"UR")
CHARSETS = ("ISO_IR 999", "\\\\", "ISO 2022 IR 87\\ISO 2022 IR 13\\junk", "GB18030\\ISO_IR 192", "ISO_IR 6")


def _base() -> Dataset:
    ds = radiograph(new_study_uid(), rows=64, cols=48, seed=1)
    ds.file_meta.TransferSyntaxUID = EXPLICIT
    return ds


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _set_meta_uid(data: bytes, value: str) -> bytes:
    """``data`` with the file meta's Media Storage SOP Instance UID (0002,0003) replaced by ``value`` as
    raw bytes, the group length following: pydicom refuses to write some of them (an empty one)."""
    end = _meta_length(data)
    i = data.find(b"\x02\x00\x03\x00UI", 132, end)
    (old,) = struct.unpack_from("<H", data, i + 6)
    raw = value.encode("utf-8")
    raw += b"\0" * (len(raw) % 2)
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    meta = data[:i] + struct.pack("<HH2sH", 0x0002, 0x0003, b"UI", len(raw)) + raw + data[i + 8 + old : end]
    return meta[:140] + struct.pack("<I", group_length - old + len(raw)) + meta[144:] + data[end:]


def _meta_length(data: bytes) -> int:
    """Bytes of preamble + DICM + file meta group (its group length is the first element)."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + group_length


def _send(node: NodeProcess, data: bytes, workdir: Path, name: str) -> str:
    """C-STORE the raw Part 10 ``data``; returns "status 0x...." or "abort" or "not sent: ..."."""
    path = workdir / name
    path.write_bytes(data)
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(DX, [EXPLICIT, IMPLICIT])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        return "not associated"
    try:
        rsp = assoc.send_c_store(path)
    except Exception as exc:  # pynetdicom refused to send this file: the input never reached the node
        return f"not sent: {type(exc).__name__}"
    finally:
        if assoc.is_established:
            assoc.release()
        path.unlink(missing_ok=True)
    if "Status" not in rsp:
        return "abort"
    return f"status 0x{int(rsp.Status):04X}"


def _check(node: NodeProcess, outcome: str, what: str) -> None:
    assert node.running, f"the node died on {what} ({outcome}); log:\n{node.log_text()[-3000:]}"
    assert outcome != "not associated", f"the node refused an association before {what}"
    if outcome.startswith("status"):
        assert int(outcome.split("0x")[1], 16) in STATUSES, f"{what}: unexpected {outcome}"
    assert alive(node), f"the node stopped answering C-ECHO after {what} ({outcome})"
    TRIED[f"outcome {outcome.split(':')[0]}"] += 1
    if not outcome.startswith("not sent"):  # pynetdicom itself refused to send a few: they never arrived
        TRIED["datasets"] += 1


# ----------------------------------------------------------------------------------------- strategies

HEADERS = [(0x0010, 0x0010), (0x0020, 0x000D), (0x0028, 0x0010), (0x7FE0, 0x0010), (0x0008, 0x0060)]
LYING_LENGTHS = [0, 1, 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]
offsets = st.integers(0, 10**6)
patches = st.lists(st.tuples(offsets, st.binary(min_size=1, max_size=8)), min_size=1, max_size=8)
mutations = st.one_of(
    st.tuples(st.just("overwrite"), patches),
    st.tuples(st.just("insert"), st.tuples(offsets, st.binary(min_size=1, max_size=64))),
    st.tuples(st.just("truncate"), offsets),
    st.tuples(st.just("length"), st.tuples(st.sampled_from(HEADERS), st.sampled_from(LYING_LENGTHS))),
)


def _mutate(data: bytes, mutation: tuple[str, Any]) -> bytes:
    start = _meta_length(data)
    body = bytearray(data[start:])
    kind, arg = mutation
    if kind == "overwrite":
        for offset, chunk in arg:
            i = offset % max(1, len(body))
            body[i : i + len(chunk)] = chunk
    elif kind == "insert":
        offset, chunk = arg
        i = offset % max(1, len(body))
        body[i:i] = chunk
    elif kind == "truncate":
        del body[arg % max(1, len(body)) :]
    else:  # a lying length: rewrite the length field of one element header (explicit VR little endian)
        (group, element), length = arg
        header = struct.pack("<HH", group, element)
        i = body.find(header)
        if i >= 0:
            vr = bytes(body[i + 4 : i + 6])
            if vr in LONG_VRS:
                body[i + 8 : i + 12] = struct.pack("<I", length)
            else:
                body[i + 6 : i + 8] = struct.pack("<H", length & 0xFFFF)
    return data[:start] + bytes(body)


def _nested(depth: int) -> DicomSequence:
    item = Dataset()
    item.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = DicomSequence([item])
        item = outer
    return DicomSequence([item])


SIDES = st.sampled_from([0, 1, 65535])
FRAMES = st.sampled_from([None, 0, 1, 2**31 - 1, 999999])
UID_KEYWORDS = st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
LYING_VRS = st.sampled_from(["US", "UL", "FD", "DA", "UI", "AT", "SQ"])
structural = st.one_of(
    st.tuples(st.just("rows"), st.tuples(SIDES, SIDES, FRAMES)),
    st.tuples(
        st.just("uid"), st.tuples(UID_KEYWORDS, st.sampled_from(PATH_LIKE_UIDS + BAD_UIDS), st.booleans())
    ),
    st.tuples(st.just("pixels"), st.integers(0, 64 * 48 * 2 - 1)),
    st.tuples(st.just("deep"), st.integers(1, 120)),
    st.tuples(st.just("wide"), st.integers(1, 3000)),
    st.tuples(st.just("private"), st.integers(1, 6 << 20)),
    st.tuples(st.just("charset"), st.tuples(st.sampled_from(CHARSETS), st.binary(min_size=1, max_size=40))),
    st.tuples(st.just("vr"), st.tuples(LYING_VRS, st.binary(min_size=0, max_size=11))),
)


def _raw_element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element written by hand, whatever its value (PS3.5 7.1.2)."""
    code = vr.encode()
    if code in LONG_VRS:
        return struct.pack("<HH2sHI", group, element, code, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, code, len(value) & 0xFFFF) + value


def _insert_before(data: bytes, tag: tuple[int, int], raw: bytes) -> bytes:
    """``raw`` inserted in the dataset just before the element ``tag`` (kept in tag order)."""
    start = _meta_length(data)
    i = data.find(struct.pack("<HH", *tag), start)
    if i < 0:
        raise ValueError(f"no element {tag} to insert before")
    return data[:i] + raw + data[i:]


def _structural(edit: tuple[str, Any]) -> bytes:
    ds = _base()
    kind, arg = edit
    if kind == "charset":  # PatientName as raw bytes under a broken Specific Character Set
        charset, raw = arg
        ds.SpecificCharacterSet = charset
        del ds.PatientName
        return _insert_before(_encode(ds), (0x0010, 0x0020), _raw_element(0x0010, 0x0010, "PN", raw))
    if kind == "vr":  # a VR that lies about its value: bytes of the wrong size or form for the VR
        vr, raw = arg
        return _insert_before(_encode(ds), (0x0008, 0x0016), _raw_element(0x0008, 0x0014, vr, raw))
    if kind == "rows":
        ds.Rows, ds.Columns, frames = arg
        if frames is not None:
            ds.NumberOfFrames = frames
    elif kind == "uid":
        keyword, value, in_meta = arg
        setattr(ds, keyword, value)
        if in_meta and keyword == "SOPInstanceUID":
            return _set_meta_uid(_encode(ds), value)
    elif kind == "pixels":
        ds.PixelData = ds.PixelData[:arg]
    elif kind == "deep":
        ds.ReferencedImageSequence = _nested(arg)
    elif kind == "wide":
        ds.ReferencedImageSequence = DicomSequence([Dataset() for _ in range(arg)])
        for item in ds.ReferencedImageSequence:
            item.ReferencedSOPInstanceUID = "1.2.3"
    elif kind == "private":
        ds.add_new(0x00091010, "LO", "FUZZ")  # private creator
        ds.add_new(0x00091000 | 0x1001, "OB", os.urandom(8) * (arg // 8))
    return _encode(ds)


# ----------------------------------------------------------------------------------------- properties

FUZZ_SETTINGS = settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
    derandomize=derandomize(),
    database=None,
)


@FUZZ_SETTINGS
@given(mutation=mutations)
def test_mutated_bytes_get_a_status_or_a_clean_abort(
    node: NodeProcess, fuzz_root: Path, mutation: Any
) -> None:
    data = _mutate(_encode(_base()), mutation)
    outcome = _send(node, data, fuzz_root, "mutated.dcm")
    _check(node, outcome, f"mutation {mutation[0]}")


@FUZZ_SETTINGS
@given(edit=structural)
@example(edit=("uid", ("SOPInstanceUID", "", True)))  # pydicom would not write it (found by fuzz-long)
def test_hostile_structures_get_a_status_or_a_clean_abort(
    node: NodeProcess, fuzz_root: Path, edit: Any
) -> None:
    outcome = _send(node, _structural(edit), fuzz_root, "structural.dcm")
    _check(node, outcome, f"structure {edit[0]}")


def test_after_the_fuzzing(node: NodeProcess, fuzz_root: Path) -> None:
    """The node is up; every quarantined file has its reason; nothing was written outside the node's
    folder; every stored file's path is made of validated UIDs; peak memory stayed bounded."""
    print(f"\nfuzzed datasets: {dict(TRIED)}")
    assert TRIED["datasets"] >= 1.5 * min(examples(120), 50)  # a few are refused by pynetdicom itself
    assert alive(node)
    outside = [p for p in fuzz_root.iterdir() if p.name != "node"]
    assert not outside, f"written outside the node's folder: {outside}"
    data = node.data_dir
    quarantined = sorted((data / "quarantine").glob("*.dcm")) if (data / "quarantine").is_dir() else []
    for path in quarantined:
        reason = path.with_name(path.name.replace(".dcm", ".reason.txt"))
        assert reason.read_text().startswith("reason: "), path
    for path in (data / "studies").rglob("*") if (data / "studies").is_dir() else []:
        rel = path.relative_to(data / "studies")
        assert ".." not in rel.parts and all(part.replace(".", "").isalnum() for part in rel.parts), rel
        if path.is_file():
            assert dcmread(path, stop_before_pixels=True).SOPInstanceUID
    assert node.proc is not None
    peak_kib = peak_rss_kib(node.proc.pid)
    assert peak_kib is not None
    print(f"peak RSS of orthonode serve: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
