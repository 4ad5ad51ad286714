"""A generic CSV manifest: ``path,label,patient_id,split`` (one row per sample; extra columns ignored).

``path`` is relative to the CSV's folder (or absolute) and names an image file (PNG, JPEG, DICOM) or a
DICOM series folder / volume file (``.npy``, ``.pck``) for MRI tasks; ``label`` is the class index, or a
label meaning of the task (``"Present"``, ``"Kellgren-Lawrence grade 2"``). Optional ``side`` column.
This adapter is tested on fixtures written by the tests; no CSV-indexed dataset is shipped here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from heads.datasets.base import IMAGE_SUFFIXES, DatasetError, LabelledDataset, Sample, SampleKind

REQUIRED = ("path", "label", "patient_id", "split")


def _kind(path: Path, kind: SampleKind | None) -> SampleKind:
    if kind is not None:
        return kind
    if path.is_dir() or path.suffix in {".npy", ".pck"}:
        return "volume"
    if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in {".dcm", ""}:
        return "image"
    return "image"


def load_csv_manifest(
    csv_path: Path,
    *,
    task: str,
    labels: Sequence[str],
    name: str | None = None,
    kind: SampleKind | None = None,
) -> LabelledDataset:
    """The samples of ``csv_path`` for ``task`` whose label meanings are ``labels`` (class order)."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    index = {label.lower(): i for i, label in enumerate(labels)}
    samples: list[Sample] = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{csv_path.name}: missing column(s) {', '.join(missing)}; needs {REQUIRED}")
        for line, row in enumerate(reader, start=2):
            raw = row["label"].strip()
            if raw.lstrip("-").isdigit():
                label = int(raw)
            elif raw.lower() in index:
                label = index[raw.lower()]
            else:
                raise DatasetError(
                    f"{csv_path.name}:{line}: label {raw!r} is neither an index nor one of {labels}"
                )
            path = Path(row["path"])
            path = path if path.is_absolute() else base / path
            if not row["patient_id"].strip():
                raise DatasetError(f"{csv_path.name}:{line}: empty patient_id")
            samples.append(
                Sample(
                    key=row["path"],
                    paths=(path,),
                    label=label,
                    patient_id=row["patient_id"].strip(),
                    split=row["split"].strip(),
                    kind=_kind(path, kind),
                    side=(row.get("side") or None),
                )
            )
    return LabelledDataset(name or csv_path.stem, task, base, samples, len(labels))
