"""What the node creates, made by the node's own writers from SYNTHETIC source images.

The Conformance Statement describes the created IODs from real objects rather than from prose: these
functions run ``orthonode.encode.outputs.build_outputs`` -- the code a job runs -- on two synthetic
knee radiographs (``orthonode.peers.synthetic``) that differ in every patient and study attribute, with
a trained and an untrained finding. Comparing the outputs with their sources and with each other tells
which attributes are copied from the source, which are fixed by the node and which are generated per
object (:func:`attribute_origins`). No patient data is involved.
"""

from __future__ import annotations

import copy
import datetime
import functools
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from orthonode.encode import codes as oc
from orthonode.encode.outputs import Output, build_outputs
from orthonode.inference.findings import Finding, ImageRegion, ModelIdentity, NotGraded, SourceImage
from orthonode.peers import synthetic

CREATED = (datetime.datetime(2026, 1, 2, 3, 4, 5), datetime.datetime(2027, 6, 7, 8, 9, 10))
MODEL_NAME = "OrthoFoundation Kellgren-Lawrence grade"

#: Patient and study attributes of the two synthetic sources: every one differs between them, so an
#: attribute of the created objects that follows its source can be told from one the node fixes.
_SOURCES = (
    {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": "SYNTHETIC^FIRST",
        "PatientID": "SYNTH0001",
        "PatientBirthDate": "19500101",
        "PatientSex": "F",
        "StudyDate": "20240506",
        "StudyTime": "070809",
        "AccessionNumber": "SYNTHACC1",
        "ReferringPhysicianName": "SYNTHETIC^ONE",
        "StudyID": "SYNTH1",
        "StudyDescription": "SYNTHETIC KNEE 1",
        "InstanceNumber": 3,
    },
    {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientName": "SYNTHETIC^SECOND",
        "PatientID": "SYNTH0002",
        "PatientBirthDate": "19610203",
        "PatientSex": "M",
        "StudyDate": "20250102",
        "StudyTime": "101112",
        "AccessionNumber": "SYNTHACC2",
        "ReferringPhysicianName": "SYNTHETIC^TWO",
        "StudyID": "SYNTH2",
        "StudyDescription": "SYNTHETIC KNEE 2",
        "InstanceNumber": 9,
    },
)
#: Key image sizes of the two samples (the SC's Rows and Columns follow them).
_KEY_SHAPES = ((64, 48), (80, 56))


class Origin(StrEnum):
    SOURCE = "copied from the source image"
    FIXED = "fixed"
    GENERATED = "generated per object"


@dataclass(frozen=True)
class Sample:
    sources: tuple[Dataset, ...]
    outputs: tuple[Output, ...]

    def of_kind(self, kind: str) -> Output:
        return next(o for o in self.outputs if o.kind == kind)


