"""The findings as a DICOM Structured Report: TID 1500 Measurement Report in a Comprehensive 3D SR.

Built only with highdicom constructors (``MeasurementReport``, ``Comprehensive3DSR``), following the IHE
Radiology "AI Results" (AIR) profile: the algorithm is identified in the content (TID 4019 Algorithm
Identification in every group, and as the Device observer of TID 1002/1004) and in the Contributing
Equipment Sequence (0018,A001) of the SOP Common Module (PS3.3 C.12.1) with Purpose of Reference
(DCM 109102, "Processing Equipment", CID 7005).

Content tree (PS3.16 TID 1500):

- Observer context: the algorithm as a Device observer (TID 1004): a deterministic Device Observer UID,
  the model's name, manufacturer, model name, and the model version as serial number.
- One measurement group per finding (task and side; per knee joint on a full-size film) and one per
  not-graded outcome, in that order (:mod:`orthonode.encode.sr_groups`): TID 1501 for a finding without
  an image region, TID 1410 "Planar ROI Measurements and Qualitative Evaluations" with the joint's box as
  a closed POLYLINE SCOORD on the source image for a finding with one, TID 1501 with a coded "Reason not
  graded" for an outcome without a grade. ``Finding.notes`` are TEXT comments of the group.
- An untrained model (``ModelIdentity.trained`` False) still gets its group, but the answer is replaced
  by ``99ORTHO RESULTSTATUS = NOTFINDING`` ("Untrained model output, not a finding"); the raw output
  appears only in a comment that starts with "UNTRAINED MODEL - NOT A FINDING"; the algorithm name
  carries "UNTRAINED"; no probability measurement is written; and the Series Description says UNTRAINED.

The disclaimer: TID 1500 has no free-text item at the document level, but TID 1501 and TID 1410 allow
TEXT qualitative evaluations in each group, so the disclaimer is there; it is also in the Series
Description (the SR Document General Module has no comment attribute that viewers show).

Completion Flag (0040,A491) is COMPLETE when every group comes from a trained model, PARTIAL otherwise;
Verification Flag is always UNVERIFIED and Preliminary Flag PRELIMINARY (PS3.3 C.17.2): no human has
verified an AI result. A not-graded outcome does not make the report PARTIAL: PS3.3 C.17.2.1 defines
the flag as the completeness of the document's content against the criteria of its creator, and the
node's criterion is that every routed image has its outcome recorded, a grade or the coded reason why
there is none ("not graded: lateral view", "no knee joint found"). Those are complete statements, not
missing content. PARTIAL stays the flag of untrained output, whose content is no finding at all.

Reading back: :func:`read_outcomes` returns the findings (:class:`ReportedFinding`, with the region's
box and source, and the notes) and the not-graded outcomes (:class:`ReportedNotGraded`) in document
order; :func:`read_report` returns the findings alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.valuerep import DA, DT, TM

from orthonode.encode import codes as oc
from orthonode.encode.sr_groups import (
    DISCLAIMER,
    MAX_LO,
    SERIES_DESCRIPTION,
    SERIES_DESCRIPTION_UNTRAINED,
    UNTRAINED_STATEMENT,
    Group,
    ReportError,
    finding_group,
    finding_qualifiers,
    model_display_name,
    not_graded_group,
)
from orthonode.encode.uids import device_observer_uid
from orthonode.inference.findings import NODE_MANUFACTURER, UNTRAINED_MARK, Finding, ModelIdentity, NotGraded

__all__ = [
    "DEFAULT_SERIES_NUMBER",
    "DISCLAIMER",
    "MAX_LO",
    "NODE_MANUFACTURER",
    "SERIES_DESCRIPTION",
    "SERIES_DESCRIPTION_UNTRAINED",
    "UNTRAINED_STATEMENT",
    "ReportError",
    "ReportOutcomes",
    "ReportedFinding",
    "ReportedNotGraded",
    "ReportedRegion",
    "build_report",
    "model_display_name",
    "read_outcomes",
    "read_report",
]

DEFAULT_SERIES_NUMBER = 9901


def _unique_models(outcomes: Sequence[Finding | NotGraded]) -> list[ModelIdentity]:
    seen: list[ModelIdentity] = []
    for outcome in outcomes:
        if outcome.model not in seen:
            seen.append(outcome.model)
    return seen


def _observation_context(models: Sequence[ModelIdentity]) -> hd.sr.ObservationContext:
    """TID 1002 with one Device observer (TID 1004) standing for the algorithm(s)."""
    names = [model_display_name(m) for m in models]
    versions = [m.version for m in models]
    name = names[0] if len(names) == 1 else "; ".join(names)
    version = versions[0] if len(set(versions)) == 1 else "; ".join(versions)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(name, version),
        name=name,
        manufacturer_name=models[0].manufacturer,
        model_name=name,
        serial_number=version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=device,
        )
    )


def _contributing_equipment(
    models: Sequence[ModelIdentity], when: datetime.datetime | None
) -> list[hd.ContributingEquipment]:
    """One Contributing Equipment item per algorithm (IHE AIR; PS3.3 C.12.1, purpose DCM 109102)."""
    return [
        hd.ContributingEquipment(
            manufacturer=model.manufacturer,
            purpose_of_reference=oc.PROCESSING_EQUIPMENT,
            manufacturer_model_name=model_display_name(model)[:MAX_LO],
            software_versions=model.version[:MAX_LO],
            contribution_datetime=when,
            contribution_description=(
                f"AI analysis ({UNTRAINED_MARK}); {DISCLAIMER}"
                if not model.trained
                else f"AI analysis; {DISCLAIMER}"
            )[:MAX_LO],
        )
        for model in models
    ]


def _check_evidence(
    findings: Sequence[Finding], not_graded: Sequence[NotGraded], evidence: Sequence[pydicom.Dataset]
) -> None:
    """One study's evidence that holds every image the findings and outcomes reference."""
    if not findings and not not_graded:
        raise ReportError("a report needs at least one finding or not-graded outcome")
    if not evidence:
        raise ReportError("a report needs the source instances as evidence")
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise ReportError(f"evidence spans {len(studies)} studies; a report covers one study")
    known = {str(ds.SOPInstanceUID) for ds in evidence}
    for finding in findings:
        referenced = [*finding.sources, *([finding.region.source] if finding.region else [])]
        missing = [s.sop_instance_uid for s in referenced if s.sop_instance_uid not in known]
        if missing:
            raise ReportError(f"{finding.task}: {len(missing)} source image(s) are not in the evidence")
    for outcome in not_graded:
        if outcome.source.sop_instance_uid not in known:
            raise ReportError(f"{outcome.task}: the not-graded source image is not in the evidence")


