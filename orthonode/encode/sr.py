"""The findings as a DICOM Structured Report: TID 1500 Measurement Report in a Comprehensive 3D SR.

Built only with highdicom constructors (``MeasurementReport``, ``Comprehensive3DSR``), following the IHE
Radiology "AI Results" (AIR) profile: the algorithm is identified in the content (TID 4019 Algorithm
Identification in every group, and as the Device observer of TID 1002/1004) and in the Contributing
Equipment Sequence (0018,A001) of the SOP Common Module (PS3.3 C.12.1) with Purpose of Reference
(DCM 109102, "Processing Equipment", CID 7005).

Content tree (PS3.16 TID 1500):

- Observer context: the algorithm as a Device observer (TID 1004): a deterministic Device Observer UID,
  the model's name, manufacturer, model name, and the model version as serial number.
- One TID 1501 "Measurement and Qualitative Evaluation Group" per finding (task and side):
  tracking identifier and deterministic tracking UID; finding site (anatomy with laterality as concept
  modifier); TID 4019 algorithm name, version and parameters; the answer as a CODE qualitative
  evaluation (task concept -> answer code); the probability as a NUM measurement (DCM 122157
  "Probability", UCUM ``{probability}``); a TEXT qualitative evaluation (DCM 121106 "Comment") with the
  disclaimer; and "Source of measurement" image references to every source image (and frame).
- An untrained model (``ModelIdentity.trained`` False) still gets its group, but the answer is replaced
  by ``99ORTHO RESULTSTATUS = NOTFINDING`` ("Untrained model output, not a finding"); the raw output
  appears only in a comment that starts with "UNTRAINED MODEL - NOT A FINDING"; the algorithm name
  carries "UNTRAINED"; no probability measurement is written; and the Series Description says UNTRAINED.

The disclaimer: TID 1500 has no free-text item at the document level, but TID 1501 allows TEXT
qualitative evaluations in each group, so the disclaimer is there; it is also in the Series Description
(the SR Document General Module has no comment attribute that viewers show).

Completion Flag (0040,A491) is COMPLETE when every finding comes from a trained model, PARTIAL
otherwise; Verification Flag is always UNVERIFIED and Preliminary Flag PRELIMINARY (PS3.3 C.17.2): no
human has verified an AI result.
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
from orthonode.encode.uids import device_observer_uid, tracking_uid
from orthonode.errors import OrthonodeError
from orthonode.inference.findings import (
    NODE_MANUFACTURER,
    UNTRAINED_MARK,
    Finding,
    ModelIdentity,
    untrained_marked,
)

SERIES_DESCRIPTION = "OrthoFoundation AI report - NOT FOR DIAGNOSTIC USE"
SERIES_DESCRIPTION_UNTRAINED = "OrthoFoundation AI report - UNTRAINED - NOT FOR DIAGNOSTIC USE"
DISCLAIMER = "Research use only. Not for diagnostic use."
UNTRAINED_STATEMENT = "UNTRAINED MODEL - NOT A FINDING"
DEFAULT_SERIES_NUMBER = 9901
MAX_LO = 64  # Series Description and similar LO attributes


class ReportError(OrthonodeError, ValueError):
    """The findings or the evidence cannot make a valid report."""


def model_display_name(model: ModelIdentity) -> str:
    """The model's name, with "(UNTRAINED)" appended for an untrained model that does not say so."""
    return untrained_marked(model.name, model.trained)


