"""MURA v1.1 (Rajpurkar et al., 2017, arXiv:1712.06957): upper-extremity radiographs, normal/abnormal.

Layout (paths in the CSVs start with the dataset folder name, e.g. ``MURA-v1.1/``)::

    MURA-v1.1/train_image_paths.csv      MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png
    MURA-v1.1/train_labeled_studies.csv  MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1
    MURA-v1.1/valid_image_paths.csv, valid_labeled_studies.csv

Neither CSV has a header. One sample per image, labelled with its study's label (0 normal, 1 abnormal);
the patient key is the ``patientNNNNN`` path component. ``study_types`` filters body parts
(``XR_SHOULDER`` for shoulder radiographs). MURA has no task in the paper's list: the adapter serves
radiograph cross-anatomy experiments (``task`` names what the caller trains). Tested on fixtures in this
exact layout written by the tests; no MURA data is in this repository.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from heads.datasets.base import DatasetError, LabelledDataset, Sample

NAME = "mura"
SPLITS = ("train", "valid")
_PATIENT = re.compile(r"(patient\d+)")


def _resolve(root: Path, rel: str) -> Path:
    """CSV paths start with the dataset folder (``MURA-v1.1/...``): resolve against ``root`` or its parent."""
    rel = rel.strip()
    for base in (root.parent, root):
        candidate = base / rel
        if candidate.exists():
            return candidate
    parts = Path(rel).parts
    return root.joinpath(*parts[1:]) if parts and parts[0] == root.name else root / rel


def load_mura(
    root: Path, *, study_types: tuple[str, ...] = ("XR_SHOULDER",), task: str = "mura_abnormality"
) -> LabelledDataset:
    """MURA images of ``study_types`` under ``root`` (the ``MURA-v1.1`` folder), official splits kept."""
    root = Path(root)
    samples: list[Sample] = []
    for split in SPLITS:
        studies_csv = root / f"{split}_labeled_studies.csv"
        images_csv = root / f"{split}_image_paths.csv"
        if not studies_csv.is_file() or not images_csv.is_file():
            continue
        labels: dict[str, int] = {}
        with open(studies_csv, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) != 2 or row[1].strip() not in {"0", "1"}:
                    raise DatasetError(f"{studies_csv.name}:{line}: expected 'study/,0|1', got {row}")
                labels[row[0].strip().rstrip("/")] = int(row[1])
        with open(images_csv, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                rel = row[0].strip()
                if not any(f"/{t}/" in rel for t in study_types):
                    continue
                study = rel.rsplit("/", 1)[0]
                if study not in labels:
                    raise DatasetError(f"{images_csv.name}:{line}: image of an unlabelled study")
                patient = _PATIENT.search(rel)
                if patient is None:
                    raise DatasetError(f"{images_csv.name}:{line}: no patientNNNNN component in the path")
                samples.append(
                    Sample(
                        key=rel,
                        paths=(_resolve(root, rel),),
                        label=labels[study],
                        patient_id=f"mura-{patient.group(1)}",
                        split=split,
                        kind="image",
                        meta={"study": study.rsplit("/", 1)[-1]},
                    )
                )
    if not samples:
        raise DatasetError(f"no MURA images of {study_types} under {root}")
    return LabelledDataset(NAME, task, root, samples, 2, notes="patient key = patientNNNNN path component")
