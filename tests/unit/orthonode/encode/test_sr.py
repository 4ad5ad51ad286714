"""The SR writer: TID 1500 in a Comprehensive 3D SR, validated with dciodvfy, dsrdump and highdicom."""

from __future__ import annotations

import datetime
import io
import re
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from support.peers.dcmtk import dciodvfy, dsrdump

from conformance.validate import ACCEPTED_WARNINGS
from orthonode.encode import codes as oc
from orthonode.encode import sr as srm
from orthonode.encode import uids
from orthonode.inference.findings import Finding, ModelIdentity, SourceImage

CR_FILES = ("pydicom_cspine_CR1_6154.dcm", "pydicom_cspine_CR2_6247.dcm")
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CREATED = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)

# dciodvfy warnings we accept, each with its reason: the product's list (orthonode validate uses it too).
ACCEPTED_DCIODVFY_WARNINGS = ACCEPTED_WARNINGS

TRAINED = ModelIdentity(
    name="OrthoFoundation KL grade",
    version="enc 3f2a9c1d / head 1.0.0",
    parameters={"arch": "vit_test_patch16_dinov3", "img_size": "224"},
)
MRI_MODEL = ModelIdentity(name="OrthoFoundation knee MRI", version="enc 3f2a9c1d / head 0.3.1")
UNTRAINED = ModelIdentity(name="OrthoFoundation KL grade", version="random / head 0.0.0", trained=False)


# ------------------------------------------------------------------------------------------------ builders


def _source(ds: Dataset, frame: int | None = None) -> SourceImage:
    return SourceImage(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), frame)


def _finding(
    task: str, laterality: str | None, label: int, p: float, sources: list[SourceImage], model: ModelIdentity
) -> Finding:
    codes = oc.TASK_CONCEPTS[task]
    return Finding(
        task=task,
        title=codes.concept.meaning,
        finding_site=codes.finding_site,
        laterality=laterality,
        concept=codes.concept,
        value=codes.values[label],
        probability=p,
        probabilities={
            m: (p if i == label else (1 - p) / (len(codes.values) - 1)) for i, m in enumerate(codes.labels)
        },
        sources=tuple(sources),
        model=model,
        key_source=sources[0],
        key_image=np.zeros((16, 16), np.float32),
    )


@pytest.fixture
def radiographs(shared_data: Path) -> list[Dataset]:
    return [
        pydicom.dcmread(shared_data / "dicom_msk" / "other" / name, stop_before_pixels=True)
        for name in CR_FILES
    ]


@pytest.fixture
def knee_findings(radiographs: list[Dataset]) -> list[Finding]:
    left, right = radiographs
    return [
        _finding("kl_grade", "L", 2, 0.6123456789, [_source(left)], TRAINED),
        _finding("kl_grade", "R", 0, 0.875, [_source(right)], TRAINED),
        _finding("kl_progression_4y", "L", 1, 0.3125, [_source(left)], TRAINED),
    ]


def _synthetic_mr_study() -> list[Dataset]:
    """Three MR slices and one Enhanced MR instance of a made-up right-knee study (headers only)."""
    study, series, enhanced_series = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i, (sop_class, series_uid) in enumerate(
        [(MR_IMAGE_STORAGE, series)] * 3 + [(ENHANCED_MR_STORAGE, enhanced_series)], start=1
    ):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Synthetic^Knee",
            "SYN0001",
            "19700101",
            "F",
        )
        ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "ACC42", "S1", "20240101", "101010"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.Manufacturer, ds.InstanceNumber, ds.Laterality = "MR", "Synthetic", i, "R"
        if sop_class == ENHANCED_MR_STORAGE:
            ds.NumberOfFrames = 20
        out.append(ds)
    return out


def _walk(items: pydicom.Sequence) -> Iterator[Dataset]:
    for item in items:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def _name(item: Dataset) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return (str(c.CodeValue), str(c.CodingSchemeDesignator))


