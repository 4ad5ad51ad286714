"""MRNet (Bien et al., *PLoS Medicine* 2018, doi:10.1371/journal.pmed.1002699), in its own layout.

::

    root/train/{axial,coronal,sagittal}/0000.npy ...   uint8 [slices, 256, 256]
    root/valid/{axial,coronal,sagittal}/1130.npy ...
    root/train-abnormal.csv, train-acl.csv, train-meniscus.csv   rows "0000,0" (no header)
    root/valid-abnormal.csv, valid-acl.csv, valid-meniscus.csv

MRNet publishes no patient identifiers: each exam number is its own patient key (one exam per knee
examination; the dataset's own train/valid split is kept, the hidden test set is not here). Tested on
fixtures in this exact layout written by the tests; no MRNet data is in this repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

from heads.datasets.base import DatasetError, LabelledDataset, Sample

NAME = "mrnet"
PLANES = ("axial", "coronal", "sagittal")
SPLITS = ("train", "valid")
#: Registered task -> MRNet label file stem.
TASK_FILES = {"acl_injury": "acl", "meniscus_injury": "meniscus", "mrnet_abnormal": "abnormal"}


def load_mrnet(root: Path, *, task: str = "acl_injury", plane: str = "sagittal") -> LabelledDataset:
    """MRNet exams of ``plane`` labelled for ``task`` (``acl_injury`` or ``meniscus_injury``)."""
    root = Path(root)
    if plane not in PLANES:
        raise DatasetError(f"unknown MRNet plane {plane!r}; choose one of {PLANES}")
    try:
        stem = TASK_FILES[task]
    except KeyError:
        raise DatasetError(f"MRNet has no labels for task {task!r}; it has {sorted(TASK_FILES)}") from None
    samples: list[Sample] = []
    for split in SPLITS:
        label_file = root / f"{split}-{stem}.csv"
        if not label_file.is_file():
            continue
        with open(label_file, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) != 2 or not row[0].strip().isdigit() or row[1].strip() not in {"0", "1"}:
                    raise DatasetError(f"{label_file.name}:{line}: expected 'NNNN,0|1', got {row}")
                exam = row[0].strip().zfill(4)
                volume = root / split / plane / f"{exam}.npy"
                if not volume.is_file():
                    raise DatasetError(f"{label_file.name}:{line}: missing volume {split}/{plane}/{exam}.npy")
                samples.append(
                    Sample(
                        key=f"{split}/{plane}/{exam}.npy",
                        paths=(volume,),
                        label=int(row[1]),
                        patient_id=f"mrnet-{exam}",
                        split=split,
                        kind="volume",
                        meta={"plane": plane},
                    )
                )
    if not samples:
        raise DatasetError(f"no MRNet label files ({'/'.join(SPLITS)}-{stem}.csv) under {root}")
    return LabelledDataset(NAME, task, root, samples, 2, notes="patient key = exam number")
