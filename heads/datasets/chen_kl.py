"""Chen 2018 knee KL dataset: ``{split}/{grade 0..4}/{file}.png`` (Mendeley Data doi:10.17632/56rmx5bjcr.1).

Chen, Pingjun (2018). *Knee Osteoarthritis Severity Grading Dataset*, CC BY 4.0, crops of OAI knee
radiographs. The official ``train`` / ``val`` / ``test`` folders are kept as the splits.

Patient key (decision, documented): the dataset publishes no patient table, but its file names are
``{OAI patient id}{L|R}.png`` (e.g. ``9001695L.png``; ``9003126L.png`` and ``9003126R.png`` are the two
knees of one participant). The patient key is therefore the file stem's leading run of digits, and the
side is the letter after it. In ``../shared/data/knee_kl224`` this agrees with ``manifest.csv``'s
``patient_id`` / ``side`` columns, and both knees of a patient are always in the same split (the loader
checks it: :class:`~heads.datasets.base.PatientLeakError`). A stem with no leading digits is its own
patient (one image, one key) -- the conservative choice that can never merge two patients.
"""

from __future__ import annotations

import re
from pathlib import Path

from heads.datasets.base import DatasetError, LabelledDataset, Sample

NAME = "chen_kl"
SPLITS = ("train", "val", "test")
NUM_GRADES = 5
_STEM = re.compile(r"^(?P<patient>\d+)(?P<side>[LR])?")


def patient_key(stem: str) -> tuple[str, str | None]:
    """``(patient key, side)`` of a file stem: ``"9003126R"`` -> ``("9003126", "R")``."""
    match = _STEM.match(stem)
    if match is None:
        return stem, None
    return match.group("patient"), match.group("side")


def load_chen_kl(
    root: Path,
    *,
    splits: tuple[str, ...] = SPLITS,
    task: str = "kl_grade",
    limit_per_class: int | None = None,
) -> LabelledDataset:
    """The Chen 2018 folders under ``root`` (``train``, ``val``, ``test``; absent splits are skipped).

    ``limit_per_class`` keeps the first N files (sorted by name) of each split/grade folder, for tests.
    """
    root = Path(root)
    samples: list[Sample] = []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for grade in range(NUM_GRADES):
            grade_dir = split_dir / str(grade)
            if not grade_dir.is_dir():
                continue
            files = sorted(p for p in grade_dir.iterdir() if p.suffix.lower() == ".png")
            if limit_per_class is not None:
                files = files[:limit_per_class]
            for path in files:
                patient, side = patient_key(path.stem)
                samples.append(
                    Sample(
                        key=f"{split}/{grade}/{path.name}",
                        paths=(path,),
                        label=grade,
                        patient_id=patient,
                        split=split,
                        kind="image",
                        side=side,
                    )
                )
    if not samples:
        raise DatasetError(f"no {{split}}/{{0..4}}/*.png files under {root} (Chen 2018 layout)")
    return LabelledDataset(
        NAME, task, root, samples, NUM_GRADES, notes="patient key = numeric prefix of the file stem"
    )