def _build(
    findings: list[Finding], evidence: list[Dataset], created: datetime.datetime | None = CREATED
) -> hd.sr.Comprehensive3DSR:
    study = str(evidence[0].StudyInstanceUID)
    return srm.build_report(
        findings,
        evidence,
        series_uid=uids.report_series_uid(study, 1),
        sop_uid=uids.report_sop_uid(study, 1),
        created=created,
    )


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _unexpected_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if not any(re.search(p, w) for p, _ in ACCEPTED_DCIODVFY_WARNINGS)]


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("case", ["knee_radiograph", "synthetic_mr", "untrained"])
def test_dciodvfy_finds_no_errors(case: str, radiographs: list[Dataset], tmp_path: Path) -> None:
    if case == "synthetic_mr":
        mr = _synthetic_mr_study()
        findings = [
            _finding("acl_injury", "R", 1, 0.91, [_source(d) for d in mr[:3]], MRI_MODEL),
            _finding("meniscus_injury", "R", 0, 0.7, [_source(mr[3], 5), _source(mr[3], 6)], MRI_MODEL),
        ]
        evidence = mr
    else:
        model = UNTRAINED if case == "untrained" else TRAINED
        findings = [_finding("kl_grade", "L", 3, 0.55, [_source(radiographs[0])], model)]
        evidence = radiographs
    path = _save(_build(findings, evidence), tmp_path / f"{case}.dcm")
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert _unexpected_warnings(warnings) == []


def test_values_survive_strict_writing(knee_findings: list[Finding], radiographs: list[Dataset]) -> None:
    """pydicom's strict VR validation on write: every value fits its VR (no dciodvfy needed)."""
    sr = _build(knee_findings, radiographs)
    old = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    try:
        sr.save_as(io.BytesIO(), enforce_file_format=True)
    finally:
        pydicom.config.settings.writing_validation_mode = old


def test_dsrdump_shows_the_tree(
    knee_findings: list[Finding], radiographs: list[Dataset], tmp_path: Path
) -> None:
    path = _save(_build(knee_findings, radiographs), tmp_path / "sr.dcm")
    text = dsrdump(path, "+Pu", "+Pc", "+Pl")
    for expected in [
        "Imaging Measurement Report",
        "Kellgren-Lawrence grade",
        "Kellgren-Lawrence grade 2",
        "Kellgren-Lawrence grade 0",
        "Progression",
        "Probability",
        "0.6123456789",
        "0.875",
        "{probability}",
        "Algorithm Name",
        TRAINED.name,
        TRAINED.version,
        "arch=vit_test_patch16_dinov3",
        "Knee joint",
        "Left",
        "Right",
        srm.DISCLAIMER,
        str(radiographs[0].SOPInstanceUID),
        str(radiographs[1].SOPInstanceUID),
    ]:
        assert expected in text, f"{expected!r} not in dsrdump output"


# ------------------------------------------------------------------------------------------------ content


