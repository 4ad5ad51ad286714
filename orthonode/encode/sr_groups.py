"""The measurement groups of the node's TID 1500 report, one per finding and one per not-graded outcome.

- A finding without an image region: TID 1501 "Measurement and Qualitative Evaluation Group" (PS3.16):
  tracking identifier and UID; finding site with laterality (concept modifier); TID 4019 algorithm
  identification; the answer as a CODE qualitative evaluation; the probability as a NUM (DCM 122157,
  UCUM ``{probability}``); TEXT comments (DCM 121106): the disclaimer first, then each of
  ``Finding.notes``; an IMAGE "Source of measurement" reference to every source image (and frame).
- A finding read from a localised joint (``Finding.region``, issue 14): TID 1410 "Planar ROI
  Measurements and Qualitative Evaluations" with the same items, where the image reference is the ROI
  itself: an SCOORD (PS3.3 C.18.6.1.2) of Graphic Type POLYLINE, closed (first point repeated last,
  C.18.6.1.2.2 "a closed polygon"), through the box's four corners in (column, row) pixel coordinates,
  SELECTED FROM the source image (and frame). TID 1410 holds one region, on one image.
- A not-graded outcome (:class:`NotGraded`): a TID 1501 group with the finding site and laterality, the
  TID 4019 algorithm, a CODE qualitative evaluation ``99ORTHO NOTGRADED "Reason not graded"`` whose value
  is the coded reason (e.g. ``NGLATERAL`` "Not graded: lateral view", ``NOKNEEJOINT`` "No knee joint
  found"), the reason as a TEXT comment, and the source image. No answer, no probability.
- An untrained model's group replaces the answer by ``99ORTHO RESULTSTATUS = NOTFINDING`` ("Untrained
  model output, not a finding"); its raw output appears only in a comment that starts with "UNTRAINED
  MODEL - NOT A FINDING"; no probability is written.

Tracking UIDs are deterministic (``orthonode.encode.uids.tracking_uid``). Two joints of one film can
share a task and a side (both unknown when header and position disagree), so a region finding's UID is
qualified by its source image and its rank on it (:func:`finding_qualifiers`); a not-graded group's by
"not-graded" and its source. A finding without a region keeps the UID of (report, task, side).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.sr.coding import Code

from orthonode.encode import codes as oc
from orthonode.encode.uids import tracking_uid
from orthonode.errors import OrthonodeError
from orthonode.inference.findings import (
    Finding,
    ImageRegion,
    ModelIdentity,
    NotGraded,
    SourceImage,
    untrained_marked,
)

SERIES_DESCRIPTION = "OrthoFoundation AI report - NOT FOR DIAGNOSTIC USE"
SERIES_DESCRIPTION_UNTRAINED = "OrthoFoundation AI report - UNTRAINED - NOT FOR DIAGNOSTIC USE"
DISCLAIMER = "Research use only. Not for diagnostic use."
UNTRAINED_STATEMENT = "UNTRAINED MODEL - NOT A FINDING"
MAX_LO = 64  # Series Description and similar LO attributes
NOT_GRADED_QUALIFIER = "not-graded"


#: A measurement group as highdicom builds and parses it: TID 1501 or TID 1410.
Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations


class ReportError(OrthonodeError, ValueError):
    """The findings or the evidence cannot make a valid report."""


def model_display_name(model: ModelIdentity) -> str:
    """The model's name, with "(UNTRAINED)" appended for an untrained model that does not say so."""
    return untrained_marked(model.name, model.trained)


