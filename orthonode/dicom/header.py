"""Read and check the header of a received instance without decoding its pixels.

The handler stores the bytes as received; this module only parses the data elements needed to index
and route the instance (PS3.3 Patient/Study/Series/Image modules), checks that the dataset is whole
(a top-level element whose declared length runs past the end of the stream, or an encapsulated Pixel
Data without its sequence delimiter, means a truncated transfer), and raises
:class:`~orthonode.errors.RejectedInstance` with the status the SCP answers with.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from orthonode.dicom.contexts import StoreStatus
from orthonode.errors import RejectedInstance
from orthonode.sop_classes import STORAGE_BY_UID
from orthonode.uid import is_valid_uid

_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float Pixel Data


@dataclass(frozen=True)
class InstanceHeader:
    """What the index keeps about one instance (no patient identity)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    study_description: str | None
    series_description: str | None
    protocol_name: str | None
    anatomic_region: tuple[tuple[str, str, str], ...]
    laterality: str | None
    image_laterality: str | None
    image_orientation: tuple[float, ...] | None
    scanning_sequence: str | None
    sequence_name: str | None
    instance_number: int | None


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text[:limit] or None


def _codes(ds: Dataset, keyword: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for item in ds.get(keyword, []) or []:
        value = str(item.get("CodeValue", "") or item.get("LongCodeValue", ""))
        out.append((value, str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", ""))))
    return tuple(out[:8])


def _orientation(ds: Dataset) -> tuple[float, ...] | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:  # Enhanced MR: Plane Orientation in the shared (or first per-frame) functional group
        for group_kw in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = ds.get(group_kw)
            if groups:
                plane = groups[0].get("PlaneOrientationSequence")
                if plane:
                    iop = plane[0].get("ImageOrientationPatient")
                    if iop is not None:
                        break
    try:
        values = tuple(float(v) for v in iop) if iop is not None else None
    except (TypeError, ValueError):
        return None
    return values if values is not None and len(values) == 6 else None


def _check_encapsulated(path: Path, offset: int, size: int, little_endian: bool) -> int:
    """Walk the items of encapsulated Pixel Data (PS3.5 A.4) up to its Sequence Delimitation Item;
    returns the offset just after it."""
    order = "<" if little_endian else ">"
    with open(path, "rb") as fh:
        for _ in range(1 << 20):  # bounded: at most ~1M fragments
            fh.seek(offset)
            head = fh.read(8)
            if len(head) < 8:
                break
            group, element, length = struct.unpack(order + "HHL", head)
            if (group, element) == (0xFFFE, 0xE0DD):
                return offset + 8
            if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                break
            offset += 8 + length
            if offset > size:
                break
    raise RejectedInstance(
        StoreStatus.CANNOT_UNDERSTAND,
        "truncated dataset: encapsulated Pixel Data ends before its Sequence Delimitation Item",
        quarantine=True,
    )


def _check_whole(ds: Dataset, path: Path, size: int, caught: list[warnings.WarningMessage]) -> None:
    for message in caught:
        if "delimiter" in str(message.message) or "End of file" in str(message.message):
            raise RejectedInstance(
                StoreStatus.CANNOT_UNDERSTAND, f"truncated dataset: {message.message}", quarantine=True
            )
    end: int | None = None  # where the last top-level element ends, when it is known
    for elem in ds._dict.values():  # raw (deferred) elements keep their offset and declared length
        if not isinstance(elem, RawDataElement):
            end = None
            continue
        if elem.length == _UNDEFINED:
            is_pixels = elem.tag == 0x7FE00010
            end = (
                _check_encapsulated(path, elem.value_tell, size, elem.is_little_endian) if is_pixels else None
            )
            continue
        end = elem.value_tell + elem.length
        if end > size:
            raise RejectedInstance(
                StoreStatus.CANNOT_UNDERSTAND,
                f"truncated dataset: element {elem.tag} declares {elem.length} bytes, "
                f"stream ends {end - size} bytes early",
                quarantine=True,
            )
    # pydicom stops silently when fewer bytes than an element header (8) remain: a stream cut there.
    if end is not None and 0 < size - end < 8:
        raise RejectedInstance(
            StoreStatus.CANNOT_UNDERSTAND,
            f"truncated dataset: the stream ends {size - end} byte(s) into an element header",
            quarantine=True,
        )


def read_header(
    path: Path, *, affected_sop_class: str | None, affected_sop_instance: str | None
) -> InstanceHeader:
    """Parse and check the instance at ``path`` (DICOM file format, as the SCP received it)."""
    size = path.stat().st_size
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(path, defer_size=1024)
            if ds.file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                # (a deflated stream is checked by zlib itself: a truncated one fails to inflate)
                _check_whole(ds, path, size, caught)
            values: dict[str, Any] = {
                kw: ds.get(kw)
                for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
            }
            header = _extract(ds, values)
    except RejectedInstance:
        raise
    except Exception as exc:  # pydicom raises many kinds on hostile input; all mean "cannot parse"
        raise RejectedInstance(
            StoreStatus.CANNOT_UNDERSTAND,
            f"cannot parse dataset: {type(exc).__name__}: {exc}",
            quarantine=True,
        ) from exc

    storage_class = STORAGE_BY_UID.get(header.sop_class_uid)
    if affected_sop_class and header.sop_class_uid != affected_sop_class:
        raise RejectedInstance(
            StoreStatus.SOP_CLASS_MISMATCH,
            f"SOP Class UID {header.sop_class_uid} in the dataset differs from {affected_sop_class} "
            "in the request",
            quarantine=True,
        )
    if affected_sop_instance and header.sop_instance_uid != affected_sop_instance:
        raise RejectedInstance(
            StoreStatus.IDENTIFIER_MISMATCH,
            "SOP Instance UID in the dataset differs from Affected SOP Instance UID in the request",
            quarantine=True,
        )
    if storage_class is not None and storage_class.image and not any(t in ds._dict for t in _PIXEL_TAGS):
        raise RejectedInstance(
            StoreStatus.CANNOT_UNDERSTAND,
            f"{storage_class.name} without Pixel Data (7FE0,0010): truncated or incomplete dataset",
            quarantine=True,
        )
    return header


def _extract(ds: Dataset, uids: dict[str, Any]) -> InstanceHeader:
    names = {
        "SOPClassUID": "SOP Class UID (0008,0016)",
        "SOPInstanceUID": "SOP Instance UID (0008,0018)",
        "StudyInstanceUID": "Study Instance UID (0020,000D)",
        "SeriesInstanceUID": "Series Instance UID (0020,000E)",
    }
    for keyword, label in names.items():
        value = uids[keyword]
        if value is None or str(value).strip() == "":
            raise RejectedInstance(StoreStatus.MISSING_IDENTIFIER, f"missing {label}", quarantine=True)
        if not is_valid_uid(str(value)):
            raise RejectedInstance(
                StoreStatus.INVALID_UID, f"invalid {label}: {str(value)[:80]!r}", quarantine=True
            )
    number = ds.get("InstanceNumber")
    try:
        instance_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    lat = _text(ds, "Laterality", 1)
    img_lat = _text(ds, "ImageLaterality", 1)
    return InstanceHeader(
        sop_class_uid=str(uids["SOPClassUID"]),
        sop_instance_uid=str(uids["SOPInstanceUID"]),
        study_uid=str(uids["StudyInstanceUID"]),
        series_uid=str(uids["SeriesInstanceUID"]),
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
        modality=_text(ds, "Modality", 16),
        body_part=_text(ds, "BodyPartExamined", 16),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        anatomic_region=_codes(ds, "AnatomicRegionSequence"),
        laterality=lat if lat in ("L", "R") else None,
        image_laterality=img_lat if img_lat in ("L", "R", "B", "U") else None,
        image_orientation=_orientation(ds),
        scanning_sequence=_text(ds, "ScanningSequence"),
        sequence_name=_text(ds, "SequenceName"),
        instance_number=instance_number,
    )
