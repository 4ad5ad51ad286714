"""Dataset adapters: each public dataset in its own layout -> :class:`~heads.datasets.base.LabelledDataset`.

Only Chen 2018 (``chen_kl``) is present as real data in this workspace; MRNet, KneeMRI, MURA and the CSV
manifest are tested on tiny fixtures written in their exact formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heads.datasets.base import (
    DatasetError,
    LabelledDataset,
    PatientLeakError,
    Sample,
    carve_validation,
    check_patient_splits,
    load_sample,
    samples_digest,
    subsample_patients,
)

__all__ = [
    "ADAPTERS",
    "DatasetError",
    "LabelledDataset",
    "PatientLeakError",
    "Sample",
    "carve_validation",
    "check_patient_splits",
    "load_dataset",
    "load_sample",
    "samples_digest",
    "subsample_patients",
]

ADAPTERS = ("chen_kl", "csv", "mrnet", "kneemri", "mura")


def load_dataset(kind: str, path: Path, *, task: str, **options: Any) -> LabelledDataset:
    """Load dataset ``kind`` (one of :data:`ADAPTERS`) at ``path`` for ``task``."""
    if kind == "chen_kl":
        from heads.datasets.chen_kl import load_chen_kl

        return load_chen_kl(path, task=task, **options)
    if kind == "csv":
        from heads.datasets.csv_manifest import load_csv_manifest
        from orthonode.tasks.registry import get_task

        return load_csv_manifest(path, task=task, labels=get_task(task).labels, **options)
    if kind == "mrnet":
        from heads.datasets.mrnet import load_mrnet

        return load_mrnet(path, task=task, **options)
    if kind == "kneemri":
        from heads.datasets.kneemri import load_kneemri

        return load_kneemri(path, task=task, **options)
    if kind == "mura":
        from heads.datasets.mura import load_mura

        return load_mura(path, task=task, **options)
    raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(ADAPTERS)}")
