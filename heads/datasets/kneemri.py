"""KneeMRI (Štajduhar et al., *Comput. Methods Programs Biomed.* 2017, doi:10.1016/j.cmpb.2016.12.006).

917 sagittal PD-weighted fat-suppressed knee volumes (Clinical Hospital Centre Rijeka), each a pickled
numpy array ``{examId}-{seriesNo}.pck`` (uint16 [slices, 320, 320]) in folders ``vol01`` ... ``vol08``,
indexed by ``metadata.csv`` with the header::

    examId,seriesNo,aclDiagnosis,kneeLR,roiX,roiY,roiZ,roiHeight,roiWidth,roiDepth,volumeFilename

``aclDiagnosis`` is 0 healthy, 1 partially injured, 2 completely ruptured; ``kneeLR`` 0 left, 1 right.
For the binary ``acl_injury`` task the label is ``aclDiagnosis > threshold`` (default 0: any injury; use
1 for "complete tear"). The dataset has no official split and no patient column: the patient key is the
``patientID`` column if a copy has one, else ``examId``. The split is drawn by patient with a seed
(``test_fraction``). The ``.pck`` files are read with an unpickler that accepts numpy arrays only.
Tested on fixtures in this exact layout written by the tests; no KneeMRI data is in this repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

from heads.datasets.base import DatasetError, LabelledDataset, Sample, split_patients

NAME = "kneemri"
COLUMNS = (
    "examId", "seriesNo", "aclDiagnosis", "kneeLR", "roiX", "roiY", "roiZ",
    "roiHeight", "roiWidth", "roiDepth", "volumeFilename",
)  # fmt: skip


def _find_volume(root: Path, filename: str) -> Path:
    direct = root / filename
    if direct.is_file():
        return direct
    hits = sorted(root.glob(f"vol*/{filename}"))
    if not hits:
        raise DatasetError(f"KneeMRI volume {filename} not found under {root} (vol01..vol08)")
    return hits[0]


def load_kneemri(
    root: Path,
    *,
    task: str = "acl_injury",
    threshold: int = 0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> LabelledDataset:
    """KneeMRI volumes labelled ``aclDiagnosis > threshold``, split train/test by patient."""
    root = Path(root)
    if task != "acl_injury":
        raise DatasetError(f"KneeMRI only labels the ACL (task acl_injury), not {task!r}")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DatasetError(f"no metadata.csv under {root}")
    samples: list[Sample] = []
    with open(meta, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("examId", "aclDiagnosis", "kneeLR", "volumeFilename") if c not in header]
        if missing:
            raise DatasetError(f"metadata.csv lacks column(s) {', '.join(missing)}; expected {COLUMNS}")
        patient_col = next((c for c in ("patientID", "patientId", "patient_id") if c in header), "examId")
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                diagnosis = int(row["aclDiagnosis"])
            except ValueError:
                raise DatasetError(
                    f"metadata.csv:{line}: aclDiagnosis {row['aclDiagnosis']!r} is not 0/1/2"
                ) from None
            if diagnosis not in (0, 1, 2):
                raise DatasetError(f"metadata.csv:{line}: aclDiagnosis {diagnosis} is not 0/1/2")
            filename = row["volumeFilename"]
            samples.append(
                Sample(
                    key=filename,
                    paths=(_find_volume(root, filename),),
                    label=int(diagnosis > threshold),
                    patient_id=f"kneemri-{row[patient_col]}",
                    split="train",
                    kind="volume",
                    side={"0": "L", "1": "R"}.get(row["kneeLR"]),
                    meta={"aclDiagnosis": diagnosis, "plane": "sagittal"},
                )
            )
    if not samples:
        raise DatasetError("metadata.csv has no rows")
    _, test = split_patients(samples, test_fraction, seed) if len(samples) > 1 else (samples, [])
    test_keys = {s.key for s in test}
    samples = [
        Sample(
            s.key,
            s.paths,
            s.label,
            s.patient_id,
            "test" if s.key in test_keys else "train",
            s.kind,
            s.side,
            s.meta,
        )
        for s in samples
    ]
    return LabelledDataset(
        NAME, task, root, samples, 2, notes=f"label = aclDiagnosis > {threshold}; patient key = {patient_col}"
    )
