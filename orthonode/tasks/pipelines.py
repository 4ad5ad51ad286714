"""The node's pipelines: which anatomy and modality each one takes, and the vocabulary of both.

One home for these facts: routing (:mod:`orthonode.completion.selection`) decides which pipeline a study
feeds, the task registry (:mod:`orthonode.tasks.registry`) says which tasks a pipeline runs, and the head
runtime (:mod:`orthonode.inference.heads`) loads the bundles of that anatomy and modality. Adding a
pipeline is one line in :data:`PIPELINES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Anatomy(StrEnum):
    KNEE = "knee"
    HIP = "hip"
    SHOULDER = "shoulder"
    ANKLE = "ankle"


class ModalityKind(StrEnum):
    RADIOGRAPH = "radiograph"
    MRI = "mri"


class Plane(StrEnum):
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"
    OBLIQUE = "oblique"


@dataclass(frozen=True)
class PipelineSpec:
    """One task pipeline: the (anatomy, modality kind) it takes and, for MRI, the planes it uses.

    An MRI series whose plane is unknown (no Image Orientation) is always kept; one whose plane is known
    but not in ``planes`` is excluded from the route.
    """

    name: str
    anatomy: Anatomy
    modality: ModalityKind
    planes: frozenset[Plane] = frozenset()


_ORTHOGONAL = frozenset({Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL})
_ANY_PLANE = frozenset(Plane)

#: The available task pipelines.
PIPELINES: tuple[PipelineSpec, ...] = (
    PipelineSpec("knee_radiograph", Anatomy.KNEE, ModalityKind.RADIOGRAPH),
    PipelineSpec("knee_mri", Anatomy.KNEE, ModalityKind.MRI, _ORTHOGONAL),
    PipelineSpec("hip_mri", Anatomy.HIP, ModalityKind.MRI, _ANY_PLANE),
    PipelineSpec("shoulder_mri", Anatomy.SHOULDER, ModalityKind.MRI, _ANY_PLANE),
    PipelineSpec("ankle_mri", Anatomy.ANKLE, ModalityKind.MRI, _ANY_PLANE),
)


def pipeline_spec(name: str) -> PipelineSpec:
    """The pipeline called ``name``; KeyError lists the known ones."""
    for spec in PIPELINES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(p.name for p in PIPELINES)}")
