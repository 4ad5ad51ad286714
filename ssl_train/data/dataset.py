"""A torch ``Dataset`` over a scan manifest: single-channel float images ``[1, H, W]`` in ``[0, 1]``.

Each item decodes one manifest row (DICOM frame, NIfTI slice, PNG / JPEG) through the per-modality intensity
path of :mod:`orthonode.inference.intensity` (volumes with the window the scanner stored for the whole
series), optionally shrinks it so that its longer side is at most ``max_side`` (antialiased), and returns
it as a ``[1, H, W]`` float32 tensor. Repeating to three channels is the model's job, not the dataset's.

Decoded-slice cache: with ``cache_dir`` set, every decoded slice is stored as ``.npy`` (``uint16``, the
``[0, 1]`` image quantised to 1/65535) under a key that hashes the file's resolved path, frame, size and
modification time, the stored volume window, ``max_side`` and :data:`INTENSITY_VERSION`; a changed file or
changed settings never hit a stale entry. Writes are atomic (temporary file, then rename), so DataLoader
workers can share one cache directory. When a multi-frame DICOM or a NIfTI volume is decoded, all of its
manifest slices are cached at once. The output is quantised the same way with or without a cache, so a
cached and an uncached run give bit-identical images.

Determinism: each item draws its augmentation from its own ``torch.Generator`` seeded from
``(seed, epoch, index)`` (see :meth:`ManifestDataset.generator_for`), so the crops of an item do not depend
on the number of DataLoader workers or the order in which they fetch. Call :meth:`ManifestDataset.set_epoch`
before each epoch (with ``persistent_workers=False``, the default, the workers see the new epoch).

Worker memory: the manifest columns are held in NumPy arrays (strings as one byte buffer plus offsets,
repeated strings as category codes), not in Python lists of objects, so forked workers do not copy the
manifest page by page through reference-count writes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional
from torch.utils.data import Dataset

from orthonode.errors import OrthonodeError
from orthonode.inference.intensity import (
    DEFAULT_PERCENTILES,
    INTENSITY_VERSION,
    dicom_frame_to_unit,
    modality_values,
    normalise_range,
    percentile_range,
    raster_to_unit,
)
from ssl_train.data.manifest import ManifestRow, read_manifest
from ssl_train.data.readers import read_dicom_pixels, read_nifti_volume, read_raster

__all__ = ["ImageTransform", "ManifestDataset", "SampleDecodeError", "decode_frames", "item_seed"]

logger = logging.getLogger(__name__)

_QUANT = 65535.0


class SampleDecodeError(OrthonodeError, RuntimeError):
    """A manifest row whose pixels cannot be decoded (names the file, frame and cause)."""


class ImageTransform(Protocol):
    """What the dataset calls on each image: ``transform(image, generator=g, family=f)``.

    ``image`` is ``[1, H, W]`` float32 in ``[0, 1]``; ``family`` is ``radiograph``, ``mri``, ``ct`` or
    ``other``. :class:`ssl_train.augment.MultiCropAugment` is one.
    """

    def __call__(self, image: Tensor, *, generator: torch.Generator | None = ..., family: str = ...) -> Any:
        """Transform one image with randomness drawn only from ``generator``."""
        ...


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch (BLAKE2b of the three numbers: items are uncorrelated)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class _Strings:
    """An immutable column of strings in one ``uint8`` buffer plus ``int64`` offsets (fork friendly)."""

    def __init__(self, values: Sequence[str]) -> None:
        encoded = [v.encode("utf-8") for v in values]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            self._offsets[1:] = np.cumsum([len(e) for e in encoded])
        self._data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self._data[self._offsets[index] : self._offsets[index + 1]].tobytes().decode("utf-8")


class _Categories:
    """A column of few distinct strings as ``int32`` codes into a small tuple."""

    def __init__(self, values: Sequence[str]) -> None:
        self._names = tuple(sorted(set(values)))
        lookup = {name: i for i, name in enumerate(self._names)}
        self._codes = np.array([lookup[v] for v in values], dtype=np.int32)

    def __getitem__(self, index: int) -> str:
        return self._names[int(self._codes[index])]


# --------------------------------------------------------------------------------------------------------
# Decoding (module level so that tests can replace it, and so that it pickles into workers).


_warned_fallback = False


def _warn_fallback_once(path: Path) -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        logger.warning(
            "manifest row of %s has no volume window (scan with volume_stats=True); "
            "normalising single slices by their own percentiles",
            path.name,
        )


def decode_frames(
    path: Path,
    fmt: str,
    frames: Sequence[int],
    family: str,
    volume_range: tuple[float, float] | None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> list[np.ndarray]:
    """Decode ``frames`` of one file to float32 ``[rows, cols]`` images in ``[0, 1]``.

    Args:
        path: the file.
        fmt: ``dicom``, ``nifti``, ``png`` or ``jpeg`` (the manifest's ``format``).
        frames: frame / slice indices within the file.
        family: the modality family (radiograph path or volume window).
        volume_range: the series window stored by the scanner, or ``None`` (then the whole file's volume,
            or for a single-frame slice its own pixels, give the percentiles).
        percentiles: percentiles of that fallback.

    Raises:
        SampleDecodeError: for anything that goes wrong, naming the file and frames.
    """
    try:
        if fmt == "dicom":
            ds, pixels = read_dicom_pixels(path)
            multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
            if volume_range is None and family in ("mri", "ct"):
                if multi:
                    volume_range = percentile_range(modality_values(pixels, ds), percentiles)
                else:
                    _warn_fallback_once(path)
            return [
                dicom_frame_to_unit(
                    pixels[f] if multi else pixels, ds, family, volume_range, percentiles=percentiles
                )
                for f in frames
            ]
        if fmt == "nifti":
            volume = read_nifti_volume(path)
            low, high = volume_range if volume_range is not None else percentile_range(volume, percentiles)
            return [normalise_range(volume[f], low, high) for f in frames]
        if fmt in ("png", "jpeg"):
            if list(frames) != [0]:
                raise ValueError(f"raster files have one frame, asked for {list(frames)}")
            return [raster_to_unit(read_raster(path))]
        raise ValueError(f"unknown manifest format {fmt!r}")
    except SampleDecodeError:
        raise
    except Exception as exc:
        raise SampleDecodeError(
            f"{path}: cannot decode frame(s) {list(frames)}: {type(exc).__name__}: {exc}"
        ) from exc


def _shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Antialiased bilinear downscale so that ``max(H, W) <= max_side`` (no upscaling)."""
    height, width = image.shape
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp_(0.0, 1.0).numpy()


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * _QUANT).astype(np.uint16)


