"""Every real DICOM file in ../shared/data/dicom_msk (CR, DX, MR; uncompressed, RLE, JPEG baseline,
extended 12-bit and lossless, JPEG-LS, JPEG 2000) is received by dcmtk's storescu in its own transfer
syntax, stored bit for bit, indexed, and decodes to the same pixels as the original."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info
from support.peers.dcmtk import storescu

from orthonode.dicom.contexts import TRANSFER_SYNTAXES
from orthonode.dicom.scu import Peer, send_files
from orthonode.inference.loading import decode_pixels

pytestmark = pytest.mark.integration


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset after the File Meta Information (PS3.10 §7.1)."""
    with open(path, "rb") as fp:
        fp.seek(128 + 4)
        _read_file_meta_info(fp)
        return fp.read()


def _stored(node: Any) -> dict[tuple[str, str], tuple[str, str]]:
    db = sqlite3.connect(node.data_dir / "index.sqlite3")
    rows = db.execute(
        "SELECT sop_instance_uid, sha256, rel_path, transfer_syntax_uid FROM instances"
    ).fetchall()
    db.close()
    return {(sop, sha): (rel, ts) for sop, sha, rel, ts in rows}


def _shared_sources(shared_data: Path) -> list[Path]:
    sources = sorted((shared_data / "dicom_msk").rglob("*.dcm"))
    assert len(sources) >= 25
    syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in sources}
    assert syntaxes <= set(TRANSFER_SYNTAXES)
    assert len(syntaxes) == 8  # uncompressed, RLE, JPEG 12-bit and lossless, JPEG-LS x2, JPEG 2000 x2
    return sources


def test_all_shared_files_arrive_by_storescu_in_their_own_syntax_and_decode(
    shared_data: Path, make_node: Any
) -> None:
    sources = _shared_sources(shared_data)
    node = make_node(embedded_worker=False)
    result = storescu("127.0.0.1", node.port, sources, called_aet=node.ae_title, propose="original")
    assert result.returncode == 0, result.stdout + result.stderr

    stored = _stored(node)
    assert len(stored) == len(sources)
    for src in sources:
        ds = dcmread(src, stop_before_pixels=True)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        kept = [
            node.data_dir / rel
            for (sop, _sha), (rel, ts) in stored.items()
            if sop == ds.SOPInstanceUID and ts == syntax
        ]
        assert len(kept) == 1, f"{src.name} not indexed in {syntax}"
        assert np.array_equal(decode_pixels(kept[0]), decode_pixels(src)), src.name


@pytest.mark.parametrize("fast_transport", [True, False], ids=["streaming-transport", "stock-pynetdicom"])
def test_all_shared_files_are_stored_bit_exactly(
    shared_data: Path, make_node: Any, fast_transport: bool
) -> None:
    """Sent as raw bytes (pynetdicom, no re-encoding; dcmtk pads odd-length values when it sends), the
    dataset the node stores after its File Meta Information is byte for byte the one sent -- with the
    node's streaming transport and with stock pynetdicom (``fast_transport = false``)."""
    sources = _shared_sources(shared_data)
    node = make_node(embedded_worker=False, fast_transport=fast_transport, max_pdu=16384)
    results = send_files(Peer("127.0.0.1", node.port, node.ae_title, "RAWSCU"), sources)
    assert [r.status for r in results] == [0] * len(sources)

    stored = _stored(node)
    for src in sources:
        sop = dcmread(src, stop_before_pixels=True).SOPInstanceUID
        payload = dataset_bytes(src)
        kept = [node.data_dir / rel for (uid, _sha), (rel, _ts) in stored.items() if uid == sop]
        exact = [p for p in kept if dataset_bytes(p) == payload]
        assert len(exact) == 1, f"{src.name}: stored dataset bytes differ from what was sent"
        assert (sop, hashlib.sha256(exact[0].read_bytes()).hexdigest()) in stored


def _variants(src: Path, out: Path) -> list[Path]:
    """The syntaxes the shared files lack, made from them: Implicit VR, Deflated, JPEG Baseline 8-bit."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGBaseline8Bit,
        generate_uid,
    )

    out.mkdir()
    paths = []
    for syntax in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds = dcmread(src)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = syntax
        paths.append(out / f"{syntax.name.replace(' ', '_')}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    ds = dcmread(src)
    pixels = ds.pixel_array.astype(np.float64)
    eight_bit = np.round(255 * (pixels - pixels.min()) / max(1.0, np.ptp(pixels))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    paths.append(out / "jpeg_baseline.dcm")
    ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_implicit_deflated_and_jpeg_baseline_are_received_and_decode(
    shared_data: Path, make_node: Any, tmp_path: Path
) -> None:
    sources = _variants(shared_data / "dicom_msk" / "wg04" / "MR3_knee_UNC.dcm", tmp_path / "variants")
    node = make_node(embedded_worker=False)
    results = send_files(Peer("127.0.0.1", node.port, node.ae_title, "RAWSCU"), sources)
    assert [r.status for r in results] == [0, 0, 0]
    stored = sorted((node.data_dir / "studies").rglob("*.dcm"))
    assert len(stored) == 3
    syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in stored}
    assert syntaxes == {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50"}
    by_uid = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in stored}
    for src in sources:
        kept = by_uid[dcmread(src, stop_before_pixels=True).SOPInstanceUID]
        assert np.array_equal(decode_pixels(kept), decode_pixels(src)), src.name
