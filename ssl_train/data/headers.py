"""What one candidate file of a corpus is: its kind, its patient / study / series identity, its header record.

* :func:`file_kind` -- DICOM (by suffix, or the ``DICM`` preamble of PS3.10 Section 7.1 for UID-named
  files), NIfTI, PNG or JPEG; ``None`` for anything else;
* DICOM headers (read without pixels): Modality, PatientID, Study / Series Instance UID, Body Part Examined,
  Image / Patient Orientation and Position (PS3.3 C.7.6.2) for the slice order, Laterality;
* non-DICOM files: the patient from the path (:attr:`ssl_train.data.scan.ScanConfig.patient_patterns`), the
  anatomy from the folder names, the split from a ``train`` / ``val`` / ``test`` folder;
* :class:`FileRecord` -- the header facts of one file, before its slices are expanded into manifest rows
  (:mod:`ssl_train.data.scan`); an unusable file raises :class:`UnusableFile` with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from orthonode.errors import OrthonodeError
from orthonode.inference.intensity import modality_family
from ssl_train.data.manifest import hash_key

if TYPE_CHECKING:
    from ssl_train.data.scan import ScanConfig

__all__ = [
    "BIDS_PATTERN",
    "CHEN_KNEE_PATTERN",
    "FileKind",
    "FileRecord",
    "UnusableFile",
    "anatomy_from_text",
    "dicom_record",
    "file_kind",
    "nifti_record",
    "posix_rel",
    "raster_record",
]

FileKind = Literal["dicom", "nifti", "png", "jpeg"]

#: Chen 2018 knee KL dataset: ``{split}/{grade}/{OAI patient id}{L|R}.png``.
CHEN_KNEE_PATTERN = r"(?:^|/)(?P<patient>\d+)(?P<side>[LR])\.(?:png|jpe?g)$"
#: BIDS datasets: ``sub-<label>/...``.
BIDS_PATTERN = r"(?:^|/)sub-(?P<patient>[A-Za-z0-9]+)(?:/|_)"

_RASTER_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
# Files never worth opening (documentation, tables, archives, arrays, checkpoints, caches).
_NON_IMAGE_SUFFIXES = {
    ".txt", ".csv", ".tsv", ".json", ".md", ".rst", ".yaml", ".yml", ".xml", ".html", ".py", ".npy", ".npz",
    ".pt", ".pth", ".safetensors", ".zip", ".tar", ".gz", ".bz2", ".xz", ".7z", ".log", ".pdf", ".ini",
    ".toml", ".sha256", ".md5", ".lock", ".tmp",
}  # fmt: skip
_NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "SEG", "RTSTRUCT", "RTPLAN", "DOC", "REG", "FID", "AU", "ECG"}
_SPLIT_FOLDERS = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip

# Anatomy vocabulary: lower-case word -> canonical name (DICOM CID 4031 body part codes and plain words).
_ANATOMY_WORDS: dict[str, str] = {
    "knee": "knee", "knees": "knee", "patella": "knee", "hip": "hip", "hips": "hip", "pelvis": "pelvis",
    "shoulder": "shoulder", "shoulders": "shoulder", "ankle": "ankle", "ankles": "ankle", "foot": "foot",
    "feet": "foot", "wrist": "wrist", "hand": "hand", "hands": "hand", "elbow": "elbow", "spine": "spine",
    "cspine": "cspine", "tspine": "tspine", "lspine": "lspine", "femur": "femur", "tibia": "tibia",
    "fibula": "tibia", "leg": "leg", "lowerleg": "leg", "humerus": "humerus", "forearm": "forearm",
    "chest": "chest", "thorax": "chest", "extremity": "extremity", "heel": "foot", "calcaneus": "foot",
}  # fmt: skip


def anatomy_from_text(*texts: str | None) -> str | None:
    """The first anatomy word (see the vocabulary) in the given texts, in order; ``None`` if none."""
    for text in texts:
        if not text:
            continue
        for word in re.split(r"[^a-z0-9]+", text.lower()):
            if word in _ANATOMY_WORDS:
                return _ANATOMY_WORDS[word]
    return None


def _has_dicm_magic(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def file_kind(path: Path) -> FileKind | None:
    """What a file is, by name (and the ``DICM`` preamble for UID-named files); ``None``: not an image."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in _RASTER_SUFFIXES:
        return "png" if _RASTER_SUFFIXES[suffix] == "png" else "jpeg"
    if suffix in _DICOM_SUFFIXES:
        return "dicom"
    if suffix in _NON_IMAGE_SUFFIXES:
        return None
    return "dicom" if _has_dicm_magic(path) else None