def kl_finding(
    source: Dataset,
    model: ModelIdentity,
    grade: int,
    shape: tuple[int, int],
    *,
    laterality: str | None = None,
    region: tuple[float, float, float, float] | None = None,
    overview: np.ndarray | None = None,
    notes: tuple[str, ...] = (),
) -> Finding:
    """A KL finding on ``source`` with a synthetic key image of ``shape``; with ``region`` (a box in
    source pixels) it is read from a localised joint (issue 14)."""
    task = oc.task_codes("kl_grade")
    ref = SourceImage(
        str(source.SOPClassUID), str(source.SOPInstanceUID), str(source.SeriesInstanceUID), None
    )
    probabilities = np.full(len(task.values), 0.1)
    probabilities[grade] = 0.6
    key = np.linspace(0.0, 1.0, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    return Finding(
        task="kl_grade",
        title=task.concept.meaning,
        finding_site=task.finding_site,
        laterality=laterality if region is not None else str(source.ImageLaterality),
        concept=task.concept,
        value=task.values[grade],
        probability=0.6,
        probabilities=dict(zip(task.labels, map(float, probabilities), strict=True)),
        sources=(ref,),
        model=model,
        key_source=ref,
        key_image=key,
        heatmap=key[::-1].copy(),
        region=(
            ImageRegion(ref, region, confidence=0.9, mm_per_px=None, scale_source="estimated")
            if region is not None
            else None
        ),
        overview=overview,
        notes=notes,
    )


@functools.cache
def sample(index: int, trained: bool = True) -> Sample:
    """The outputs of one job on synthetic source ``index`` (0 or 1) with one KL finding of a trained or
    an untrained model."""
    study = synthetic.new_study_uid()
    source = copy.deepcopy(synthetic.radiograph(study, laterality="L" if index == 0 else "R", seed=index))
    for keyword, value in _SOURCES[index].items():
        setattr(source, keyword, value)
    model = ModelIdentity(
        name=MODEL_NAME,
        version=f"encoder {index + 1} / head 1",
        parameters={"input size": "288 px"},
        trained=trained,
    )
    finding = kl_finding(source, model, 2 + index, _KEY_SHAPES[index])
    outputs = build_outputs(
        [finding], {str(source.SOPInstanceUID): source}, study_uid=study, version=1, created=CREATED[index]
    )
    return Sample((source,), tuple(outputs))


def attribute_origins(kind: str) -> list[tuple[str, str, Origin, str]]:
    """``(tag, keyword, origin, value)`` of every top-level attribute of the created ``kind`` ("sr" |
    "sc"), in tag order; ``value`` is shown for fixed attributes only (sequences: their item count)."""
    first, second = sample(0).of_kind(kind).dataset, sample(1).of_kind(kind).dataset
    sources = (sample(0).sources[0], sample(1).sources[0])
    rows = []
    for element in first:
        keyword = element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"
        other = second.get(element.tag)
        same = other is not None and _value(other) == _value(element)
        follows = all(
            element.tag in src and element.tag in out and _value(src[element.tag]) == _value(out[element.tag])
            for src, out in zip(sources, (first, second), strict=True)
        )
        sources_differ = (
            _value(sources[0][element.tag]) != _value(sources[1][element.tag]) if follows else False
        )
        if follows and sources_differ:
            origin = Origin.SOURCE
        elif same:
            origin = Origin.FIXED
        else:
            origin = Origin.GENERATED
        shown = _shown(element) if origin is Origin.FIXED else ""
        rows.append((f"({element.tag.group:04X},{element.tag.element:04X})", keyword, origin, shown))
    return rows


def _value(element: pydicom.DataElement) -> object:
    if element.VR == "SQ":
        return repr([sorted(_item_repr(i)) for i in element.value])
    if element.tag == 0x7FE00010:
        return len(element.value)
    return str(element.value)


def _item_repr(item: Dataset) -> list[str]:
    return [f"{e.tag}:{_value(e)}" for e in item]


def _shown(element: pydicom.DataElement) -> str:
    if element.VR == "SQ":
        return f"{len(element.value)} item(s)"
    if element.tag == 0x7FE00010:
        return ""
    text = str(element.value)
    return text if len(text) <= 64 else text[:61] + "..."


@functools.cache
def film_sample() -> Sample:
    """The outputs of a job on a synthetic full-size film (issue 14): one knee read from its joint box
    (a TID 1410 group) and, on a second synthetic film, a lateral view that is not graded."""
    study = synthetic.new_study_uid()
    frontal = copy.deepcopy(synthetic.radiograph(study, laterality="L", seed=0))
    lateral = copy.deepcopy(synthetic.radiograph(study, laterality="L", seed=1))
    for ds in (frontal, lateral):
        for keyword, value in _SOURCES[0].items():
            setattr(ds, keyword, value)
    lateral.ViewPosition = "LL"
    model = ModelIdentity(name=MODEL_NAME, version="encoder 1 / head 1", parameters={"input size": "288 px"})
    box = (10.0, 20.0, 60.0, 70.0)
    overview = np.full((32, 25), 0.5, dtype=np.float32)
    finding = kl_finding(frontal, model, 2, _KEY_SHAPES[0], laterality="L", region=box, overview=overview)
    task = oc.task_codes("kl_grade")
    ref = SourceImage(str(lateral.SOPClassUID), str(lateral.SOPInstanceUID), str(lateral.SeriesInstanceUID))
    outcome = NotGraded(
        "kl_grade", task.concept.meaning, task.finding_site, "L", "not graded: lateral view",
        oc.NOT_GRADED_LATERAL, ref, model,
    )  # fmt: skip
    outputs = build_outputs(
        [finding],
        {str(ds.SOPInstanceUID): ds for ds in (frontal, lateral)},
        study_uid=study,
        version=1,
        created=CREATED[0],
        not_graded=[outcome],
    )
    return Sample((frontal, lateral), tuple(outputs))


def content_items(trained: bool = True) -> list[tuple[int, str, str, str]]:
    """``(depth, relationship, value type, concept name)`` of the SR content tree, each distinct row once,
    in document order (depth 0 is the root container)."""
    return content_rows(sample(0, trained).of_kind("sr").dataset)


def content_rows(report: Dataset) -> list[tuple[int, str, str, str]]:
    """:func:`content_items` of any SR dataset."""
    rows: list[tuple[int, str, str, str]] = []
    root = report.ConceptNameCodeSequence[0]
    rows.append(
        (0, "", str(report.ValueType), f"{root.CodeMeaning} ({root.CodingSchemeDesignator} {root.CodeValue})")
    )

    def walk(items: pydicom.Sequence, depth: int) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            concept = (
                f"{name.CodeMeaning} ({name.CodingSchemeDesignator} {name.CodeValue})"
                if name is not None
                else ""
            )
            row = (depth, str(item.get("RelationshipType", "")), str(item.ValueType), concept)
            if row not in rows:
                rows.append(row)
            if "ContentSequence" in item:
                walk(item.ContentSequence, depth + 1)

    walk(report.ContentSequence, 1)
    return rows