def _algorithm_id(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification; parameters as ``key=value`` texts in key order."""
    parameters = [f"{key}={value}" for key, value in sorted(model.parameters.items())]
    return hd.sr.AlgorithmIdentification(
        name=model_display_name(model),
        version=model.version,
        parameters=parameters or None,
        family=oc.ALGORITHM_FAMILY_AI,
        manufacturer=model.manufacturer,
    )


def _unique_models(findings: Sequence[Finding]) -> list[ModelIdentity]:
    seen: list[ModelIdentity] = []
    for finding in findings:
        if finding.model not in seen:
            seen.append(finding.model)
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


def _check_finding(finding: Finding) -> None:
    if not 0.0 <= float(finding.probability) <= 1.0:
        raise ReportError(f"{finding.task}: probability {finding.probability} outside [0, 1]")
    if not finding.sources:
        raise ReportError(f"{finding.task}: a finding needs at least one source image")


def _group(finding: Finding, sop_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group for one finding."""
    _check_finding(finding)
    laterality = oc.laterality_code(finding.laterality)
    site = hd.sr.FindingSite(anatomic_location=finding.finding_site, laterality=laterality)
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(sop_uid, finding.task, finding.laterality),
        identifier=f"{finding.task} {finding.laterality or '-'}",
    )
    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=s.sop_class_uid,
            referenced_sop_instance_uid=s.sop_instance_uid,
            referenced_frame_numbers=[s.frame_number] if s.frame_number is not None else None,
        )
        for s in finding.sources
    ]
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    measurements: list[hd.sr.Measurement] = []
    if finding.model.trained:
        evaluations.append(hd.sr.QualitativeEvaluation(name=finding.concept, value=finding.value))
        measurements.append(
            hd.sr.Measurement(
                name=oc.PROBABILITY,
                value=float(finding.probability),
                unit=oc.PROBABILITY_UNIT,
            )
        )
        comment = DISCLAIMER
    else:
        evaluations.append(hd.sr.QualitativeEvaluation(name=oc.RESULT_STATUS, value=oc.NOT_A_FINDING))
        comment = (
            f"{UNTRAINED_STATEMENT}: random weights; raw output {finding.concept.meaning} = "
            f"{finding.value.meaning} (p = {float(finding.probability):.4f}) is meaningless. {DISCLAIMER}"
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        algorithm_id=_algorithm_id(finding.model),
        finding_sites=[site],
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=sources,
    )
    # TID 1501 allows TEXT qualitative evaluations; highdicom's QualitativeEvaluation is CODE only.
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=oc.COMMENT,
            value=comment,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return group


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
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR (TID 1500) with one measurement group per finding.

    ``evidence`` are the source instances' datasets (headers suffice); the SR goes into their study
    (patient and study attributes copied from ``evidence[0]``) as a new series, and lists them in the
    Current Requested Procedure Evidence Sequence. ``created`` fixes the content, series and contribution
    date/times (None: now), so that a re-run with the same ``created`` gives an identical document.
    """
    if not findings:
        raise ReportError("a report needs at least one finding")
    if not evidence:
        raise ReportError("a report needs the source instances as evidence")
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise ReportError(f"evidence spans {len(studies)} studies; a report covers one study")
    known = {str(ds.SOPInstanceUID) for ds in evidence}
    for finding in findings:
        missing = [s.sop_instance_uid for s in finding.sources if s.sop_instance_uid not in known]
        if missing:
            raise ReportError(f"{finding.task}: {len(missing)} source image(s) are not in the evidence")

    models = _unique_models(findings)
    trained = all(m.trained for m in models)
    when = created if created is not None else datetime.datetime.now()

    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(models),
        procedure_reported=oc.IMAGING_PROCEDURE,
        imaging_measurements=[_group(f, sop_uid) for f in findings],
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


def _texts(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: Code) -> list[str]:
    return [
        str(item.TextValue)
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and _same(item.ConceptNameCodeSequence[0], name)
    ]


# CODE items of a group that are not the answer (TID 4019 family, our untrained status).
_NOT_ANSWERS = (oc.RESULT_STATUS, oc.ALGORITHM_FAMILY)


@dataclass(frozen=True)
class ReportedFinding:
    """One measurement group of a TID 1500 report, as :func:`read_report` reads it back (PS3.16 TID 1501
    via highdicom's typed accessors)."""

    task: str | None  # registry name; None if the concept is not ours
    title: str  # the concept's meaning
    laterality: str | None  # "L", "R", "B" or None (TID 1501 finding site laterality)
    value: str  # the answer's meaning
    code: tuple[str, str]  # the answer's (code value, coding scheme designator)
    probability: float | None  # None for an untrained model
    model: str | None  # algorithm name (TID 4019)
    model_version: str | None
    trained: bool
    comment: str | None
    sources: tuple[str, ...]  # referenced SOP Instance UIDs


def read_report(ds: pydicom.Dataset) -> list[ReportedFinding]:
    """The findings of an SR written by :func:`build_report` (e.g. read back from PACS), one
    :class:`ReportedFinding` per measurement group."""
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=True)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    out: list[ReportedFinding] = []
    for group in report.get_image_measurement_groups():
        sites = group.finding_sites
        laterality = None
        if sites and sites[0].laterality is not None:
            lat = sites[0].laterality
            laterality = oc.laterality_from_code(Code(lat.value, lat.scheme_designator, lat.meaning))
        evaluations = group.get_qualitative_evaluations()
        status = [e for e in evaluations if _same(e.name, oc.RESULT_STATUS)]
        answers = [e for e in evaluations if not any(_same(e.name, c) for c in _NOT_ANSWERS)]
        probabilities = group.get_measurements(name=oc.PROBABILITY)
        names = _texts(group, oc.ALGORITHM_NAME)
        versions = _texts(group, oc.ALGORITHM_VERSION)
        comments = _texts(group, oc.COMMENT)
        trained = not status
        task = _task_from_tracking(group.tracking_identifier)
        if answers:
            concept, answer = answers[0].name, _coded(answers[0])
            task = _task_for_concept(concept) or task
            title = str(concept.meaning)
        elif status:
            concept, answer = status[0].name, _coded(status[0])
            title = oc.TASK_CONCEPTS[task].concept.meaning if task else str(concept.meaning)
        else:
            raise ReportError("a measurement group has neither an answer nor a result status")
        sources = [
            str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for item in group[0].ContentSequence
            if item.ValueType == "IMAGE"
        ]
        out.append(
            ReportedFinding(
                task=task,
                title=title,
                laterality=laterality,
                value=str(answer.meaning),
                code=(str(answer.value), str(answer.scheme_designator)),
                probability=float(probabilities[0].value) if probabilities else None,
                model=names[0] if names else None,
                model_version=versions[0] if versions else None,
                trained=trained,
                comment=comments[0] if comments else None,
                sources=tuple(sources),
            )
        )
    return out


def _coded(evaluation: hd.sr.QualitativeEvaluation) -> hd.sr.CodedConcept:
    """The coded value of a CODE item (highdicom 0.28 annotates ``QualitativeEvaluation.value`` as number)."""
    value: Any = evaluation[0].value
    if not isinstance(value, hd.sr.CodedConcept):
        raise ReportError(f"qualitative evaluation {evaluation.name.meaning!r} has no coded value")
    return value


def _task_from_tracking(identifier: str | None) -> str | None:
    """The task named by a group's tracking identifier ("<task> <laterality>", see ``_group``)."""
    if not identifier:
        return None
    task = identifier.split(" ", 1)[0]
    return task if task in oc.TASK_CONCEPTS else None