def build_report(
    findings: Sequence[Finding],
    evidence: Sequence[pydicom.Dataset],
    *,
    series_uid: str,
    sop_uid: str,
    series_number: int = DEFAULT_SERIES_NUMBER,
    instance_number: int = 1,
    institution_name: str | None = None,
    institutional_department_name: str | None = None,
    created: datetime.datetime | None = None,
    not_graded: Sequence[NotGraded] = (),
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR (TID 1500) with one measurement group per finding, then one per not-graded
    outcome (a report of not-graded outcomes alone says why nothing was graded).

    ``evidence`` are the source instances' datasets (headers suffice); the SR goes into their study
    (patient and study attributes copied from ``evidence[0]``) as a new series, and lists them in the
    Current Requested Procedure Evidence Sequence. ``created`` fixes the content, series and contribution
    date/times (None: now), so that a re-run with the same ``created`` gives an identical document.
    """
    _check_evidence(findings, not_graded, evidence)
    models = _unique_models([*findings, *not_graded])
    trained = all(m.trained for m in models)
    when = created if created is not None else datetime.datetime.now()

    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(models),
        procedure_reported=oc.IMAGING_PROCEDURE,
        imaging_measurements=[
            *(
                finding_group(f, sop_uid, q)
                for f, q in zip(findings, finding_qualifiers(findings), strict=True)
            ),
            *(not_graded_group(o, sop_uid) for o in not_graded),
        ],
    )
    kwargs: dict[str, Any] = {
        "content_date": when.date(),
        "content_time": when.time(),
        "series_date": when.date(),
        "series_time": when.time(),
    }
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=NODE_MANUFACTURER,
        is_complete=trained,
        is_final=False,
        is_verified=False,
        institution_name=institution_name,
        institutional_department_name=institutional_department_name,
        contributing_equipment=_contributing_equipment(models, when),
        coding_schemes=[oc.coding_scheme_identification()],
        series_description=SERIES_DESCRIPTION if trained else SERIES_DESCRIPTION_UNTRAINED,
        manufacturer_model_name="OrthoFoundation node",
        software_versions=models[0].version[:MAX_LO],
        **kwargs,
    )
    # Instance creation (SOP Common) follows ``created`` too, for byte-identical re-runs.
    sr.InstanceCreationDate = DA(when.date())
    sr.InstanceCreationTime = TM(when.time())
    for item in sr.ContributingEquipmentSequence:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
    return sr


# ------------------------------------------------------------------------------------------ reading back


def _same(a: Code | hd.sr.CodedConcept, b: Code | hd.sr.CodedConcept) -> bool:
    return (str(a.value), str(a.scheme_designator)) == (str(b.value), str(b.scheme_designator))


def _task_for_concept(concept: Code | hd.sr.CodedConcept) -> str | None:
    for task, task_codes in oc.TASK_CONCEPTS.items():
        if _same(task_codes.concept, concept):
            return task
    return None


def _texts(group: Group, name: Code) -> list[str]:
    return [
        str(item.TextValue)
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and _same(item.ConceptNameCodeSequence[0], name)
    ]


# CODE items of a group that are not the answer (TID 4019 family, our untrained status, not graded).
_NOT_ANSWERS = (oc.RESULT_STATUS, oc.ALGORITHM_FAMILY, oc.NOT_GRADED_REASON)
_MEASUREMENT_GROUP = ("125007", "DCM")  # "Measurement Group", the container of TID 1501 and TID 1410


@dataclass(frozen=True)
class ReportedRegion:
    """The image region of a TID 1410 group: the SCOORD's bounding box and the image it is on."""

    source: str  # SOP Instance UID of the image the region is SELECTED FROM
    frame: int | None  # Referenced Frame Number, when given
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1): the SCOORD's column and row extent
    graphic_type: str  # e.g. "POLYLINE"


