"""The key image of a joint on a full-size film (issue 14): the whole film with every joint box labelled,
beside the crop the model saw; and what build_outputs emits for a film's joints and not-graded outcomes."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from support import fullsize

from conformance.validate import validate_file
from orthonode.encode import codes as oc
from orthonode.encode import sc as scm
from orthonode.encode.outputs import build_outputs
from orthonode.encode.sr import read_outcomes

CREATED = datetime.datetime(2026, 3, 4, 5, 6, 7)


def _is(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1)


def test_the_film_panel_shows_every_box_of_the_image_scaled_to_the_overview() -> None:
    ds = fullsize.film()
    right, left = fullsize.bilateral_findings(ds)
    height = 600
    panel = scm.film_panel(right, [right, left], ds, height)
    scale = height / fullsize.ROWS  # the overview keeps the film's aspect
    assert panel.shape == (height, round(fullsize.COLS * scale), 3)
    own = _is(panel, scm.OWN_BOX_COLOUR)
    other = _is(panel, scm.OTHER_BOX_COLOUR)
    x0, y0, x1, y1 = (round(v * scale) for v in fullsize.BOXES[0])
    assert own[(y0 + y1) // 2, x0 - 1 : x0 + 4].any(), "the finding's own box at its scaled position"
    assert not own[(y0 + y1) // 2, (x0 + x1) // 2], "the box is an outline"
    _ox0, oy0, ox1, oy1 = (round(v * scale) for v in fullsize.BOXES[1])
    assert other[(oy0 + oy1) // 2, ox1 - 3 : ox1 + 2].any(), "the other joint's box in the other colour"
    assert not other[:, : x1 + 2].any(), "nothing of the other colour near the own box"


def test_labels_say_side_and_result() -> None:
    ds = fullsize.film()
    right, left = fullsize.bilateral_findings(ds)
    assert (scm.box_label(right), scm.box_label(left)) == ("R KL 1", "? KL 3")
    untrained = dataclasses.replace(right, model=dataclasses.replace(right.model, trained=False))
    assert scm.box_label(untrained) == "R untrained"


def test_only_the_same_task_on_the_same_image_is_drawn() -> None:
    ds, other_film = fullsize.film(seed=0), fullsize.film(seed=1)
    right, left = fullsize.bilateral_findings(ds)
    elsewhere = fullsize.knee_finding(other_film, fullsize.BOXES[1], "L", 2)
    tkr = dataclasses.replace(left, task="tkr")
    boxes = scm.film_boxes(right, [right, left, elsewhere, tkr])
    assert [(f is right, own) for f, _, own in boxes] == [(True, True), (False, False)]


def test_the_key_image_is_film_then_crop_and_a_finding_without_overview_is_unchanged() -> None:
    ds = fullsize.film()
    right, left = fullsize.bilateral_findings(ds)
    crop = scm.burn_text(scm.compose(right.key_image, right.heatmap), scm.text_lines(right))
    picture = scm.key_picture(right, ds, [right, left])
    assert picture.shape[0] == crop.shape[0]
    assert np.array_equal(picture[:, -crop.shape[1] :], crop), "the crop the model saw, as before"
    assert picture.shape[1] > crop.shape[1] + scm.PANEL_GAP
    plain = dataclasses.replace(right, overview=None)
    assert np.array_equal(scm.key_picture(plain, ds), crop)
    without_rows = pydicom.Dataset()
    without_rows.update(ds)
    del without_rows.Rows
    with pytest.raises(scm.KeyImageError, match="Rows/Columns"):
        scm.key_picture(right, without_rows)


def test_outputs_of_a_film_with_two_joints_and_a_lateral(tmp_path: Path) -> None:
    frontal = fullsize.film(seed=0, laterality="B")
    lateral = fullsize.film(str(frontal.StudyInstanceUID), seed=1, laterality="L")
    findings = [dataclasses.replace(f, laterality=None) for f in fullsize.bilateral_findings(frontal)]
    outcome = fullsize.not_graded(lateral, "not graded: lateral view", oc.NOT_GRADED_LATERAL, "L")
    evidence = {str(d.SOPInstanceUID): d for d in (frontal, lateral)}
    outputs = build_outputs(
        findings,
        evidence,
        study_uid=str(frontal.StudyInstanceUID),
        version=1,
        created=CREATED,
        not_graded=[outcome],
    )
    assert [o.kind for o in outputs] == ["sr", "sc", "sc"], "no key image for a not-graded outcome"
    assert len({o.sop_uid for o in outputs}) == 3 and len({o.task for o in outputs}) == 3
    assert outputs[0].summary["not_graded"] == [outcome.summary()]
    assert len(outputs[0].summary["findings"]) == 2
    again = build_outputs(
        findings,
        evidence,
        study_uid=str(frontal.StudyInstanceUID),
        version=1,
        created=CREATED,
        not_graded=[outcome],
    )
    assert [o.sop_uid for o in again] == [o.sop_uid for o in outputs], "deterministic UIDs"
    for output in outputs:
        path = tmp_path / f"{output.kind}-{output.sop_uid}.dcm"
        path.write_bytes(output.to_bytes())
        if output.kind == "sc":
            report = validate_file(path)
            assert report.ok, report.lines()
            assert "whole film" in str(output.dataset.DerivationDescription)
    read = read_outcomes(outputs[0].dataset)
    assert len(read.findings) == 2 and read.not_graded[0].code == ("NGLATERAL", "99ORTHO")


def test_outputs_of_not_graded_outcomes_alone() -> None:
    hip = fullsize.film()
    outcome = fullsize.not_graded(hip, "no knee joint found", oc.NO_KNEE_JOINT)
    outputs = build_outputs(
        [], {str(hip.SOPInstanceUID): hip}, study_uid=str(hip.StudyInstanceUID), version=2, created=CREATED,
        not_graded=[outcome],
    )  # fmt: skip
    assert [o.kind for o in outputs] == ["sr"]
    assert outputs[0].summary == {"findings": [], "not_graded": [outcome.summary()]}
