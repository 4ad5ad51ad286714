"""Findings of a full-size film for the report and key-image writers' tests (issue 14): a synthetic
two-knee frontal film (orthonode.peers.synthetic, no patient data) with a KL finding per joint box, and
the not-graded outcomes of a lateral film and of a film without a knee."""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from conformance import samples
from orthonode.encode import codes as oc
from orthonode.inference.findings import Finding, ModelIdentity, NotGraded, SourceImage
from orthonode.peers import synthetic

MODEL = ModelIdentity(name="OrthoFoundation KL grade", version="enc 1 / head 1", parameters={"crop": "224"})
ROWS, COLS = 300, 400
#: (x0, y0, x1, y1) of the joint on the image's left (the patient's right) and on its right.
BOXES = ((40.0, 90.0, 160.0, 210.0), (250.5, 80.25, 370.0, 200.0))


def source_of(ds: Dataset) -> SourceImage:
    return SourceImage(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), None)


def film(study_uid: str | None = None, seed: int = 0, laterality: str = "L") -> Dataset:
    """A synthetic bilateral frontal film (ROWS x COLS); ``laterality`` as its header says."""
    ds = synthetic.radiograph(study_uid or synthetic.new_study_uid(), rows=ROWS, cols=COLS, seed=seed)
    ds = copy.deepcopy(ds)
    ds.ImageLaterality = laterality
    return ds


def knee_finding(
    ds: Dataset,
    box: tuple[float, float, float, float],
    laterality: str | None,
    grade: int,
    *,
    notes: tuple[str, ...] = (),
    overview: bool = True,
    model: ModelIdentity = MODEL,
) -> Finding:
    """A KL finding of the joint in ``box`` (the conformance samples' builder), with a 64 x 64 crop and,
    when ``overview``, the film at a quarter of its size."""
    whole = np.tile(np.linspace(0.2, 0.8, COLS // 4, dtype=np.float32), (ROWS // 4, 1))
    return samples.kl_finding(
        ds,
        model,
        grade,
        (64, 64),
        laterality=laterality,
        region=box,
        overview=whole if overview else None,
        notes=notes,
    )


def bilateral_findings(ds: Dataset) -> list[Finding]:
    """The two knees of ``film()``: the right one graded 1, the left one 3 with a disagreement note."""
    return [
        knee_finding(ds, BOXES[0], "R", 1),
        knee_finding(
            ds, BOXES[1], None, 3, notes=("header says R, joint position says L: side not reported",)
        ),
    ]


def not_graded(ds: Dataset, reason: str, code: Code, laterality: str | None = None) -> NotGraded:
    task = oc.task_codes("kl_grade")
    return NotGraded(
        task="kl_grade",
        title=task.concept.meaning,
        finding_site=task.finding_site,
        laterality=laterality,
        reason=reason,
        reason_code=code,
        source=source_of(ds),
        model=MODEL,
    )