@dataclass(frozen=True)
class ReportedFinding:
    """One finding group of a TID 1500 report, as :func:`read_report` reads it back (PS3.16 TID 1501 or
    TID 1410 via highdicom's typed accessors)."""

    task: str | None  # registry name; None if the concept is not ours
    title: str  # the concept's meaning
    laterality: str | None  # "L", "R", "B" or None (finding site laterality)
    value: str  # the answer's meaning
    code: tuple[str, str]  # the answer's (code value, coding scheme designator)
    probability: float | None  # None for an untrained model
    model: str | None  # algorithm name (TID 4019)
    model_version: str | None
    trained: bool
    comment: str | None  # the first comment: the disclaimer or the untrained statement
    sources: tuple[str, ...]  # referenced SOP Instance UIDs (the region's image for TID 1410)
    region: ReportedRegion | None = None  # TID 1410 only
    notes: tuple[str, ...] = ()  # the further comments (Finding.notes)


@dataclass(frozen=True)
class ReportedNotGraded:
    """One not-graded group: the task, side and coded reason (``99ORTHO NOTGRADED``)."""

    task: str | None
    title: str  # the task's concept meaning, e.g. "Kellgren-Lawrence grade"
    laterality: str | None
    reason: str  # the reason's text comment, e.g. "not graded: lateral view"
    code: tuple[
        str, str
    ]  # the reason's (code value, coding scheme designator), e.g. ("NGLATERAL", "99ORTHO")
    model: str | None
    model_version: str | None
    trained: bool
    sources: tuple[str, ...]


@dataclass(frozen=True)
class ReportOutcomes:
    findings: list[ReportedFinding]
    not_graded: list[ReportedNotGraded]


def _groups(sr: hd.sr.Comprehensive3DSR) -> list[Group]:
    """Every measurement group in document order, as highdicom's TID 1410 or TID 1501 class."""
    out: list[Group] = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            key = (str(name.CodeValue), str(name.CodingSchemeDesignator)) if name is not None else None
            if item.ValueType == "CONTAINER" and key == _MEASUREMENT_GROUP:
                planar = any(child.ValueType == "SCOORD" for child in item.get("ContentSequence", []))
                kind: type[Group] = (
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                    if planar
                    else hd.sr.MeasurementsAndQualitativeEvaluations
                )
                out.append(kind.from_sequence([item]))
            elif "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


def _laterality(group: Group) -> str | None:
    sites = group.finding_sites
    if not sites or sites[0].laterality is None:
        return None
    lat = sites[0].laterality
    return oc.laterality_from_code(Code(lat.value, lat.scheme_designator, lat.meaning))


