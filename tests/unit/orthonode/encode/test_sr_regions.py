"""The report of a full-size film (issue 14): a TID 1410 group with the joint's box per knee, the notes as
comments, not-graded outcomes as their own groups; validated by dciodvfy, dsrdump and highdicom."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from support import fullsize
from support.peers.dcmtk import dciodvfy, dsrdump

from conformance.validate import ACCEPTED_WARNINGS, validate_file
from orthonode.encode import codes as oc
from orthonode.encode import sr as srm
from orthonode.encode import uids
from orthonode.encode.sr_groups import finding_qualifiers

LATERAL = "not graded: lateral view"
NO_KNEE = "no knee joint found"


def _build(ds: Dataset, findings: list, not_graded: list, evidence: list[Dataset] | None = None) -> Dataset:
    study = str(ds.StudyInstanceUID)
    return srm.build_report(
        findings,
        evidence or [ds],
        series_uid=uids.report_series_uid(study, 1),
        sop_uid=uids.report_sop_uid(study, 1),
        not_graded=not_graded,
    )


def _walk(items: pydicom.Sequence) -> Iterator[Dataset]:
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def _code(item: Dataset, attribute: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    c = getattr(item, attribute)[0]
    return (str(c.CodeValue), str(c.CodingSchemeDesignator))


def _tracking_uids(ds: Dataset) -> list[str]:
    tracking = ("112040", "DCM")  # Tracking Unique Identifier
    return [str(i.UID) for i in _walk(ds.ContentSequence) if i.ValueType == "UIDREF" and _code(i) == tracking]


@pytest.fixture
def two_films() -> tuple[Dataset, Dataset]:
    frontal = fullsize.film(seed=0, laterality="R")
    lateral = fullsize.film(str(frontal.StudyInstanceUID), seed=1, laterality="L")
    return frontal, lateral


@pytest.fixture
def report(two_films: tuple[Dataset, Dataset]) -> Dataset:
    frontal, lateral = two_films
    outcome = fullsize.not_graded(lateral, LATERAL, oc.NOT_GRADED_LATERAL, "L")
    return _build(frontal, fullsize.bilateral_findings(frontal), [outcome], [frontal, lateral])


def test_a_region_finding_is_a_planar_roi_group_with_the_box_on_its_source(
    report: Dataset, two_films: tuple[Dataset, Dataset]
) -> None:
    frontal, _ = two_films
    sr = hd.sr.Comprehensive3DSR.from_dataset(report)
    content = hd.sr.MeasurementReport.from_sequence(sr.content)
    planar = content.get_planar_roi_measurement_groups()
    assert len(planar) == 2
    roi = planar[0].roi
    assert roi is not None and roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    x0, y0, x1, y1 = fullsize.BOXES[0]
    expected = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    np.testing.assert_allclose(roi.value, expected)
    reference = roi.ContentSequence[0].ReferencedSOPSequence[0]  # SELECTED FROM the source image
    assert reference.ReferencedSOPInstanceUID == frontal.SOPInstanceUID
    (evaluation,) = planar[0].get_qualitative_evaluations(name=oc.task_codes("kl_grade").concept)
    assert evaluation.value == oc.KL_GRADES[1]
    assert planar[0].finding_sites[0].laterality == oc.RIGHT
    assert planar[1].finding_sites[0].laterality is None
    # TID 1501 (image groups) holds only the not-graded outcome.
    (image_group,) = content.get_image_measurement_groups()
    (reason,) = image_group.get_qualitative_evaluations(name=oc.NOT_GRADED_REASON)
    assert reason.value == oc.NOT_GRADED_LATERAL


def test_notes_are_comments_and_the_not_graded_group_says_why(report: Dataset) -> None:
    texts = [str(i.TextValue) for i in _walk(report.ContentSequence) if i.ValueType == "TEXT"]
    assert "header says R, joint position says L: side not reported" in texts
    assert LATERAL in texts
    codes_ = [
        _code(i, "ConceptCodeSequence")
        for i in _walk(report.ContentSequence)
        if i.ValueType == "CODE" and _code(i) == (oc.NOT_GRADED_REASON.value, "99ORTHO")
    ]
    assert codes_ == [("NGLATERAL", "99ORTHO")]
    assert report.CompletionFlag == "COMPLETE"  # a recorded reason is complete content (sr docstring)


def test_tracking_uids_are_unique_and_stable(report: Dataset, two_films: tuple[Dataset, Dataset]) -> None:
    uids_ = _tracking_uids(report)
    assert len(uids_) == 3 and len(set(uids_)) == 3
    frontal, _ = two_films
    findings = fullsize.bilateral_findings(frontal)
    # Two joints of one film with the same task and no side still get distinct UIDs.
    both_unknown = [dataclasses.replace(f, laterality=None) for f in findings]
    qualifiers = finding_qualifiers(both_unknown)
    assert qualifiers[0] != qualifiers[1] and qualifiers[0][:2] == (str(frontal.SOPInstanceUID), "1")
    assert finding_qualifiers(list(reversed(both_unknown))) == list(reversed(qualifiers)), "rank by position"
    again = _build(frontal, both_unknown, [])
    ids = _tracking_uids(again)
    assert len(set(ids)) == 2


def test_read_outcomes_gives_regions_notes_and_not_graded(
    report: Dataset, two_films: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    frontal, lateral = two_films
    path = tmp_path / "sr.dcm"
    report.save_as(path, enforce_file_format=True)
    outcomes = srm.read_outcomes(pydicom.dcmread(path))
    right, left = outcomes.findings
    assert (right.laterality, right.value, right.notes) == ("R", "Kellgren-Lawrence grade 1", ())
    assert right.region is not None and right.region.box == pytest.approx(fullsize.BOXES[0])
    assert right.region.source == str(frontal.SOPInstanceUID) and right.region.graphic_type == "POLYLINE"
    assert right.sources == (str(frontal.SOPInstanceUID),) and right.comment == srm.DISCLAIMER
    assert left.laterality is None and left.notes == (
        "header says R, joint position says L: side not reported",
    )
    assert left.region is not None and left.region.box == pytest.approx(fullsize.BOXES[1])
    (outcome,) = outcomes.not_graded
    assert (outcome.task, outcome.title, outcome.laterality, outcome.reason, outcome.code) == (
        "kl_grade",
        "Kellgren-Lawrence grade",
        "L",
        LATERAL,
        ("NGLATERAL", "99ORTHO"),
    )
    assert outcome.sources == (str(lateral.SOPInstanceUID),) and outcome.trained
    assert outcome.model == fullsize.MODEL.name
    assert srm.read_report(pydicom.dcmread(path)) == outcomes.findings


def test_a_report_of_only_not_graded_outcomes(tmp_path: Path) -> None:
    hip = fullsize.film(seed=3)
    ds = _build(hip, [], [fullsize.not_graded(hip, NO_KNEE, oc.NO_KNEE_JOINT)])
    assert srm.read_report(ds) == []
    (outcome,) = srm.read_outcomes(ds).not_graded
    assert outcome.code == ("NOKNEEJOINT", "99ORTHO") and outcome.reason == NO_KNEE
    with pytest.raises(srm.ReportError, match="at least one finding or not-graded"):
        _build(hip, [], [])
    other = fullsize.film(seed=4)
    with pytest.raises(srm.ReportError, match="not in the evidence"):
        _build(hip, [], [fullsize.not_graded(other, NO_KNEE, oc.NO_KNEE_JOINT)])


def test_a_box_that_is_not_a_box_is_refused() -> None:
    ds = fullsize.film()
    bad = fullsize.knee_finding(ds, (100.0, 10.0, 50.0, 20.0), "R", 1)
    with pytest.raises(srm.ReportError, match="not a box"):
        _build(ds, [bad], [])


@pytest.mark.parametrize("case", ["regions_and_lateral", "no_knee_only"])
def test_validators_pass(
    case: str, two_films: tuple[Dataset, Dataset], report: Dataset, tmp_path: Path
) -> None:
    if case == "no_knee_only":
        hip = two_films[0]
        report = _build(hip, [], [fullsize.not_graded(hip, NO_KNEE, oc.NO_KNEE_JOINT)])
    path = tmp_path / f"{case}.dcm"
    report.save_as(path, enforce_file_format=True)
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert [w for w in warnings if not any(re.search(p, w) for p, _ in ACCEPTED_WARNINGS)] == []
    text = dsrdump(path, "+Pu", "+Pc")
    assert "Not graded" in text or "No knee joint found" in text
    checked = validate_file(path)
    assert checked.ok, checked.lines()
    assert {"parse", "dciodvfy", "dsrdump", "highdicom"} <= set(checked.checks)
    assert not checked.warnings, checked.warnings
