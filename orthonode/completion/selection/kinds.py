"""Rule 1 of routing: the kind of a series from its SOP Class UID (PS3.4 Annex B, PS3.6 Annex A) and its
Modality (0008,0060), PS3.3 C.7.3.1: radiograph, MRI, CT, a result or derived object, or other."""

from __future__ import annotations

from enum import StrEnum

from orthonode.completion.selection.facts import SeriesFacts
from orthonode.sop_classes import MR_SPECTROSCOPY_STORAGE, RESULT_SOP_FAMILIES, SopKind, uids_of
from orthonode.tasks.pipelines import ModalityKind

# Image classes by kind: the receiver's own table (orthonode.sop_classes), so routing knows exactly what
# the node accepts. Spectroscopy is MR without images.
_RADIOGRAPH_SOP_CLASSES = uids_of(SopKind.RADIOGRAPH)
_MR_SOP_CLASSES = uids_of(SopKind.MR, SopKind.MR_MULTIFRAME)
MR_MULTI_FRAME_SOP_CLASSES = uids_of(SopKind.MR_MULTIFRAME)
_CT_SOP_CLASSES = uids_of(SopKind.CT)
_RESULT_MODALITIES = frozenset({"SR", "KO", "PR", "SEG", "OT", "DOC", "REG"})


class SeriesKind(StrEnum):
    RADIOGRAPH = "radiograph"
    MRI = "MRI"
    CT = "CT"
    RESULT = "result"
    OTHER = "other"


INPUT_KINDS: dict[SeriesKind, ModalityKind] = {
    SeriesKind.RADIOGRAPH: ModalityKind.RADIOGRAPH,
    SeriesKind.MRI: ModalityKind.MRI,
}
KIND_LABEL: dict[ModalityKind, str] = {ModalityKind.RADIOGRAPH: "radiograph", ModalityKind.MRI: "MRI"}


def _in_family(uid: str, root: str) -> bool:
    return uid == root or uid.startswith(root + ".")


def series_kind(series: SeriesFacts) -> SeriesKind:
    sop = series.sop_class_uid.strip()
    modality = series.modality.strip().upper()
    if modality in _RESULT_MODALITIES or any(_in_family(sop, root) for root in RESULT_SOP_FAMILIES):
        return SeriesKind.RESULT
    if sop == MR_SPECTROSCOPY_STORAGE:  # MR, but no images
        return SeriesKind.OTHER
    if sop in _RADIOGRAPH_SOP_CLASSES:
        return SeriesKind.RADIOGRAPH
    if sop in _MR_SOP_CLASSES:
        return SeriesKind.MRI
    if sop in _CT_SOP_CLASSES:
        return SeriesKind.CT
    if modality in ("CR", "DX"):
        return SeriesKind.RADIOGRAPH
    if modality == "MR":
        return SeriesKind.MRI
    if modality == "CT":
        return SeriesKind.CT
    return SeriesKind.OTHER