def _dequantise(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / np.float32(_QUANT)


class ManifestDataset(Dataset[dict[str, Any]]):
    """Images of a scan manifest as ``[1, H, W]`` float tensors, optionally transformed.

    Items are dicts: ``image`` (the ``[1, H, W]`` tensor, or whatever ``transform`` returns, e.g. the
    multi-crop dict), ``index`` (int), ``family`` and ``laterality`` (str). PyTorch's default collate turns
    a batch into ``image`` stacked (or, for multi-crop, ``{"global": [B,1,g,g] x 2, "local": ...}``),
    ``index`` a tensor, and lists of strings. Rows are ordered by ``(path, frame)``.

    Args:
        manifest: a manifest CSV path or rows from :func:`ssl_train.data.scan.scan_corpus`.
        split: keep only rows of this split (``None``: all rows).
        root: base of relative manifest paths (default: the manifest file's folder, or the working folder).
        cache_dir: decoded-slice cache folder (``None``: no cache).
        transform: called as ``transform(image, generator=g, family=f)``.
        seed: base seed of the per-item generators.
        max_side: shrink images whose longer side exceeds this (antialiased), before caching.
        cache_raster: also cache PNG / JPEG slices (off: decoding an 8-bit PNG is as fast as reading a
            cached array).
        percentiles: percentiles of the per-slice fallback when a volume row has no stored window.
        on_decode_error: ``"raise"`` (default) raises :class:`SampleDecodeError`; ``"substitute"`` logs it
            and returns the next decodable item instead (at most ``max_substitutions`` tries), so that one
            bad file found in epoch 40 does not end a run. Scan with ``verify_pixels=True`` to find such
            files up front.
        max_substitutions: how many following items ``"substitute"`` tries before raising.

    Raises:
        ValueError: for a bad ``max_side``, ``seed`` or ``on_decode_error``.
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str] | Sequence[ManifestRow],
        *,
        split: str | None = "train",
        root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        transform: ImageTransform | None = None,
        seed: int = 0,
        max_side: int | None = None,
        cache_raster: bool = False,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        on_decode_error: Literal["raise", "substitute"] = "raise",
        max_substitutions: int = 16,
    ) -> None:
        if on_decode_error not in ("raise", "substitute"):
            raise ValueError(f"on_decode_error must be 'raise' or 'substitute', got {on_decode_error!r}")
        if max_substitutions < 1:
            raise ValueError(f"max_substitutions must be >= 1, got {max_substitutions}")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1 or None, got {max_side}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if isinstance(manifest, str | os.PathLike):
            manifest_path = Path(manifest)
            rows = read_manifest(manifest_path)
            default_root = manifest_path.resolve().parent
        else:
            rows = list(manifest)
            default_root = Path.cwd()
        if split is not None:
            rows = [r for r in rows if r.split == split]
        if not rows:
            logger.warning("manifest has no rows%s", "" if split is None else f" in split {split!r}")
        rows.sort(key=lambda r: (r.path, r.frame))  # rows of one file are contiguous (volume caching)
        self.root = Path(root).resolve() if root is not None else default_root
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.max_side = max_side
        self.cache_raster = cache_raster
        self.percentiles = percentiles
        self.on_decode_error = on_decode_error
        self.max_substitutions = max_substitutions
        self._paths = _Strings([r.path for r in rows])
        self._frames = np.array([r.frame for r in rows], dtype=np.int64)
        self._format = _Categories([r.format for r in rows])
        self._family = _Categories([r.family for r in rows])
        self._laterality = _Categories([r.laterality for r in rows])
        self._norm = np.array(
            [
                (np.nan, np.nan) if r.norm_low is None or r.norm_high is None else (r.norm_low, r.norm_high)
                for r in rows
            ],
            dtype=np.float64,
        ).reshape(len(rows), 2)

    def __len__(self) -> int:
        return len(self._paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (part of every item's seed)."""
        self.epoch = int(epoch)

    def generator_for(self, index: int) -> torch.Generator:
        """The generator of item ``index`` in the current epoch (seeded by :func:`item_seed`)."""
        generator = torch.Generator()
        generator.manual_seed(item_seed(self.seed, self.epoch, index))
        return generator

    def family(self, index: int) -> str:
        """Modality family of item ``index``."""
        return self._family[index]

    def path(self, index: int) -> Path:
        """File path of item ``index`` (relative manifest paths joined to ``root``)."""
        raw = Path(self._paths[index])
        return raw if raw.is_absolute() else self.root / raw

    def _volume_range(self, index: int) -> tuple[float, float] | None:
        low, high = self._norm[index]
        return None if np.isnan(low) or np.isnan(high) else (float(low), float(high))

    def _cache_path(self, index: int, stat: os.stat_result) -> Path | None:
        if self.cache_dir is None or (self._format[index] in ("png", "jpeg") and not self.cache_raster):
            return None
        low, high = self._norm[index]
        parts = (
            self.path(index).resolve(),
            int(self._frames[index]),
            stat.st_size,
            stat.st_mtime_ns,
            repr(float(low)),
            repr(float(high)),
            self.max_side,
            self.percentiles,
            INTENSITY_VERSION,
        )
        digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.npy"

    def _file_run(self, index: int) -> range:
        """Indices of the rows of the same file as ``index`` (contiguous: rows are sorted by path)."""
        path = self._paths[index]
        start = index
        while start > 0 and self._paths[start - 1] == path:
            start -= 1
        stop = index + 1
        while stop < len(self) and self._paths[stop] == path:
            stop += 1
        return range(start, stop)

    @staticmethod
    def _read_cache(path: Path) -> np.ndarray | None:
        try:
            stored = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated or foreign file: decode again and overwrite
            logger.warning("ignoring unreadable cache entry %s: %s", path.name, exc)
            return None
        if stored.dtype != np.uint16 or stored.ndim != 2:
            return None
        return np.asarray(stored)

    @staticmethod
    def _write_cache(path: Path, stored: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
            with tmp.open("wb") as handle:
                np.save(handle, stored, allow_pickle=False)
            tmp.replace(path)
        except OSError as exc:
            logger.warning("cannot write cache entry %s: %s", path, exc)

    def load_image(self, index: int) -> Tensor:
        """Item ``index`` as a ``[1, H, W]`` float32 tensor in ``[0, 1]`` (cache first, then decode).

        Raises:
            IndexError: for an index out of range.
            SampleDecodeError: when the file is missing or cannot be decoded.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        path = self.path(index)
        try:
            stat = path.stat()
        except OSError as exc:
            raise SampleDecodeError(f"{path}: {exc}") from exc
        cache_path = self._cache_path(index, stat)
        if cache_path is not None:
            cached = self._read_cache(cache_path)
            if cached is not None:
                return torch.from_numpy(_dequantise(cached))[None]
        fmt = self._format[index]
        # Decoding a volume file yields every manifest slice of it at once: cache them all.
        run = range(index, index + 1)
        if cache_path is not None and fmt in ("nifti", "dicom"):
            run = self._file_run(index)
        window = self._volume_range(index)
        indices = [i for i in run if i == index or self._volume_range(i) == window]
        images = decode_frames(
            path, fmt, [int(self._frames[i]) for i in indices], self._family[index], window, self.percentiles
        )
        stored = {
            i: _quantise(_shrink(image, self.max_side)) for i, image in zip(indices, images, strict=True)
        }
        if cache_path is not None:
            for i, array in stored.items():
                target = cache_path if i == index else self._cache_path(i, stat)
                if target is not None:
                    self._write_cache(target, array)
        return torch.from_numpy(_dequantise(stored[index]))[None]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.on_decode_error == "raise":
            return self._item(index)
        error: SampleDecodeError | None = None
        for step in range(self.max_substitutions + 1):
            candidate = (index + step) % len(self)
            try:
                return self._item(candidate)
            except SampleDecodeError as exc:
                logger.warning("item %d unusable, substituting the next one: %s", candidate, exc)
                error = error or exc
        raise SampleDecodeError(f"items {index}..{index + self.max_substitutions} all failed") from error

    def _item(self, index: int) -> dict[str, Any]:
        image = self.load_image(index)
        family = self._family[index]
        out: Any = image
        if self.transform is not None:
            out = self.transform(image, generator=self.generator_for(index), family=family)
        return {"image": out, "index": index, "family": family, "laterality": self._laterality[index]}