def test_read_back_with_highdicom(
    knee_findings: list[Finding], radiographs: list[Dataset], tmp_path: Path
) -> None:
    path = _save(_build(knee_findings, radiographs), tmp_path / "sr.dcm")
    ds = pydicom.dcmread(path)
    source = radiographs[0]

    # same study and patient, new series, our SOP class
    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
    assert ds.AccessionNumber == source.AccessionNumber
    assert ds.SeriesInstanceUID not in {r.SeriesInstanceUID for r in radiographs}
    assert ds.SeriesInstanceUID == uids.report_series_uid(str(source.StudyInstanceUID), 1)
    assert ds.SeriesNumber == 9901 and ds.Modality == "SR"
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription and "UNTRAINED" not in ds.SeriesDescription
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")

    # Contributing Equipment: the algorithm as processing equipment (IHE AIR)
    ours = [e for e in ds.ContributingEquipmentSequence if e.get("ManufacturerModelName") == TRAINED.name]
    assert len(ours) == 1
    assert ours[0].SoftwareVersions == TRAINED.version
    assert ours[0].Manufacturer == TRAINED.manufacturer
    purpose = ours[0].PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
    assert "ContributionDateTime" in ours[0]

    # our private scheme is declared
    declared = {str(i.CodingSchemeDesignator) for i in ds.CodingSchemeIdentificationSequence}
    assert "99ORTHO" in declared

    # evidence lists every source instance
    evidence = {
        str(inst.ReferencedSOPInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert evidence == {str(r.SOPInstanceUID) for r in radiographs}

    # highdicom's parser finds one group per finding with the values we put in
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = report.get_image_measurement_groups()
    assert len(groups) == len(knee_findings)
    for group, finding in zip(groups, knee_findings, strict=True):
        evaluation = group.get_qualitative_evaluations(name=finding.concept)
        assert len(evaluation) == 1
        assert evaluation[0].value == finding.value
        (measurement,) = group.get_measurements(name=oc.PROBABILITY)
        assert measurement.value == pytest.approx(finding.probability, abs=1e-9)
        assert measurement.unit == oc.PROBABILITY_UNIT
        (site,) = group.finding_sites
        assert site.value == finding.finding_site
        assert site.laterality == oc.laterality_code(finding.laterality)
        assert group.tracking_uid == uids.tracking_uid(
            str(ds.SOPInstanceUID), finding.task, finding.laterality
        )

    # the device observer is the algorithm
    (observer,) = [
        o for o in report.get_observer_contexts() if o.observer_type == pydicom.sr.codedict.codes.DCM.Device
    ]
    device = observer.observer_identifying_attributes
    assert device.name == TRAINED.name and device.serial_number == TRAINED.version
    assert device.uid == uids.device_observer_uid(TRAINED.name, TRAINED.version)


def test_tree_by_hand(knee_findings: list[Finding], radiographs: list[Dataset]) -> None:
    """Independent of highdicom's parser: walk the content items with pydicom."""
    ds = _build(knee_findings, radiographs)
    groups = [
        item
        for item in _walk(ds.ContentSequence)
        if item.ValueType == "CONTAINER" and _name(item) == ("125007", "DCM")  # Measurement Group
    ]
    assert len(groups) == 3
    first = groups[0]
    items = list(_walk(first.ContentSequence))
    codes_ = {_name(i): i.ConceptCodeSequence[0] for i in items if i.ValueType == "CODE"}
    answer = codes_[("KLG", "99ORTHO")]
    assert (answer.CodeValue, answer.CodingSchemeDesignator, answer.CodeMeaning) == (
        "KLG2",
        "99ORTHO",
        "Kellgren-Lawrence grade 2",
    )
    texts = {_name(i): str(i.TextValue) for i in items if i.ValueType == "TEXT"}
    assert texts[("111001", "DCM")] == TRAINED.name
    assert texts[("111003", "DCM")] == TRAINED.version
    parameters = [str(i.TextValue) for i in items if i.ValueType == "TEXT" and _name(i) == ("111002", "DCM")]
    assert parameters == ["arch=vit_test_patch16_dinov3", "img_size=224"]
    assert texts[("121106", "DCM")] == "Research use only. Not for diagnostic use."
    (num,) = [i for i in items if i.ValueType == "NUM"]
    assert _name(num) == ("122157", "DCM")
    assert float(num.MeasuredValueSequence[0].NumericValue) == pytest.approx(0.6123456789, abs=1e-9)
    unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("{probability}", "UCUM")
    images = [i for i in items if i.ValueType == "IMAGE"]
    assert [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in images] == [
        str(radiographs[0].SOPInstanceUID)
    ]
    assert str(images[0].ReferencedSOPSequence[0].ReferencedSOPClassUID) == str(radiographs[0].SOPClassUID)


def test_frames_of_multiframe_sources_are_referenced() -> None:
    mr = _synthetic_mr_study()
    finding = _finding("meniscus_injury", "R", 1, 0.7, [_source(mr[3], 5), _source(mr[3], 6)], MRI_MODEL)
    ds = _build([finding], mr)
    images = [i for i in _walk(ds.ContentSequence) if i.ValueType == "IMAGE"]
    frames = [int(i.ReferencedSOPSequence[0].ReferencedFrameNumber) for i in images]
    assert frames == [5, 6]
    assert ds.PatientName == "Synthetic^Knee" and ds.StudyInstanceUID == mr[0].StudyInstanceUID


def test_read_report_summarises(
    knee_findings: list[Finding], radiographs: list[Dataset], tmp_path: Path
) -> None:
    path = _save(_build(knee_findings, radiographs), tmp_path / "sr.dcm")
    summaries = srm.read_report(pydicom.dcmread(path))
    assert [(s.task, s.laterality, s.value) for s in summaries] == [
        ("kl_grade", "L", "Kellgren-Lawrence grade 2"),
        ("kl_grade", "R", "Kellgren-Lawrence grade 0"),
        ("kl_progression_4y", "L", "Progression"),
    ]
    assert [s.probability for s in summaries] == pytest.approx([0.6123456789, 0.875, 0.3125])
    assert {s.model for s in summaries} == {TRAINED.name}
    assert {s.model_version for s in summaries} == {TRAINED.version}
    assert all(s.trained for s in summaries)
    assert summaries[0].title == "Kellgren-Lawrence grade"
    assert summaries[0].code == ("KLG2", "99ORTHO")
    assert summaries[1].sources == (str(radiographs[1].SOPInstanceUID),)


# ------------------------------------------------------------------------------------------------ untrained


def test_untrained_says_so_and_presents_no_finding(radiographs: list[Dataset]) -> None:
    finding = _finding("kl_grade", "L", 3, 0.55, [_source(radiographs[0])], UNTRAINED)
    ds = _build([finding], radiographs)
    assert "UNTRAINED" in ds.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    assert ds.CompletionFlag == "PARTIAL" and ds.VerificationFlag == "UNVERIFIED"
    items = list(_walk(ds.ContentSequence))
    task_concepts = {(t.concept.value, t.concept.scheme_designator) for t in oc.TASK_CONCEPTS.values()}
    assert not [i for i in items if i.ValueType == "CODE" and _name(i) in task_concepts], "no coded finding"
    assert not [i for i in items if i.ValueType == "NUM"], "no probability for an untrained model"
    status = [
        i.ConceptCodeSequence[0]
        for i in items
        if i.ValueType == "CODE" and _name(i) == ("RESULTSTATUS", "99ORTHO")
    ]
    assert [(s.CodeValue, s.CodingSchemeDesignator) for s in status] == [("NOTFINDING", "99ORTHO")]
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    names = [str(i.TextValue) for i in items if i.ValueType == "TEXT" and _name(i) == ("111001", "DCM")]
    assert names and all("UNTRAINED" in n for n in names)
    mentioning = [t for t in texts if "Kellgren-Lawrence grade 3" in t]
    assert mentioning, "the raw output is kept for debugging"
    assert all(t.startswith("UNTRAINED MODEL - NOT A FINDING") for t in mentioning)
    equipment = [
        e for e in ds.ContributingEquipmentSequence if "UNTRAINED" in str(e.get("ManufacturerModelName", ""))
    ]
    assert len(equipment) == 1

    (summary,) = srm.read_report(ds)
    assert summary.trained is False
    assert summary.probability is None
    assert summary.task == "kl_grade" and summary.laterality == "L"
    assert "not a finding" in summary.value
    assert "UNTRAINED" in summary.model


def test_mixed_models_report_is_partial(radiographs: list[Dataset]) -> None:
    left = _source(radiographs[0])
    ds = _build(
        [_finding("kl_grade", "L", 1, 0.5, [left], TRAINED), _finding("tkr", "L", 0, 0.9, [left], UNTRAINED)],
        radiographs,
    )
    assert ds.CompletionFlag == "PARTIAL" and "UNTRAINED" in ds.SeriesDescription
    summaries = srm.read_report(ds)
    assert [(s.task, s.trained) for s in summaries] == [("kl_grade", True), ("tkr", False)]


# ------------------------------------------------------------------------------------------------ determinism


_TIME_KEYWORDS = {
    "ContentDate",
    "ContentTime",
    "SeriesDate",
    "SeriesTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContributionDateTime",
}


def _without_times(ds: Dataset) -> Dataset:
    copy = pydicom.dcmread(io.BytesIO(_bytes(ds)))

    def strip(d: Dataset) -> None:
        for elem in list(d):
            if elem.keyword in _TIME_KEYWORDS:
                del d[elem.tag]
            elif elem.VR == "SQ":
                for item in elem.value:
                    strip(item)

    strip(copy)
    return copy


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_same_findings_same_document(knee_findings: list[Finding], radiographs: list[Dataset]) -> None:
    first, second = _build(knee_findings, radiographs), _build(knee_findings, radiographs)
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert _bytes(first) == _bytes(second), "same findings and creation time must give identical bytes"


def test_same_findings_differ_only_in_times(knee_findings: list[Finding], radiographs: list[Dataset]) -> None:
    first = _build(knee_findings, radiographs, created=None)
    second = _build(knee_findings, radiographs, created=CREATED + datetime.timedelta(days=3, seconds=7))
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert _bytes(first) != _bytes(second)
    assert _without_times(first) == _without_times(second)


def test_different_version_different_uids(radiographs: list[Dataset]) -> None:
    study = str(radiographs[0].StudyInstanceUID)
    assert uids.report_sop_uid(study, 1) != uids.report_sop_uid(study, 2)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_raises(knee_findings: list[Finding], radiographs: list[Dataset]) -> None:
    with pytest.raises(srm.ReportError, match="at least one finding"):
        _build([], radiographs)
    with pytest.raises(srm.ReportError, match="not in the evidence"):
        _build(knee_findings, radiographs[1:])
    with pytest.raises(srm.ReportError, match="studies"):
        _build(knee_findings, [*radiographs, _synthetic_mr_study()[0]])
    bad = _finding("kl_grade", "L", 2, 1.5, [_source(radiographs[0])], TRAINED)
    with pytest.raises(srm.ReportError, match="outside"):
        _build([bad], radiographs)