@dataclass
class FileRecord:
    path: Path
    kind: str
    modality: str
    family: str
    anatomy: str
    laterality: str
    patient_key: str
    study_key: str
    series_key: str
    rows: int
    cols: int
    photometric: str
    frames: int = 1
    group: tuple[str, ...] = ()  # series grouping key of single-frame volume slices
    position: float | None = None
    instance: int | None = None
    split_hint: str | None = None


class UnusableFile(OrthonodeError):
    """A candidate file the scanner skips; the message is the reason."""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _folder_hints(path: Path, root: Path) -> list[str]:
    """Anatomy hints, deepest first: the folders between ``root`` and the file, then ``root`` and its two
    nearest ancestors (``.../knee_kl224/train/2/x.png`` finds ``knee``); farther ancestors are ignored."""
    try:
        inner = list(path.relative_to(root).parts[:-1])
    except ValueError:
        inner = list(path.parts[:-1])
    outer = [root.name, root.parent.name, root.parent.parent.name]
    return [part for part in [*reversed(inner), *outer] if part]


def _split_hint(path: Path, root: Path) -> str | None:
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    for part in reversed(parts):
        if part.lower() in _SPLIT_FOLDERS:
            return _SPLIT_FOLDERS[part.lower()]
    return None


def dicom_record(path: Path, root: Path, config: ScanConfig) -> FileRecord:
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise UnusableFile(f"not readable as DICOM: {type(exc).__name__}: {exc}") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise UnusableFile("DICOM without Rows/Columns (not an image)")
    modality = _text(ds, "Modality").upper() or "OT"
    if modality in _NON_IMAGE_MODALITIES:
        raise UnusableFile(f"non-image modality {modality}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise UnusableFile(f"{samples} samples per pixel (only single-sample grayscale is used)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1:
        raise UnusableFile(f"empty image {rows}x{cols}")
    salt = config.key_salt
    study_uid = _text(ds, "StudyInstanceUID")
    series_uid = _text(ds, "SeriesInstanceUID")
    patient_id = _text(ds, "PatientID")
    rel = posix_rel(path, root)
    if patient_id:
        patient_key = hash_key("pid:" + patient_id, salt)
    elif study_uid:
        patient_key = hash_key("study:" + study_uid, salt)
    else:
        patient_key = hash_key("dir:" + str(Path(rel).parent), salt)
    anatomy = (
        anatomy_from_text(_text(ds, "BodyPartExamined"))
        or (_text(ds, "BodyPartExamined").lower() or None)
        or anatomy_from_text(
            _text(ds, "StudyDescription"), _text(ds, "SeriesDescription"), _text(ds, "ProtocolName")
        )
        or anatomy_from_text(*_folder_hints(path, root))
        or "unknown"
    )
    laterality = (_text(ds, "ImageLaterality") or _text(ds, "Laterality")).upper()
    family = modality_family(modality)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    orientation: tuple[float, ...] | None = None
    iop = ds.get("ImageOrientationPatient")
    if iop is not None and len(iop) == 6:
        orientation = tuple(float(v) for v in iop)
    position: float | None = None
    ipp = ds.get("ImagePositionPatient")
    if orientation is not None and ipp is not None and len(ipp) == 3:
        normal = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
        position = float(np.dot(normal, np.array([float(v) for v in ipp])))
    try:
        instance: int | None = int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        instance = None
    orient_key = "none" if orientation is None else ",".join(f"{v:.2f}" for v in orientation)
    series_id = series_uid or f"dir:{Path(rel).parent}"
    volume = family in ("mri", "ct")
    series_key = hash_key(
        f"series:{series_id}|{orient_key}|{rows}x{cols}" if volume else f"series:{series_id}", salt
    )
    return FileRecord(
        path=path,
        kind="dicom",
        modality=modality,
        family=family,
        anatomy=anatomy,
        laterality=laterality if laterality in ("L", "R", "B", "U") else "",
        patient_key=patient_key,
        study_key=hash_key("study:" + (study_uid or f"dir:{Path(rel).parent}"), salt),
        series_key=series_key,
        rows=rows,
        cols=cols,
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        frames=max(1, frames),
        group=(series_key,) if volume and frames == 1 else (),
        position=position,
        instance=instance,
        split_hint=_split_hint(path, root),
    )


def posix_rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _path_identity(path: Path, root: Path, config: ScanConfig) -> tuple[str, str, str, bool]:
    """``(patient_key, study_key, laterality, matched)`` of a non-DICOM file from its path."""
    rel = posix_rel(path, root)
    salt = config.key_salt
    for pattern in config.patient_patterns:
        match = re.search(pattern, rel, flags=re.IGNORECASE)
        if match:
            patient = match.group("patient")
            side = (match.groupdict().get("side") or "").upper()
            return hash_key("pid:" + patient, salt), hash_key("study:" + patient, salt), side, True
    stem = path.name
    for ext in (".nii.gz", ".nii", path.suffix):
        if ext and stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    key = f"{Path(rel).parent.as_posix()}/{stem}"
    return hash_key("file:" + key, salt), hash_key("file:" + key, salt), "", False


def raster_record(path: Path, root: Path, config: ScanConfig, kind: str) -> tuple[FileRecord, bool]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            cols, rows = image.size
            if config.verify_pixels:
                image.load()
    except Exception as exc:
        raise UnusableFile(f"not readable as {kind.upper()}: {type(exc).__name__}: {exc}") from exc
    patient_key, study_key, side, matched = _path_identity(path, root, config)
    rel = posix_rel(path, root)
    modality = config.raster_modality.upper()
    return (
        FileRecord(
            path=path,
            kind=kind,
            modality=modality,
            family=modality_family(modality),
            anatomy=anatomy_from_text(*_folder_hints(path, root)) or "unknown",
            laterality=side,
            patient_key=patient_key,
            study_key=study_key,
            series_key=hash_key("series:file:" + rel, config.key_salt),
            rows=rows,
            cols=cols,
            photometric="MONOCHROME2",
            split_hint=_split_hint(path, root),
        ),
        matched,
    )


def nifti_record(path: Path, root: Path, config: ScanConfig) -> tuple[FileRecord, bool]:
    import SimpleITK as sitk  # noqa: N813

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = list(reader.GetSize())
    except Exception as exc:
        raise UnusableFile(f"not readable as NIfTI: {type(exc).__name__}: {exc}") from exc
    if reader.GetNumberOfComponents() != 1:
        raise UnusableFile(f"NIfTI with {reader.GetNumberOfComponents()} components per voxel")
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) not in (2, 3):
        raise UnusableFile(f"NIfTI of dimension {len(size)} (only 2-D and 3-D are used)")
    cols, rows = int(size[0]), int(size[1])
    frames = int(size[2]) if len(size) == 3 else 1
    if rows < 1 or cols < 1 or frames < 1:
        raise UnusableFile(f"empty NIfTI of size {size}")
    patient_key, study_key, _, matched = _path_identity(path, root, config)
    modality = config.nifti_modality.upper()
    return (
        FileRecord(
            path=path,
            kind="nifti",
            modality=modality,
            family=modality_family(modality),
            anatomy=anatomy_from_text(*_folder_hints(path, root)) or "unknown",
            laterality="",
            patient_key=patient_key,
            study_key=study_key,
            series_key=hash_key("series:file:" + posix_rel(path, root), config.key_salt),
            rows=rows,
            cols=cols,
            photometric="MONOCHROME2",
            frames=frames,
            split_hint=_split_hint(path, root),
        ),
        matched,
    )
