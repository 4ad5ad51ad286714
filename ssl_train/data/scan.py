"""Corpus scanner: a folder tree of DICOM, NIfTI and PNG / JPEG files to a manifest of 2-D training images.

One manifest row is one 2-D image the dataset can load: a radiograph, one frame of a multi-frame instance,
one slice of an MR series (single-frame files grouped into a series), or one slice of a NIfTI volume.
Volumes are turned into slices with a configurable :class:`SliceSampling` (all slices, every k-th, the
central fraction, or both). For volumes the scanner also computes the robust intensity window of the
*whole* series (see :mod:`orthonode.inference.intensity`) and stores it in the row, so that the dataset can
normalise one slice without decoding its neighbours.

Privacy: the manifest never holds a Patient ID or a UID. ``patient_key``, ``study_key`` and ``series_key``
are keyed one-way hashes (HMAC-SHA-256, truncated) of PatientID (0010,0020), Study / Series Instance UID.
A short numeric id hashed with a public key can be recovered by enumeration, so set
``ScanConfig.key_salt`` to a site secret when a manifest leaves the site.

Splits are held out by patient: ``split`` is a deterministic function of ``patient_key`` (a hash mapped onto
``[0, 1)`` compared with ``val_fraction``), so every image of a patient -- all slices of all series, both
knees -- lands in the same split, and the assignment is stable when the corpus grows.
:func:`verify_patient_split` checks it and raises :class:`SplitLeakError`.

Non-DICOM patients come from the file path (:attr:`ScanConfig.patient_patterns`): BIDS ``sub-<label>``
folders, and the Chen 2018 knee dataset layout ``{split}/{grade}/{patient}{L|R}.png`` (doi
10.17632/56rmx5bjcr.1), whose two knees of one patient share a patient. Otherwise the file stem is the
patient (each file its own patient; logged, as it can leak between splits if the real patient is shared).

The scanner is bounded: unreadable or non-image files are skipped with a logged reason (and listed in
:attr:`ScanResult.skipped`), and ``max_files`` caps the number of candidate files visited.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import math
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from orthonode.errors import OrthonodeError
from orthonode.inference.intensity import (
    DEFAULT_PERCENTILES,
    modality_family,
    modality_values,
    percentile_range,
)
from ssl_train.data.readers import read_dicom_pixels, read_nifti_volume

__all__ = [
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "ScanConfig",
    "ScanResult",
    "SkippedFile",
    "SliceSampling",
    "SplitLeakError",
    "anatomy_from_text",
    "assign_split",
    "file_kind",
    "hash_key",
    "read_manifest",
    "scan_corpus",
    "verify_patient_split",
    "write_manifest",
]

logger = logging.getLogger(__name__)

FileKind = Literal["dicom", "nifti", "png", "jpeg"]

#: Columns of the manifest CSV, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "frame",
    "slice_index",
    "n_slices",
    "format",
    "modality",
    "family",
    "anatomy",
    "laterality",
    "patient_key",
    "study_key",
    "series_key",
    "rows",
    "cols",
    "photometric",
    "norm_low",
    "norm_high",
    "split",
)

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


class SplitLeakError(OrthonodeError, ValueError):
    """A patient appears in more than one split of a manifest."""


@dataclass(frozen=True)
class SliceSampling:
    """Which slices of a volume become training images.

    First the central ``central_fraction`` of the slices is kept (``round(n * f)``, at least one, centred),
    then every ``step``-th of those, starting with the first kept slice. ``SliceSampling()`` keeps all
    slices; ``SliceSampling(step=3)`` every third; ``SliceSampling(central_fraction=0.6)`` drops the outer
    20% on each side, where knee MR slices are mostly outside the joint.
    """

    step: int = 1
    central_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ValueError(f"slice step must be >= 1, got {self.step}")
        if not (0.0 < self.central_fraction <= 1.0):
            raise ValueError(f"central_fraction must be in (0, 1], got {self.central_fraction}")

    def select(self, n_slices: int) -> list[int]:
        """Indices (into the sorted volume) of the slices kept out of ``n_slices``."""
        if n_slices <= 0:
            return []
        keep = min(n_slices, max(1, round(n_slices * self.central_fraction)))
        start = (n_slices - keep) // 2
        return list(range(start, start + keep, self.step))


@dataclass(frozen=True)
class ScanConfig:
    """Options of :func:`scan_corpus`.

    Attributes:
        slices: slice sampling of volumes (MR series, multi-frame MR / CT, NIfTI).
        val_fraction: fraction of *patients* assigned to ``val`` (the rest ``train``), in ``[0, 1)``.
        split_salt: salt of the split hash; changing it draws a different patient-level split.
        key_salt: HMAC key of the patient / study / series hashes (set a site secret for shared manifests).
        max_files: stop after this many candidate image files (``None``: no limit).
        folder_split: take the split from a path folder named train / val / test when there is one (e.g. an
            official dataset split), else the hash.
        volume_stats: compute the per-volume percentile window at scan time (decodes every volume once).
        verify_pixels: also decode every radiograph / raster image at scan time, skipping the undecodable.
        percentiles: the robust window percentiles of volumes.
        nifti_modality: Modality recorded for NIfTI files (they carry none).
        raster_modality: Modality recorded for PNG / JPEG files (the project's raster data are radiographs;
            use ``"MR"`` for exported MR slices).
        patient_patterns: regular expressions with a ``patient`` group (and optionally ``side``) searched
            in the POSIX relative path of non-DICOM files, first match wins.
        relative_paths: write paths relative to the scanned root instead of absolute paths.
    """

    slices: SliceSampling = field(default_factory=SliceSampling)
    val_fraction: float = 0.1
    split_salt: str = "orthofoundation-ssl-split-v1"
    key_salt: str = "orthofoundation-ssl"
    max_files: int | None = None
    folder_split: bool = False
    volume_stats: bool = True
    verify_pixels: bool = False
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    nifti_modality: str = "MR"
    raster_modality: str = "DX"
    patient_patterns: tuple[str, ...] = (BIDS_PATTERN, CHEN_KNEE_PATTERN)
    relative_paths: bool = False

    def __post_init__(self) -> None:
        if not (0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_files is not None and self.max_files < 1:
            raise ValueError(f"max_files must be >= 1 or None, got {self.max_files}")
        lo, hi = self.percentiles
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        for pattern in self.patient_patterns:
            if "(?P<patient>" not in pattern:
                raise ValueError(f"patient pattern {pattern!r} has no (?P<patient>...) group")
            re.compile(pattern)


@dataclass(frozen=True)
class ManifestRow:
    """One 2-D training image of the manifest (see :data:`MANIFEST_COLUMNS`).

    ``frame`` indexes the 2-D image inside the file (multi-frame DICOM frame, NIfTI slice along the third
    voxel axis, else 0); ``slice_index`` is the position in the sorted series volume of ``n_slices`` slices
    (0 of 1 for radiographs); ``norm_low`` / ``norm_high`` are the volume's Modality-LUT window (``None``
    for radiographs and raster files).
    """

    path: str
    frame: int
    slice_index: int
    n_slices: int
    format: str
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
    norm_low: float | None
    norm_high: float | None
    split: str


@dataclass(frozen=True)
class SkippedFile:
    """A candidate file the scanner could not use, and why."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """What :func:`scan_corpus` found."""

    rows: list[ManifestRow]
    skipped: list[SkippedFile]
    files_seen: int
    truncated: bool

    def summary(self) -> dict[str, Any]:
        """Counts for logs and run cards: images, patients, per split / modality / anatomy, skipped files."""
        by: dict[str, dict[str, int]] = {"split": {}, "modality": {}, "anatomy": {}, "format": {}}
        for row in self.rows:
            for name, counts in by.items():
                value = str(getattr(row, name))
                counts[value] = counts.get(value, 0) + 1
        return {
            "images": len(self.rows),
            "patients": len({r.patient_key for r in self.rows}),
            "files_seen": self.files_seen,
            "skipped": len(self.skipped),
            "truncated": self.truncated,
            **{f"by_{name}": dict(sorted(counts.items())) for name, counts in by.items()},
        }


def hash_key(value: str, salt: str) -> str:
    """Keyed one-way hash (HMAC-SHA-256, first 20 hex digits) of an identifier."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


