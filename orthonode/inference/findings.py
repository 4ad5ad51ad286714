"""What the inference pipeline hands to the report writers: one :class:`Finding` per task and side.

These are plain values (no torch, no open files), so that the SR and SC writers (``orthonode.encode``) are
tested without a model, and so that a finding can be stored in the index as JSON (:meth:`Finding.summary`).
Coded concepts are ``pydicom.sr.coding.Code``; the project's own codes live in ``orthonode.encode.codes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.sr.coding import Code

#: The node as Manufacturer (0008,0070) of what it writes and of its models (Contributing Equipment).
NODE_MANUFACTURER = "OrthoFoundation node"
#: The word every name of an untrained model carries (IHE AI Results: the algorithm names itself).
UNTRAINED_MARK = "UNTRAINED"


def untrained_marked(name: str, trained: bool) -> str:
    """``name``, with " (UNTRAINED)" appended for an untrained model whose name does not already say so.

    The one place the mark is added: the pipeline names its models with it (:class:`ModelIdentity`) and
    the SR and SC writers show names through it (``orthonode.encode.sr.model_display_name``).
    """
    if trained or UNTRAINED_MARK in name.upper():
        return name
    return f"{name} ({UNTRAINED_MARK})"


@dataclass(frozen=True)
class ModelIdentity:
    """The algorithm, as TID 4019 Algorithm Identification and the Contributing Equipment name it."""

    name: str  # e.g. "OrthoFoundation KL grade"; an untrained head says so in its name
    version: str  # encoder + head versions, e.g. "enc 3f2a9c1d / head 1.0.0"
    parameters: Mapping[str, str] = field(default_factory=dict)  # TID 4019 Algorithm Parameters
    trained: bool = True  # False: random weights; every output carries "UNTRAINED" and is not a finding
    manufacturer: str = NODE_MANUFACTURER


@dataclass(frozen=True)
class SourceImage:
    """One stored instance a finding was computed from (referenced by the SR, copied from by the SC)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    frame_number: int | None = None  # 1-based, for multi-frame sources


@dataclass(frozen=True)
class ImageRegion:
    """Where on its source image a finding was read: the knee joint's box (issue 14), for the report's
    image region (PS3.3 C.18.6.1.2 SCOORD: (column, row) pixel coordinates, (0, 0) the top-left corner
    of the top-left pixel, so the first pixel's centre is (0.5, 0.5)) and for the key image.

    ``box`` is ``(x0, y0, x1, y1)`` in those coordinates on the source frame as stored (not the display).
    ``mm_per_px`` is the scale at the joint when known: from Pixel Spacing / Imager Pixel Spacing
    (``scale_source`` names which) or estimated from the anatomy (``scale_source == "estimated"``).
    """

    source: SourceImage
    box: tuple[float, float, float, float]
    confidence: float
    mm_per_px: float | None = None
    scale_source: str | None = None  # "PixelSpacing" | "ImagerPixelSpacing" | "estimated" | None


@dataclass(frozen=True)
class NotGraded:
    """A recorded outcome: a task gave no answer for an image, and why (issue 14) -- e.g. a lateral knee
    view is not KL-graded, or no knee joint was found on a film routed as knee. Reported, never a grade."""

    task: str  # task registry name, e.g. "kl_grade"
    title: str  # human title, e.g. "Kellgren-Lawrence grade"
    finding_site: Code
    laterality: str | None
    reason: str  # what a reader sees, e.g. "not graded: lateral view"
    reason_code: Code  # the coded reason (orthonode.encode.codes)
    source: SourceImage
    model: ModelIdentity

    def summary(self) -> dict[str, Any]:
        """JSON-ready values (for the index and ``orthonode status``)."""
        return {
            "task": self.task,
            "title": self.title,
            "laterality": self.laterality,
            "not_graded": self.reason,
            "code": [self.reason_code.value, self.reason_code.scheme_designator],
            "model": self.model.name,
            "model_version": self.model.version,
            "sources": [self.source.sop_instance_uid],
        }


@dataclass(frozen=True)
class Finding:
    """One task's answer for one study side, e.g. "KL grade 2 (p = 0.61)" for the left knee."""

    task: str  # task registry name, e.g. "kl_grade"
    title: str  # human title, e.g. "Kellgren-Lawrence grade"
    finding_site: Code  # anatomy, e.g. SCT 72696002 "Knee joint structure"
    laterality: str | None  # "L", "R" or None (unpaired / unknown)
    concept: Code  # the question, e.g. "Kellgren-Lawrence grade"
    value: Code  # the answer, e.g. "Kellgren-Lawrence grade 2"
    probability: float  # the model's probability of ``value``
    probabilities: Mapping[str, float]  # every label's probability, label meaning -> p
    sources: tuple[SourceImage, ...]  # every image the finding was computed from
    model: ModelIdentity
    key_source: SourceImage  # the image the key image shows
    key_image: np.ndarray  # float32 [H, W] in [0, 1], display orientation, bone bright
    heatmap: np.ndarray | None = None  # float32 [H, W] in [0, 1], same shape as key_image
    #: The joint's box on ``key_source`` when the finding was read from a localised joint (issue 14);
    #: ``key_image`` is then the crop the model saw and ``overview`` the whole film (display orientation).
    region: ImageRegion | None = None
    overview: np.ndarray | None = None  # float32 [h, w] in [0, 1]: the source film, downscaled
    notes: tuple[str, ...] = ()  # what a reader should know, e.g. header and film laterality disagree

    def summary(self) -> dict[str, Any]:
        """The finding as JSON-ready values (for the index and ``orthonode status``)."""
        return {
            "task": self.task,
            "title": self.title,
            "laterality": self.laterality,
            "value": self.value.meaning,
            "code": [self.value.value, self.value.scheme_designator],
            "probability": round(float(self.probability), 4),
            "probabilities": {k: round(float(v), 4) for k, v in self.probabilities.items()},
            "model": self.model.name,
            "model_version": self.model.version,
            "trained": self.model.trained,
            "sources": [s.sop_instance_uid for s in self.sources],
        }
