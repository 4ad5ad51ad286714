"""The patient identifiers of the suite's test data, and a search for them in logs.

"No patient identifiers in logs by default": every test checks the logs it produced -- the node and
worker processes' log files (``support.node``) and the records logged in the test process -- for the
patient names, IDs and birth dates of the data the suite sends (the real DICOM files under
``../shared/data`` and the synthetic and film builders' constants). Purely numeric IDs shorter than 9
digits are left out: they collide with ports, byte counts and instance numbers in ordinary log lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

import pydicom

from orthonode.peers.films import FILM_PATIENT_ID, FILM_PATIENT_NAME
from orthonode.peers.synthetic import SYNTHETIC_PATIENT_ID, SYNTHETIC_PATIENT_NAME

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FIELDS = ("PatientName", "PatientID", "PatientBirthDate")


def _forms(field: str, value: str) -> set[str]:
    if field == "PatientName":  # as stored ("DOE^JOHN") and as people write it ("DOE JOHN")
        return {value, value.replace("^", " ").strip()}
    if field == "PatientID" and value.isdigit() and len(value) < 9:
        return set()
    return {value}


@functools.cache
def identifiers() -> dict[str, str]:
    """identifier -> the field it is (values of fewer than 4 characters are not searched)."""
    found: dict[str, str] = {}
    for field, value in (
        ("PatientName", SYNTHETIC_PATIENT_NAME),
        ("PatientID", SYNTHETIC_PATIENT_ID),
        ("PatientName", FILM_PATIENT_NAME),
        ("PatientID", FILM_PATIENT_ID),
    ):
        found.update(dict.fromkeys(_forms(field, value), field))
    for path in sorted(SHARED_DATA.rglob("*.dcm")) if SHARED_DATA.is_dir() else []:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(FIELDS))
        except Exception:  # a deliberately broken test file: it has no identifiers to leak
            continue
        for field in FIELDS:
            value = str(ds.get(field, "") or "").strip()
            found.update(dict.fromkeys(_forms(field, value), field))
    return {k: v for k, v in found.items() if len(k) >= 4}


def leaks(texts: Iterable[tuple[str, str]]) -> list[str]:
    """``"<where>: <field> found"`` for every identifier in ``(where, text)`` pairs (the value itself is
    not repeated)."""
    known = identifiers()
    if not known:
        return []
    pattern = re.compile(
        "|".join(rf"(?<![\w]){re.escape(k)}(?![\w])" for k in sorted(known, key=len, reverse=True))
    )
    out = []
    for where, text in texts:
        for match in pattern.finditer(text):
            out.append(f"{where}: {known[match.group(0)]} found")
    return sorted(set(out))
