"""Every kind of bad input gets its own named status and a clear log line, and the node keeps serving
(PS3.4 Table B.2-1 statuses; PS3.8 association rejection)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, _config
from support.peers.synthetic import mr_series, new_study_uid, write_all

from orthonode.dicom.contexts import StoreStatus

pytestmark = pytest.mark.integration

ULTRASOUND = "1.2.840.10008.5.1.4.1.1.6.1"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _send_raw(node: Any, path: Path, calling: str = "GOODSCU") -> int | None:
    """C-STORE ``path`` as raw bytes (no re-encoding), so broken files reach the node as they are."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=calling)
    ae.add_requested_context(MR, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(path)
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        assoc.release()


def _echo(node: Any, calling: str = "GOODSCU") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


@pytest.fixture
def node(make_node: Any) -> Any:
    return make_node(allowed_calling_aets=["GOODSCU"], max_instance_bytes=60_000, embedded_worker=False)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    # 64x64x16 bit = 8 KiB of pixels each: well under the 60 kB limit
    return write_all(mr_series(new_study_uid(), n_slices=3, plane="sagittal"), tmp_path / "good")


def _quarantined(node: Any) -> list[str]:
    return sorted(p.read_text() for p in (node.data_dir / "quarantine").glob("*.reason.txt"))


def test_unknown_calling_ae_is_rejected_at_association(node: Any) -> None:
    ae = AE(ae_title="EVILSCU")
    ae.add_requested_context(MR)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_rejected
    assert _echo(node)
    assert "association from EVILSCU@127.0.0.1 rejected" in node.log_text()


def test_wrong_called_ae_is_rejected(node: Any) -> None:
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(MR)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SOMEONE_ELSE")
    assert assoc.is_rejected


def test_unsupported_sop_class_context_is_rejected(node: Any) -> None:
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(ULTRASOUND)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]
    assoc.release()
    assert "presentation context(s) rejected" in node.log_text()
    assert ULTRASOUND in node.log_text()


@pytest.mark.parametrize(
    ("breakage", "expected", "reason"),
    [
        ("study_uid_path", StoreStatus.INVALID_UID, "invalid Study Instance UID"),
        ("series_uid_letters", StoreStatus.INVALID_UID, "invalid Series Instance UID"),
        ("no_sop_instance_uid", StoreStatus.MISSING_IDENTIFIER, "missing SOP Instance UID"),
        ("no_study_uid", StoreStatus.MISSING_IDENTIFIER, "missing Study Instance UID"),
        ("truncated", StoreStatus.CANNOT_UNDERSTAND, "truncated dataset"),
        ("not_dicom", StoreStatus.CANNOT_UNDERSTAND, "cannot parse dataset"),
        ("oversize", StoreStatus.INSTANCE_TOO_LARGE, "exceeds max_instance_bytes"),
    ],
)
def test_bad_instance_gets_named_status_and_node_keeps_serving(
    node: Any, files: list[Path], tmp_path: Path, breakage: str, expected: int, reason: str
) -> None:
    bad = tmp_path / "bad.dcm"
    ds = dcmread(files[0])
    if breakage == "study_uid_path":
        ds.StudyInstanceUID = "../../etc"
    elif breakage == "series_uid_letters":
        ds.SeriesInstanceUID = "1.2.abc"
    elif breakage == "no_sop_instance_uid":
        del ds.SOPInstanceUID  # the request still carries it (from the file meta)
    elif breakage == "no_study_uid":
        del ds.StudyInstanceUID
    elif breakage == "oversize":
        ds.PixelData = bytes(70_000)
        ds.Rows, ds.Columns = 175, 200
    if breakage in ("truncated", "not_dicom"):
        raw = files[0].read_bytes()
        if breakage == "truncated":
            bad.write_bytes(raw[: len(raw) - 777])
        else:  # valid File Meta, then an element with a Value Representation that does not exist
            meta = io.BytesIO()
            write_file_meta_info(meta, ds.file_meta)
            bad.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + b"\x08\x00\x16\x00ZZ\x04\x00abcd")
    else:
        ds.save_as(bad, enforce_file_format=True)

    status = _send_raw(node, bad)

    assert status == expected, f"0x{status or 0:04X}"
    log = node.log_text()
    refusals = [line for line in log.splitlines() if f"refused 0x{expected:04X}: " in line]
    assert len(refusals) == 1 and reason in refusals[0], log[-2000:]
    for forbidden in ("SYNTHETIC^KNEE", "SYNTH-"):  # no patient identifiers in logs
        assert forbidden not in log
    quarantined = _quarantined(node)
    if expected in (StoreStatus.INSTANCE_TOO_LARGE,):
        assert quarantined == []
    else:
        assert len(quarantined) == 1 and reason in quarantined[0]
    # The node carries on: the good files still go in, and C-ECHO answers.
    assert [_send_raw(node, f) for f in files] == [0, 0, 0]
    assert _echo(node)
    assert not list((node.data_dir / "studies").rglob("etc"))


def test_same_instance_twice_is_a_no_op_and_changed_bytes_a_new_revision(
    node: Any, files: list[Path]
) -> None:
    assert _send_raw(node, files[0]) == 0
    assert _send_raw(node, files[0]) == 0
    status = node.status()
    assert [s["instances"] for s in status["studies"]] == [1]

    ds = dcmread(files[0])
    ds.SeriesDescription = "PD FS SAG (corrected)"
    changed = files[0].with_name("changed.dcm")
    ds.save_as(changed, enforce_file_format=True)
    assert _send_raw(node, changed) == 0
    status = node.status()
    assert [s["instances"] for s in status["studies"]] == [2]
    assert "received again with different content: kept as revision 2" in node.log_text()
    stored = sorted((node.data_dir / "studies").rglob("*.dcm"))
    assert len(stored) == 2
    assert {dcmread(p).SOPInstanceUID for p in stored} == {ds.SOPInstanceUID}


def test_below_the_free_disk_watermark_stores_are_refused_with_out_of_resources(
    make_node: Any, files: list[Path]
) -> None:
    node = make_node(min_free_bytes=1 << 60, embedded_worker=False)  # more free space than any disk has
    assert _send_raw(node, files[0]) == StoreStatus.OUT_OF_RESOURCES
    assert "refused 0xA700: free disk space below the node's watermark" in node.log_text()
    assert not list((node.data_dir / "studies").rglob("*.dcm"))
    assert _echo(node)


def test_associations_beyond_the_maximum_are_rejected(make_node: Any) -> None:
    node = make_node(max_associations=1, embedded_worker=False)
    ae = AE(ae_title="FIRST")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert first.is_established
    try:
        second = AE(ae_title="SECOND")
        second.add_requested_context("1.2.840.10008.1.1")
        assoc = second.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_rejected
    finally:
        first.release()
    assert _echo(node)