def assign_split(patient_key: str, val_fraction: float, salt: str) -> str:
    """``"val"`` or ``"train"`` for a patient: SHA-256 of ``salt|patient_key`` mapped onto ``[0, 1)``."""
    if not (0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    digest = hashlib.sha256(f"{salt}|{patient_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


def verify_patient_split(rows: Iterable[ManifestRow]) -> None:
    """Raise :class:`SplitLeakError` when any ``patient_key`` occurs in more than one split."""
    splits: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        splits[row.patient_key].add(row.split)
    leaks = sorted(key for key, names in splits.items() if len(names) > 1)
    if leaks:
        shown = ", ".join(f"{key} in {sorted(splits[key])}" for key in leaks[:5])
        raise SplitLeakError(f"{len(leaks)} patient(s) appear in more than one split: {shown}")


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


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` in sorted, deterministic order; hidden files and folders are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


# --------------------------------------------------------------------------------------------------------
# Per-file header records, before slices are expanded and splits assigned.


@dataclass
class _Record:
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


class _Skip(Exception):
    """Internal: a file to skip, with its reason."""


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


def _dicom_record(path: Path, root: Path, config: ScanConfig) -> _Record:
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise _Skip(f"not readable as DICOM: {type(exc).__name__}: {exc}") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise _Skip("DICOM without Rows/Columns (not an image)")
    modality = _text(ds, "Modality").upper() or "OT"
    if modality in _NON_IMAGE_MODALITIES:
        raise _Skip(f"non-image modality {modality}")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise _Skip(f"{samples} samples per pixel (only single-sample grayscale is used)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1:
        raise _Skip(f"empty image {rows}x{cols}")
    salt = config.key_salt
    study_uid = _text(ds, "StudyInstanceUID")
    series_uid = _text(ds, "SeriesInstanceUID")
    patient_id = _text(ds, "PatientID")
    rel = _posix_rel(path, root)
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
    return _Record(
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


def _posix_rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _path_identity(path: Path, root: Path, config: ScanConfig) -> tuple[str, str, str, bool]:
    """``(patient_key, study_key, laterality, matched)`` of a non-DICOM file from its path."""
    rel = _posix_rel(path, root)
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


def _raster_record(path: Path, root: Path, config: ScanConfig, kind: str) -> tuple[_Record, bool]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            cols, rows = image.size
            if config.verify_pixels:
                image.load()
    except Exception as exc:
        raise _Skip(f"not readable as {kind.upper()}: {type(exc).__name__}: {exc}") from exc
    patient_key, study_key, side, matched = _path_identity(path, root, config)
    rel = _posix_rel(path, root)
    modality = config.raster_modality.upper()
    return (
        _Record(
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


def _nifti_record(path: Path, root: Path, config: ScanConfig) -> tuple[_Record, bool]:
    import SimpleITK as sitk  # noqa: N813

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = list(reader.GetSize())
    except Exception as exc:
        raise _Skip(f"not readable as NIfTI: {type(exc).__name__}: {exc}") from exc
    if reader.GetNumberOfComponents() != 1:
        raise _Skip(f"NIfTI with {reader.GetNumberOfComponents()} components per voxel")
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) not in (2, 3):
        raise _Skip(f"NIfTI of dimension {len(size)} (only 2-D and 3-D are used)")
    cols, rows = int(size[0]), int(size[1])
    frames = int(size[2]) if len(size) == 3 else 1
    if rows < 1 or cols < 1 or frames < 1:
        raise _Skip(f"empty NIfTI of size {size}")
    patient_key, study_key, _, matched = _path_identity(path, root, config)
    modality = config.nifti_modality.upper()
    return (
        _Record(
            path=path,
            kind="nifti",
            modality=modality,
            family=modality_family(modality),
            anatomy=anatomy_from_text(*_folder_hints(path, root)) or "unknown",
            laterality="",
            patient_key=patient_key,
            study_key=study_key,
            series_key=hash_key("series:file:" + _posix_rel(path, root), config.key_salt),
            rows=rows,
            cols=cols,
            photometric="MONOCHROME2",
            frames=frames,
            split_hint=_split_hint(path, root),
        ),
        matched,
    )


# --------------------------------------------------------------------------------------------------------
# Pixel access used by the scanner for volume statistics (the dataset has its own, cached, path).


def _stride_for(n_values: int) -> int:
    return max(1, math.ceil(n_values / 4_000_000))


def _dicom_values(path: Path) -> np.ndarray:
    """Modality-LUT values of every frame of a DICOM file, ``[frames, rows, cols]`` (float64)."""
    ds, pixels = read_dicom_pixels(path)
    values = modality_values(pixels, ds)
    return values if values.ndim == 3 and int(ds.get("NumberOfFrames", 1) or 1) > 1 else values[None]


def _volume_range(volumes: Sequence[np.ndarray], config: ScanConfig) -> tuple[float, float]:
    total = sum(int(v.size) for v in volumes)
    stride = _stride_for(total)
    return percentile_range([np.asarray(v).ravel()[::stride] for v in volumes], config.percentiles)


# --------------------------------------------------------------------------------------------------------


def _row(
    record: _Record,
    *,
    frame: int,
    slice_index: int,
    n_slices: int,
    norm: tuple[float, float] | None,
    root: Path,
    config: ScanConfig,
) -> ManifestRow:
    if config.folder_split and record.split_hint is not None:
        split = record.split_hint
    else:
        split = assign_split(record.patient_key, config.val_fraction, config.split_salt)
    path = _posix_rel(record.path, root) if config.relative_paths else str(record.path)
    return ManifestRow(
        path=path,
        frame=frame,
        slice_index=slice_index,
        n_slices=n_slices,
        format=record.kind,
        modality=record.modality,
        family=record.family,
        anatomy=record.anatomy,
        laterality=record.laterality,
        patient_key=record.patient_key,
        study_key=record.study_key,
        series_key=record.series_key,
        rows=record.rows,
        cols=record.cols,
        photometric=record.photometric,
        norm_low=None if norm is None else norm[0],
        norm_high=None if norm is None else norm[1],
        split=split,
    )


def _sort_series(records: list[_Record]) -> list[_Record]:
    """Slices of a series in order: position along the normal, else Instance Number, else path."""
    if all(r.position is not None for r in records):
        return sorted(records, key=lambda r: (r.position, r.instance or 0, str(r.path)))
    if all(r.instance is not None for r in records):
        return sorted(records, key=lambda r: (r.instance, str(r.path)))
    return sorted(records, key=lambda r: str(r.path))


def scan_corpus(root: str | os.PathLike[str], config: ScanConfig | None = None) -> ScanResult:
    """Scan ``root`` recursively and return the manifest rows (sorted by path, frame) and skipped files.

    Raises:
        FileNotFoundError: when ``root`` is not a directory.
        SplitLeakError: when ``folder_split`` puts one patient's images in two splits.
    """
    config = config or ScanConfig()
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise FileNotFoundError(f"corpus root {root_path} is not a directory")
    skipped: list[SkippedFile] = []
    records: list[_Record] = []
    seen = 0
    truncated = False
    unmatched = 0

    def skip(path: Path, reason: str) -> None:
        rel = _posix_rel(path, root_path)
        logger.warning("skipping %s: %s", rel, reason)
        skipped.append(SkippedFile(rel, reason))

    for path in _walk(root_path):
        kind = file_kind(path)
        if kind is None:
            continue
        if config.max_files is not None and seen >= config.max_files:
            truncated = True
            break
        seen += 1
        try:
            if kind == "dicom":
                records.append(_dicom_record(path, root_path, config))
            elif kind == "nifti":
                record, matched = _nifti_record(path, root_path, config)
                records.append(record)
                unmatched += not matched
            else:
                record, matched = _raster_record(path, root_path, config, kind)
                records.append(record)
                unmatched += not matched
        except _Skip as exc:
            skip(path, str(exc))
        except Exception as exc:  # a scanner must survive any single bad file
            skip(path, f"unexpected {type(exc).__name__}: {exc}")
    if truncated:
        logger.warning("max_files=%d reached: scan of %s truncated", config.max_files, root_path)
    if unmatched:
        logger.warning(
            "%d non-DICOM file(s) matched no patient pattern: each file stem is its own patient", unmatched
        )

    rows: list[ManifestRow] = []
    groups: dict[tuple[str, ...], list[_Record]] = defaultdict(list)
    for record in records:
        if record.group:
            groups[record.group].append(record)
        else:
            rows.extend(_expand_file(record, root_path, config, skip))
    for members in groups.values():
        rows.extend(_expand_series(_sort_series(members), root_path, config, skip))
    rows.sort(key=lambda r: (r.path, r.frame))
    verify_patient_split(rows)
    result = ScanResult(rows=rows, skipped=skipped, files_seen=seen, truncated=truncated)
    logger.info("scanned %s: %s", root_path, {k: v for k, v in result.summary().items() if k != "by_anatomy"})
    return result


def _expand_file(
    record: _Record, root: Path, config: ScanConfig, skip: Callable[[Path, str], None]
) -> list[ManifestRow]:
    """Rows of one file: every frame of a radiograph, the sampled slices of a volume file."""
    volume = record.family in ("mri", "ct") or record.kind == "nifti"
    norm: tuple[float, float] | None = None
    if volume and config.volume_stats:
        try:
            values = _dicom_values(record.path) if record.kind == "dicom" else read_nifti_volume(record.path)
            norm = _volume_range([values], config)
        except Exception as exc:
            skip(record.path, f"cannot decode volume: {type(exc).__name__}: {exc}")
            return []
    elif config.verify_pixels and record.kind == "dicom":
        try:
            _dicom_values(record.path)
        except Exception as exc:
            skip(record.path, f"cannot decode pixels: {type(exc).__name__}: {exc}")
            return []
    frames = config.slices.select(record.frames) if volume else list(range(record.frames))
    return [
        _row(record, frame=f, slice_index=f, n_slices=record.frames, norm=norm, root=root, config=config)
        for f in frames
    ]


def _expand_series(
    members: list[_Record], root: Path, config: ScanConfig, skip: Callable[[Path, str], None]
) -> list[ManifestRow]:
    """Rows of a series of single-frame slices: decode for the volume window, then sample."""
    norm: tuple[float, float] | None = None
    if config.volume_stats:
        kept: list[_Record] = []
        values: list[np.ndarray] = []
        stride = _stride_for(sum(m.rows * m.cols for m in members))
        for member in members:
            try:
                values.append(_dicom_values(member.path).ravel()[::stride])
                kept.append(member)
            except Exception as exc:
                skip(member.path, f"cannot decode pixels: {type(exc).__name__}: {exc}")
        if not kept:
            return []
        members = kept
        norm = percentile_range(values, config.percentiles)
    n = len(members)
    return [
        _row(members[i], frame=0, slice_index=i, n_slices=n, norm=norm, root=root, config=config)
        for i in config.slices.select(n)
    ]


# --------------------------------------------------------------------------------------------------------
# Manifest CSV I/O.


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_manifest(rows: Iterable[ManifestRow], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` as CSV with :data:`MANIFEST_COLUMNS` (atomically: temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_COLUMNS)
            for row in rows:
                values = asdict(row)
                writer.writerow([_format_value(values[name]) for name in MANIFEST_COLUMNS])
        Path(tmp_name).replace(target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


_INT_FIELDS = {"frame", "slice_index", "n_slices", "rows", "cols"}
_FLOAT_FIELDS = {"norm_low", "norm_high"}


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read a manifest CSV written by :func:`write_manifest`.

    Raises:
        ValueError: when required columns are missing or a value does not parse (names the line).
    """
    names = [f.name for f in fields(ManifestRow)]
    rows: list[ManifestRow] = []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in names if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"manifest {path} lacks columns {missing}")
        for line, record in enumerate(reader, start=2):
            try:
                values: dict[str, Any] = {}
                for name in names:
                    raw = record[name]
                    if name in _INT_FIELDS:
                        values[name] = int(raw)
                    elif name in _FLOAT_FIELDS:
                        values[name] = float(raw) if raw not in ("", None) else None
                    else:
                        values[name] = raw or ""
                rows.append(ManifestRow(**values))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"manifest {path} line {line}: {exc}") from exc
    return rows
