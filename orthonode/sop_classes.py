"""The storage SOP classes the node accepts (PS3.4 Annex B.5, UIDs from PS3.6 Annex A), in one place.

Each class says whether it is an image IOD (Pixel Data is Type 1 there, PS3.3) and what routing makes of a
series of it (:class:`SopKind`): the receiver offers exactly these classes (:mod:`orthonode.dicom.scp`
builds its presentation contexts from :data:`STORAGE_CLASSES`), the header reader
(:mod:`orthonode.dicom.header`) looks classes up in :data:`STORAGE_BY_UID`, and routing
(:mod:`orthonode.completion.selection`) classifies series by the same table and, for classes the node
does not accept, by the families below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SopKind(StrEnum):
    RADIOGRAPH = "radiograph"  # CR, DX: a knee / hip film
    MR = "mr"  # one slice per instance
    MR_MULTIFRAME = "mr_multiframe"  # Enhanced / Legacy Converted Enhanced MR: a volume per instance
    CT = "ct"  # accepted and stored; no pipeline takes it
    RESULT = "result"  # SR, Key Objects, Secondary Capture: results and derived objects, never inputs


@dataclass(frozen=True)
class StorageClass:
    uid: str
    name: str
    image: bool  # an image IOD: Pixel Data (7FE0,0010) is Type 1
    kind: SopKind  # what routing makes of a series of this class


STORAGE_CLASSES: tuple[StorageClass, ...] = (
    StorageClass("1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image Storage", True, SopKind.RADIOGRAPH),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.1.1",
        "Digital X-Ray Image Storage - For Presentation",
        True,
        SopKind.RADIOGRAPH,
    ),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.1.1.1",
        "Digital X-Ray Image Storage - For Processing",
        True,
        SopKind.RADIOGRAPH,
    ),
    StorageClass("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage", True, SopKind.MR),
    StorageClass("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage", True, SopKind.MR_MULTIFRAME),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.4.4",
        "Legacy Converted Enhanced MR Image Storage",
        True,
        SopKind.MR_MULTIFRAME,
    ),
    StorageClass("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage", True, SopKind.CT),
    StorageClass("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage", True, SopKind.CT),
    StorageClass("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage", True, SopKind.RESULT),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        True,
        SopKind.RESULT,
    ),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
        True,
        SopKind.RESULT,
    ),
    StorageClass("1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR Storage", False, SopKind.RESULT),
    StorageClass("1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR Storage", False, SopKind.RESULT),
    StorageClass("1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR Storage", False, SopKind.RESULT),
    StorageClass("1.2.840.10008.5.1.4.1.1.88.34", "Comprehensive 3D SR Storage", False, SopKind.RESULT),
    StorageClass(
        "1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document Storage", False, SopKind.RESULT
    ),
)
STORAGE_BY_UID = {c.uid: c for c in STORAGE_CLASSES}

#: The root of the storage SOP Class UIDs (PS3.6 Annex A).
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1"
#: MR Spectroscopy Storage: MR, but no images (not accepted; routing never treats it as MRI).
MR_SPECTROSCOPY_STORAGE = f"{STORAGE_ROOT}.4.2"
#: SOP Class families (a UID and every UID under it) that are results or derived objects, never inputs.
RESULT_SOP_FAMILIES: tuple[str, ...] = (
    f"{STORAGE_ROOT}.88",  # Structured Reports, Key Object Selection
    f"{STORAGE_ROOT}.7",  # Secondary Capture (single and multi-frame)
    f"{STORAGE_ROOT}.11",  # Presentation States
    f"{STORAGE_ROOT}.66",  # Raw Data, Spatial Registration, Fiducials, Segmentation, Surface Segmentation
    f"{STORAGE_ROOT}.104",  # Encapsulated Documents
)


def uids_of(*kinds: SopKind) -> frozenset[str]:
    """The accepted SOP Class UIDs of the given kinds."""
    return frozenset(c.uid for c in STORAGE_CLASSES if c.kind in kinds)