def _region(group: Group) -> ReportedRegion | None:
    for item in group[0].ContentSequence:
        if item.ValueType != "SCOORD":
            continue
        points = [float(v) for v in item.GraphicData]
        columns, rows = points[0::2], points[1::2]
        reference = item.ContentSequence[0].ReferencedSOPSequence[0]
        frame = reference.get("ReferencedFrameNumber")
        return ReportedRegion(
            source=str(reference.ReferencedSOPInstanceUID),
            frame=int(frame) if frame is not None else None,
            box=(min(columns), min(rows), max(columns), max(rows)),
            graphic_type=str(item.GraphicType),
        )
    return None


def _read_group(group: Group) -> ReportedFinding | ReportedNotGraded:
    evaluations = group.get_qualitative_evaluations()
    reasons = [e for e in evaluations if _same(e.name, oc.NOT_GRADED_REASON)]
    status = [e for e in evaluations if _same(e.name, oc.RESULT_STATUS)]
    answers = [e for e in evaluations if not any(_same(e.name, c) for c in _NOT_ANSWERS)]
    names = _texts(group, oc.ALGORITHM_NAME)
    versions = _texts(group, oc.ALGORITHM_VERSION)
    comments = _texts(group, oc.COMMENT)
    task = _task_from_tracking(group.tracking_identifier)
    region = _region(group)
    sources = [
        str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in group[0].ContentSequence
        if item.ValueType == "IMAGE"
    ] or ([region.source] if region is not None else [])
    if reasons:
        reason = _coded(reasons[0])
        return ReportedNotGraded(
            task=task,
            title=oc.TASK_CONCEPTS[task].concept.meaning if task else "",
            laterality=_laterality(group),
            reason=comments[0] if comments else str(reason.meaning),
            code=(str(reason.value), str(reason.scheme_designator)),
            model=names[0] if names else None,
            model_version=versions[0] if versions else None,
            trained=not any(UNTRAINED_MARK in n.upper() for n in names),
            sources=tuple(sources),
        )
    if answers:
        concept, answer = answers[0].name, _coded(answers[0])
        task = _task_for_concept(concept) or task
        title = str(concept.meaning)
    elif status:
        concept, answer = status[0].name, _coded(status[0])
        title = oc.TASK_CONCEPTS[task].concept.meaning if task else str(concept.meaning)
    else:
        raise ReportError("a measurement group has neither an answer nor a result status")
    probabilities = group.get_measurements(name=oc.PROBABILITY)
    return ReportedFinding(
        task=task,
        title=title,
        laterality=_laterality(group),
        value=str(answer.meaning),
        code=(str(answer.value), str(answer.scheme_designator)),
        probability=float(probabilities[0].value) if probabilities else None,
        model=names[0] if names else None,
        model_version=versions[0] if versions else None,
        trained=not status,
        comment=comments[0] if comments else None,
        sources=tuple(sources),
        region=region,
        notes=tuple(comments[1:]),
    )


def read_outcomes(ds: pydicom.Dataset) -> ReportOutcomes:
    """The findings and the not-graded outcomes of an SR written by :func:`build_report` (e.g. read back
    from PACS), each in document order."""
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=True)
    hd.sr.MeasurementReport.from_sequence(sr.content)  # a TID 1500 tree, or highdicom says why not
    findings: list[ReportedFinding] = []
    not_graded: list[ReportedNotGraded] = []
    for group in _groups(sr):
        read = _read_group(group)
        if isinstance(read, ReportedNotGraded):
            not_graded.append(read)
        else:
            findings.append(read)
    return ReportOutcomes(findings, not_graded)


def read_report(ds: pydicom.Dataset) -> list[ReportedFinding]:
    """The findings of an SR written by :func:`build_report`, one :class:`ReportedFinding` per finding
    group (not-graded outcomes: :func:`read_outcomes`)."""
    return read_outcomes(ds).findings


def _coded(evaluation: hd.sr.QualitativeEvaluation) -> hd.sr.CodedConcept:
    """The coded value of a CODE item (highdicom 0.28 annotates ``QualitativeEvaluation.value`` as number)."""
    value: Any = evaluation[0].value
    if not isinstance(value, hd.sr.CodedConcept):
        raise ReportError(f"qualitative evaluation {evaluation.name.meaning!r} has no coded value")
    return value


def _task_from_tracking(identifier: str | None) -> str | None:
    """The task named by a group's tracking identifier ("<task> <laterality>", see ``sr_groups``)."""
    if not identifier:
        return None
    task = identifier.split(" ", 1)[0]
    return task if task in oc.TASK_CONCEPTS else None
