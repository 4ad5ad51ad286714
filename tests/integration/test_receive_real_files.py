"""Every real DICOM file in ../shared/data/dicom_msk (CR, DX, MR; uncompressed, RLE, JPEG baseline,
extended 12-bit and lossless, JPEG-LS, JPEG 2000) is received by dcmtk's storescu in its own transfer
syntax, stored bit for bit, indexed, and decodes to the same pixels as the original."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info
from support.dcmtk import storescu

from orthonode.dicom.contexts import TRANSFER_SYNTAXES
from orthonode.inference.loading import decode_pixels

pytestmark = pytest.mark.integration


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset after the File Meta Information (PS3.10 §7.1)."""
    with open(path, "rb") as fp:
        fp.seek(128 + 4)
        _read_file_meta_info(fp)
        return fp.read()


def test_all_shared_files_are_stored_bit_exactly_and_decode(shared_data: Path, make_node: Any) -> None:
    sources = sorted((shared_data / "dicom_msk").rglob("*.dcm"))
    assert len(sources) >= 25
    syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in sources}
    assert syntaxes <= set(TRANSFER_SYNTAXES)
    assert len(syntaxes) >= 9

    node = make_node(embedded_worker=False)
    result = storescu("127.0.0.1", node.port, sources, called_aet=node.ae_title, propose="original")
    assert result.returncode == 0, result.stdout + result.stderr

    db = sqlite3.connect(node.data_dir / "index.sqlite3")
    rows = db.execute(
        "SELECT sop_instance_uid, sha256, rel_path, transfer_syntax_uid FROM instances"
    ).fetchall()
    db.close()
    stored = {(sop, sha): (rel, ts) for sop, sha, rel, ts in rows}
    assert len(rows) == len(sources)

    for src in sources:
        ds = dcmread(src, stop_before_pixels=True)
        matches = [(rel, ts) for (sop, _sha), (rel, ts) in stored.items() if sop == ds.SOPInstanceUID]
        assert matches, f"{src.name} not indexed"
        # Same SOP Instance UID may appear in several files (another syntax): find the one with our bytes.
        payload = dataset_bytes(src)
        kept = [node.data_dir / rel for rel, _ts in matches if dataset_bytes(node.data_dir / rel) == payload]
        assert len(kept) == 1, f"{src.name}: dataset bytes differ from what was sent"
        path = kept[0]
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert (ds.SOPInstanceUID, sha) in stored
        assert stored[(ds.SOPInstanceUID, sha)][1] == ds.file_meta.TransferSyntaxUID
        assert np.array_equal(decode_pixels(path), decode_pixels(src)), src.name