def algorithm_id(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification; parameters as ``key=value`` texts in key order."""
    parameters = [f"{key}={value}" for key, value in sorted(model.parameters.items())]
    return hd.sr.AlgorithmIdentification(
        name=model_display_name(model),
        version=model.version,
        parameters=parameters or None,
        family=oc.ALGORITHM_FAMILY_AI,
        manufacturer=model.manufacturer,
    )


def _frame(source: SourceImage) -> str:
    return str(source.frame_number or 1)


def finding_qualifiers(findings: Sequence[Finding]) -> list[tuple[str, ...]]:
    """Per finding, what makes its UIDs unique beside (task, side): nothing for a finding without a
    region; for a region finding its source instance, frame and rank among the same task's regions on
    that frame (by box centre column, then row), e.g. ``("1.2.3", "1", "0")``."""
    keyed: dict[tuple[str, str, str], list[tuple[float, float, int]]] = {}
    for index, finding in enumerate(findings):
        region = finding.region
        if region is not None:
            x0, y0, x1, y1 = region.box
            key = (finding.task, region.source.sop_instance_uid, _frame(region.source))
            keyed.setdefault(key, []).append(((x0 + x1) / 2.0, (y0 + y1) / 2.0, index))
    out: list[tuple[str, ...]] = [() for _ in findings]
    for (_task, uid, frame), members in keyed.items():
        for rank, (_x, _y, index) in enumerate(sorted(members)):
            out[index] = (uid, frame, str(rank))
    return out


def _check_finding(finding: Finding) -> None:
    if not 0.0 <= float(finding.probability) <= 1.0:
        raise ReportError(f"{finding.task}: probability {finding.probability} outside [0, 1]")
    if not finding.sources:
        raise ReportError(f"{finding.task}: a finding needs at least one source image")
    if finding.region is not None:
        x0, y0, x1, y1 = (float(v) for v in finding.region.box)
        if not (np.all(np.isfinite([x0, y0, x1, y1])) and 0.0 <= x0 < x1 and 0.0 <= y0 < y1):
            raise ReportError(
                f"{finding.task}: image region {finding.region.box} is not a box (x0 < x1, y0 < y1)"
            )


def _site(finding_site: Code, laterality: str | None) -> hd.sr.FindingSite:
    return hd.sr.FindingSite(anatomic_location=finding_site, laterality=oc.laterality_code(laterality))


def _source_reference(source: SourceImage) -> hd.sr.SourceImageForMeasurementGroup:
    return hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=source.sop_class_uid,
        referenced_sop_instance_uid=source.sop_instance_uid,
        referenced_frame_numbers=[source.frame_number] if source.frame_number is not None else None,
    )


def box_polyline(region: ImageRegion) -> np.ndarray:
    """The box as a closed POLYLINE: corners (x0, y0), (x1, y0), (x1, y1), (x0, y1), then (x0, y0)."""
    x0, y0, x1, y1 = (float(v) for v in region.box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)


def _image_region(region: ImageRegion) -> hd.sr.ImageRegion:
    """The SCOORD of TID 1410 row "Image Region", SELECTED FROM the source (PS3.3 C.18.6.1.2)."""
    source = region.source
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=box_polyline(region),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.sop_class_uid,
            referenced_sop_instance_uid=source.sop_instance_uid,
            referenced_frame_numbers=[source.frame_number] if source.frame_number is not None else None,
        ),
    )


def _add_comments(group: Group, comments: Sequence[str]) -> None:
    """TEXT qualitative evaluations (DCM 121106 "Comment"), which TID 1501 and TID 1410 allow;
    highdicom's QualitativeEvaluation is CODE only."""
    for comment in comments:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=oc.COMMENT, value=comment, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        )


def finding_group(finding: Finding, sop_uid: str, qualifiers: tuple[str, ...] = ()) -> Group:
    """One TID 1501 group for a finding, or one TID 1410 group when it has an image region."""
    _check_finding(finding)
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(sop_uid, finding.task, finding.laterality, *qualifiers),
        identifier=f"{finding.task} {finding.laterality or '-'}",
    )
    evaluations: list[hd.sr.QualitativeEvaluation] = []
    measurements: list[hd.sr.Measurement] = []
    if finding.model.trained:
        evaluations.append(hd.sr.QualitativeEvaluation(name=finding.concept, value=finding.value))
        measurements.append(
            hd.sr.Measurement(name=oc.PROBABILITY, value=float(finding.probability), unit=oc.PROBABILITY_UNIT)
        )
        comment = DISCLAIMER
    else:
        evaluations.append(hd.sr.QualitativeEvaluation(name=oc.RESULT_STATUS, value=oc.NOT_A_FINDING))
        comment = (
            f"{UNTRAINED_STATEMENT}: random weights; raw output {finding.concept.meaning} = "
            f"{finding.value.meaning} (p = {float(finding.probability):.4f}) is meaningless. {DISCLAIMER}"
        )
    site = _site(finding.finding_site, finding.laterality)
    group: Group
    if finding.region is not None:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_region=_image_region(finding.region),
            algorithm_id=algorithm_id(finding.model),
            finding_sites=[site],
            measurements=measurements or None,
            qualitative_evaluations=evaluations,
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            algorithm_id=algorithm_id(finding.model),
            finding_sites=[site],
            measurements=measurements or None,
            qualitative_evaluations=evaluations,
            source_images=[_source_reference(s) for s in finding.sources],
        )
    _add_comments(group, [comment, *finding.notes])
    return group


def not_graded_group(outcome: NotGraded, sop_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group for a not-graded outcome (see the module docstring)."""
    if not outcome.reason.strip():
        raise ReportError(f"{outcome.task}: a not-graded outcome needs its reason")
    source = outcome.source
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(
            sop_uid,
            outcome.task,
            outcome.laterality,
            NOT_GRADED_QUALIFIER,
            source.sop_instance_uid,
            _frame(source),
        ),
        identifier=f"{outcome.task} {outcome.laterality or '-'} not graded",
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        algorithm_id=algorithm_id(outcome.model),
        finding_sites=[_site(outcome.finding_site, outcome.laterality)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=oc.NOT_GRADED_REASON, value=outcome.reason_code)
        ],
        source_images=[_source_reference(source)],
    )
    reason = outcome.reason if outcome.model.trained else f"{UNTRAINED_STATEMENT}: {outcome.reason}"
    _add_comments(group, [reason, DISCLAIMER])
    return group
