"""Corpus scanner: a folder tree of DICOM, NIfTI and PNG / JPEG files to a manifest of 2-D training images.

One manifest row is one 2-D image the dataset can load: a radiograph, one frame of a multi-frame instance,
one slice of an MR series (single-frame files grouped into a series), or one slice of a NIfTI volume.
Volumes are turned into slices with a configurable :class:`SliceSampling` (all slices, every k-th, the
central fraction, or both). For volumes the scanner also computes the robust intensity window of the
*whole* series (see :mod:`orthonode.inference.intensity`) and stores it in the row, so that the dataset can
normalise one slice without decoding its neighbours.

The job is split in three: what one file is (kind, identity, header record: :mod:`ssl_train.data.headers`),
the manifest rows, their patient-level splits and the CSV (:mod:`ssl_train.data.manifest`), and here the
walk of the corpus, the grouping of slices into series and their expansion into rows. The names of the
other two modules stay importable from here.

Privacy: the manifest never holds a Patient ID or a UID, only keyed hashes (:mod:`ssl_train.data.manifest`).
A short numeric id hashed with a public key can be recovered by enumeration, so set
``ScanConfig.key_salt`` to a site secret when a manifest leaves the site. Splits are held out by patient
(:func:`assign_split`), checked by :func:`verify_patient_split`.

Non-DICOM patients come from the file path (:attr:`ScanConfig.patient_patterns`): BIDS ``sub-<label>``
folders, and the Chen 2018 knee dataset layout ``{split}/{grade}/{patient}{L|R}.png`` (doi
10.17632/56rmx5bjcr.1), whose two knees of one patient share a patient. Otherwise the file stem is the
patient (each file its own patient; logged, as it can leak between splits if the real patient is shared).

The scanner is bounded: unreadable or non-image files are skipped with a logged reason (and listed in
:attr:`ScanResult.skipped`), and ``max_files`` caps the number of candidate files visited.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orthonode.inference.intensity import DEFAULT_PERCENTILES, modality_values, percentile_range
from ssl_train.data.headers import (
    BIDS_PATTERN,
    CHEN_KNEE_PATTERN,
    FileRecord,
    UnusableFile,
    anatomy_from_text,
    dicom_record,
    file_kind,
    nifti_record,
    posix_rel,
    raster_record,
)
from ssl_train.data.manifest import (
    MANIFEST_COLUMNS,
    ManifestRow,
    SplitLeakError,
    assign_split,
    hash_key,
    read_manifest,
    verify_patient_split,
    write_manifest,
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


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root`` in sorted, deterministic order; hidden files and folders are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


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
    record: FileRecord,
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
    path = posix_rel(record.path, root) if config.relative_paths else str(record.path)
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


def _sort_series(records: list[FileRecord]) -> list[FileRecord]:
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
    records: list[FileRecord] = []
    seen = 0
    truncated = False
    unmatched = 0

    def skip(path: Path, reason: str) -> None:
        rel = posix_rel(path, root_path)
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
                records.append(dicom_record(path, root_path, config))
            elif kind == "nifti":
                record, matched = nifti_record(path, root_path, config)
                records.append(record)
                unmatched += not matched
            else:
                record, matched = raster_record(path, root_path, config, kind)
                records.append(record)
                unmatched += not matched
        except UnusableFile as exc:
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
    groups: dict[tuple[str, ...], list[FileRecord]] = defaultdict(list)
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
    record: FileRecord, root: Path, config: ScanConfig, skip: Callable[[Path, str], None]
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
    members: list[FileRecord], root: Path, config: ScanConfig, skip: Callable[[Path, str], None]
) -> list[ManifestRow]:
    """Rows of a series of single-frame slices: decode for the volume window, then sample."""
    norm: tuple[float, float] | None = None
    if config.volume_stats:
        kept: list[FileRecord] = []
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
