"""The manifest of a pretraining corpus: one row per 2-D training image, patient-level splits, CSV I/O.

Privacy: a row never holds a Patient ID or a UID. ``patient_key``, ``study_key`` and ``series_key`` are
keyed one-way hashes (HMAC-SHA-256, truncated, :func:`hash_key`) of PatientID (0010,0020), Study / Series
Instance UID (DICOM PS3.3 C.7.1.1, C.7.2.1, C.7.3.1).

Splits are held out by patient: :func:`assign_split` is a deterministic function of ``patient_key`` (a hash
mapped onto ``[0, 1)`` compared with ``val_fraction``), so every image of a patient -- all slices of all
series, both knees -- lands in the same split, and the assignment is stable when the corpus grows.
:func:`verify_patient_split` checks it and raises :class:`SplitLeakError`.

The CSV has the columns :data:`MANIFEST_COLUMNS` in order and is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from orthonode.errors import OrthonodeError

__all__ = [
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "SplitLeakError",
    "assign_split",
    "hash_key",
    "read_manifest",
    "verify_patient_split",
    "write_manifest",
]

#: Columns of the manifest CSV, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "frame",
    "slice_index",
    "n_slices",
    "format",
    "modality",
    "family",
    "anatomy",
    "laterality",
    "patient_key",
    "study_key",
    "series_key",
    "rows",
    "cols",
    "photometric",
    "norm_low",
    "norm_high",
    "split",
)


class SplitLeakError(OrthonodeError, ValueError):
    """A patient appears in more than one split of a manifest."""


@dataclass(frozen=True)
class ManifestRow:
    """One 2-D training image of the manifest (see :data:`MANIFEST_COLUMNS`).

    ``frame`` indexes the 2-D image inside the file (multi-frame DICOM frame, NIfTI slice along the third
    voxel axis, else 0); ``slice_index`` is the position in the sorted series volume of ``n_slices`` slices
    (0 of 1 for radiographs); ``norm_low`` / ``norm_high`` are the volume's Modality-LUT window (``None``
    for radiographs and raster files).
    """

    path: str
    frame: int
    slice_index: int
    n_slices: int
    format: str
    modality: str
    family: str
    anatomy: str
    laterality: str
    patient_key: str
    study_key: str
    series_key: str
    rows: int
    cols: int
    photometric: str
    norm_low: float | None
    norm_high: float | None
    split: str


def hash_key(value: str, salt: str) -> str:
    """Keyed one-way hash (HMAC-SHA-256, first 20 hex digits) of an identifier."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


def assign_split(patient_key: str, val_fraction: float, salt: str) -> str:
    """``"val"`` or ``"train"`` for a patient: SHA-256 of ``salt|patient_key`` mapped onto ``[0, 1)``."""
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    digest = hashlib.sha256(f"{salt}|{patient_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


def verify_patient_split(rows: Iterable[ManifestRow]) -> None:
    """Raise :class:`SplitLeakError` when any ``patient_key`` occurs in more than one split."""
    splits: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        splits[row.patient_key].add(row.split)
    leaks = sorted(key for key, names in splits.items() if len(names) > 1)
    if leaks:
        shown = ", ".join(f"{key} in {sorted(splits[key])}" for key in leaks[:5])
        raise SplitLeakError(f"{len(leaks)} patient(s) appear in more than one split: {shown}")


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_manifest(rows: Iterable[ManifestRow], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as CSV with :data:`MANIFEST_COLUMNS` (atomically: temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_COLUMNS)
            for row in rows:
                values = asdict(row)
                writer.writerow([_format_value(values[name]) for name in MANIFEST_COLUMNS])
        Path(tmp_name).replace(target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


_INT_FIELDS = {"frame", "slice_index", "n_slices", "rows", "cols"}
_FLOAT_FIELDS = {"norm_low", "norm_high"}


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read a manifest CSV written by :func:`write_manifest`.

    Raises:
        ValueError: when required columns are missing or a value does not parse (names the line).
    """
    names = [f.name for f in fields(ManifestRow)]
    rows: list[ManifestRow] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in names if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"manifest {path} lacks columns {missing}")
        for line, record in enumerate(reader, start=2):
            try:
                values: dict[str, Any] = {}
                for name in names:
                    raw = record[name]
                    if name in _INT_FIELDS:
                        values[name] = int(raw)
                    elif name in _FLOAT_FIELDS:
                        values[name] = float(raw) if raw not in ("", None) else None
                    else:
                        values[name] = raw or ""
                rows.append(ManifestRow(**values))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"manifest {path} line {line}: {exc}") from exc
    return rows
