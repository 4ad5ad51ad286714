"""Labelled samples, patient-level splits and pixel loading shared by every dataset adapter.

A :class:`Sample` is one labelled unit of a task: a single radiograph, or one MRI series (a volume or a
DICOM series folder). Every sample carries the key of the patient it comes from; no patient may appear
in two splits (:func:`check_patient_splits` raises :class:`PatientLeakError`), and every subset this
package carves (validation split, label-efficiency fractions) is drawn by patient, never by image.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from orthonode.errors import OrthonodeError
from orthonode.inference import loading

SampleKind = Literal["image", "volume"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class DatasetError(OrthonodeError, ValueError):
    """A dataset whose files or index do not have the expected layout (names the file and the problem)."""


class PatientLeakError(DatasetError):
    """A patient whose samples fall in more than one split."""


@dataclass(frozen=True)
class Sample:
    """One labelled sample.

    ``key`` is stable and unique within its dataset (a path relative to the dataset root); ``paths`` are
    the files it is read from (one image, one volume file, or one DICOM series folder).
    """

    key: str
    paths: tuple[Path, ...]
    label: int
    patient_id: str
    split: str
    kind: SampleKind = "image"
    side: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def check_patient_splits(samples: Iterable[Sample]) -> None:
    """Raise :class:`PatientLeakError` if any patient has samples in more than one split.

    The message counts the offending patients and names splits, not patient identifiers (logs and
    tracebacks must not carry them).
    """
    splits_of: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        splits_of[sample.patient_id].add(sample.split)
    leaking = {p: s for p, s in splits_of.items() if len(s) > 1}
    if leaking:
        pairs = sorted({" / ".join(sorted(s)) for s in leaking.values()})
        raise PatientLeakError(
            f"{len(leaking)} patient(s) have samples in more than one split ({'; '.join(pairs)}): "
            "splits must be drawn by patient"
        )


@dataclass
class LabelledDataset:
    """The samples of one dataset for one task, with their official splits."""

    name: str
    task: str
    root: Path
    samples: list[Sample]
    num_classes: int
    notes: str = ""

    def __post_init__(self) -> None:
        keys = [s.key for s in self.samples]
        if len(set(keys)) != len(keys):
            raise DatasetError(f"{self.name}: duplicate sample keys")
        for sample in self.samples:
            if not 0 <= sample.label < self.num_classes:
                raise DatasetError(
                    f"{self.name}: {sample.key} has label {sample.label} outside 0..{self.num_classes - 1}"
                )
        check_patient_splits(self.samples)

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples})

    def split(self, *names: str) -> list[Sample]:
        """The samples of the named split(s); DatasetError names the available splits."""
        unknown = [n for n in names if n not in self.splits]
        if unknown:
            raise DatasetError(f"{self.name}: no split {unknown}; available: {', '.join(self.splits)}")
        return [s for s in self.samples if s.split in names]

    def label_counts(self, split: str | None = None) -> list[int]:
        counts = [0] * self.num_classes
        for s in self.samples:
            if split is None or s.split == split:
                counts[s.label] += 1
        return counts


def samples_digest(samples: Sequence[Sample]) -> str:
    """A short digest of sample keys and labels (identifies a sample list in caches and results)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.key}\0{s.label}\0{s.split}\n".encode())
    return digest.hexdigest()[:12]


def _patient_groups(samples: Sequence[Sample]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.patient_id].append(i)
    return groups


def split_patients(
    samples: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` by patient into (rest, chosen) with about ``fraction`` of patients chosen.

    Stratified by each patient's highest label, so rare classes appear on both sides when they can.
    Deterministic for a given seed and sample list.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), not {fraction}")
    groups = _patient_groups(samples)
    strata: dict[int, list[str]] = defaultdict(list)
    for patient, idx in groups.items():
        strata[max(samples[i].label for i in idx)].append(patient)
    rng = random.Random(seed)
    chosen: set[str] = set()
    for label in sorted(strata):
        patients = sorted(strata[label])
        rng.shuffle(patients)
        n = round(len(patients) * fraction)
        if len(patients) >= 2:
            n = min(max(n, 1), len(patients) - 1)
        chosen.update(patients[:n])
    rest = [s for s in samples if s.patient_id not in chosen]
    picked = [s for s in samples if s.patient_id in chosen]
    return rest, picked


def carve_validation(
    samples: Sequence[Sample], fraction: float = 0.15, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) carved by patient from the TRAIN samples, for early stopping.

    The validation part is never the split results are reported on.
    """
    return split_patients(samples, fraction, seed)


def subsample_patients(samples: Sequence[Sample], fraction: float, seed: int) -> list[Sample]:
    """About ``fraction`` of the patients (all their samples), stratified; ``fraction=1`` keeps all."""
    if fraction >= 1.0:
        return list(samples)
    return split_patients(samples, fraction, seed)[1]


# ---------------------------------------------------------------------------------- pixels


def _scale_unit(array: np.ndarray, *, robust: bool) -> np.ndarray:
    data = array.astype(np.float32)
    if robust:
        lo, hi = np.percentile(data, [0.5, 99.5])
    else:
        lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def load_image_file(path: Path) -> np.ndarray:
    """A 2-D grayscale image file (PNG/JPEG/TIFF) as float32 [H, W] in [0, 1] (full-range scaling)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                data = np.asarray(img, dtype=np.float32)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(data.max()), 1.0)
                return np.clip(data / top, 0.0, 1.0).astype(np.float32)
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot read image: {exc}") from exc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only (KneeMRI's ``.pck`` volumes); anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays")
        return super().find_class(module, name)


def load_pickled_array(path: Path) -> np.ndarray:
    """A pickled numpy array (KneeMRI ``.pck``), unpickled with only numpy classes allowed."""
    try:
        array = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError) as exc:
        raise DatasetError(f"{path.name}: not a pickled numpy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"{path.name}: pickle holds {type(array).__name__}, not a numpy array")
    return array


def load_volume_file(path: Path) -> np.ndarray:
    """An MRI volume as float32 [S, H, W] in [0, 1] (robust 0.5-99.5 percentile scaling).

    ``.npy`` (MRNet), ``.pck`` (KneeMRI) or a DICOM series folder (``orthonode.inference.loading``).
    """
    if path.is_dir():
        volume = loading.load_volume(sorted(p for p in path.iterdir() if p.is_file()))
        return np.asarray(volume.voxels, dtype=np.float32)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix == ".pck":
        array = load_pickled_array(path)
    else:
        raise DatasetError(f"{path.name}: unsupported volume format {path.suffix!r}")
    if array.ndim != 3:
        raise DatasetError(f"{path.name}: volume has shape {array.shape}, expected [slices, H, W]")
    return _scale_unit(array, robust=True)


def load_radiograph_file(path: Path) -> np.ndarray:
    """A radiograph as float32 [H, W] in [0, 1]: an image file, or DICOM via the node's loader."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return load_image_file(path)
    return np.asarray(loading.load_radiograph(path).pixels, dtype=np.float32)


def load_sample(sample: Sample) -> np.ndarray:
    """The pixels of ``sample``: [H, W] for an image, [S, H, W] for a volume, float32 in [0, 1]."""
    if sample.kind == "image":
        return load_radiograph_file(sample.paths[0])
    return load_volume_file(sample.paths[0])
