"""Frozen encoder features, computed once per (encoder fingerprint, dataset, preprocessing) and cached.

A :class:`FeatureSet` holds, per sample, the final CLS token and the mean of the patch tokens (what the
heads read, see :func:`orthonode.tasks.modules.compose_features`), plus labels, patient keys, sample keys and
splits. For MRI slice sets both are ``[N, S, D]`` with a slice mask ``[N, S]`` (volumes with fewer than
``S`` slices are zero-padded and masked).

The preprocessing is the node's own (``orthonode.inference.preprocess``): ``fit_to_square`` to the
encoder card's ``img_size`` for each radiograph or slice, and ``select_slices`` for volumes, so features
seen in training are the features the node computes at run time.

Cache layout: ``<cache_dir>/<encoder fingerprint>/<dataset>-<digest>.safetensors``, where the digest
covers the preprocessing and the exact sample list (keys, labels, splits). Metadata (keys, patients,
splits, preprocessing) is stored as JSON in the safetensors header and checked on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from heads.datasets.base import Sample, load_sample, samples_digest
from orthonode.inference.preprocess import fit_to_square, select_slices
from orthonode.tasks import tta
from orthonode.tasks.modules import compose_features

log = logging.getLogger(__name__)

FORMAT = "orthonode-features/1"


class EncoderLike(Protocol):
    """What feature extraction needs of ``orthonode.inference.encoder.Encoder``."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def patch_size(self) -> int: ...

    def embed(self, images: Tensor | np.ndarray, *, batch_size: int = 16) -> Any: ...


@dataclass(frozen=True)
class Preprocessing:
    """How a sample becomes model input: one radiograph, or ``slices`` slices chosen by ``strategy``."""

    kind: str  # "radiograph" | "mri_slices"
    img_size: int
    patch: int = 16
    slices: int | None = None
    strategy: str | None = None
    #: The left-right mirror of each radiograph (the second view of ``hflip`` test-time augmentation).
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("radiograph", "mri_slices"):
            raise ValueError(f"unknown input kind {self.kind!r}")
        if self.kind == "mri_slices" and (not self.slices or not self.strategy):
            raise ValueError("MRI preprocessing needs a slice count and a strategy")
        if self.kind == "mri_slices" and self.hflip:
            raise ValueError("the mirrored view applies to radiographs only")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.hflip:  # the unmirrored preprocessing keeps the digest it always had
            del out["hflip"]
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


def model_input(pixels: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, int]:
    """``([n, size, size] float32 squares, n real slices)`` of an image ``[H, W]`` or volume ``[S, H, W]``."""
    if prep.kind == "radiograph":
        if pixels.ndim != 2:
            raise ValueError(f"a radiograph input must be [H, W], got shape {pixels.shape}")
        square, _ = fit_to_square(pixels, prep.img_size, patch=prep.patch)
        if prep.hflip:
            square = np.asarray(tta.mirror(square))
        return square[None], 1
    if pixels.ndim != 3:
        raise ValueError(f"an MRI input must be [S, H, W], got shape {pixels.shape}")
    if prep.slices is None or prep.strategy is None:
        raise ValueError("MRI preprocessing needs a slice count and a strategy")
    chosen = select_slices(pixels, prep.slices, prep.strategy)  # type: ignore[arg-type]
    squares = np.zeros((prep.slices, prep.img_size, prep.img_size), dtype=np.float32)
    for i, index in enumerate(chosen):
        squares[i] = fit_to_square(pixels[index], prep.img_size, patch=prep.patch)[0]
    return squares, len(chosen)


@dataclass
class FeatureSet:
    """Cached features of a sample list (see the module docstring for shapes)."""

    cls: Tensor
    meanpatch: Tensor
    labels: Tensor
    patients: list[str]
    keys: list[str]
    splits: list[str]
    mask: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.cls.shape[0]
        if not (self.meanpatch.shape[0] == self.labels.shape[0] == len(self.patients) == len(self.keys) == n):
            raise ValueError("feature set fields differ in length")

    def __len__(self) -> int:
        return int(self.cls.shape[0])

    @property
    def slice_sets(self) -> bool:
        return self.cls.ndim == 3

    def features(self, mode: str) -> Tensor:
        return compose_features(self.cls, self.meanpatch, mode)

    def subset(self, indices: Sequence[int] | np.ndarray) -> FeatureSet:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return FeatureSet(
            cls=self.cls[idx],
            meanpatch=self.meanpatch[idx],
            labels=self.labels[idx],
            patients=[self.patients[i] for i in idx.tolist()],
            keys=[self.keys[i] for i in idx.tolist()],
            splits=[self.splits[i] for i in idx.tolist()],
            mask=None if self.mask is None else self.mask[idx],
            meta=dict(self.meta),
        )

    def select(self, samples: Sequence[Sample]) -> FeatureSet:
        """The rows of ``samples`` (by key), in their order; KeyError if one was not embedded."""
        position = {k: i for i, k in enumerate(self.keys)}
        try:
            return self.subset([position[s.key] for s in samples])
        except KeyError as exc:
            raise KeyError(f"sample {exc} is not in this feature set") from None

    def split(self, *names: str) -> FeatureSet:
        return self.subset([i for i, s in enumerate(self.splits) if s in names])

    def save(self, path: Path) -> None:
        tensors = {"cls": self.cls, "meanpatch": self.meanpatch, "labels": self.labels}
        if self.mask is not None:
            tensors["mask"] = self.mask.to(torch.uint8)
        header = {
            "format": FORMAT,
            "index": json.dumps({"patients": self.patients, "keys": self.keys, "splits": self.splits}),
            "meta": json.dumps(self.meta, sort_keys=True),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        if header.get("format") != FORMAT:
            raise ValueError(f"{path.name}: not an {FORMAT} file")
        tensors = load_file(str(path))
        index = json.loads(header["index"])
        return cls(
            cls=tensors["cls"],
            meanpatch=tensors["meanpatch"],
            labels=tensors["labels"],
            patients=list(index["patients"]),
            keys=list(index["keys"]),
            splits=list(index["splits"]),
            mask=tensors["mask"].bool() if "mask" in tensors else None,
            meta=json.loads(header.get("meta", "{}")),
        )


def embed_samples(
    encoder: EncoderLike,
    samples: Sequence[Sample],
    prep: Preprocessing,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> FeatureSet:
    """Embed every sample with ``encoder`` (images in batches; one batch of slices per volume)."""
    if not samples:
        raise ValueError("no samples to embed")
    cls_rows: list[Tensor] = []
    mean_rows: list[Tensor] = []
    masks: list[Tensor] = []
    chunk = max(batch_size, 1)
    iterator: Any = range(0, len(samples), chunk if prep.kind == "radiograph" else 1)
    if progress:
        from tqdm import tqdm  # type: ignore[import-untyped]

        iterator = tqdm(iterator, desc="embed", unit="batch")
    for start in iterator:
        if prep.kind == "radiograph":
            batch = np.stack(
                [model_input(load_sample(s), prep)[0][0] for s in samples[start : start + chunk]]
            )
            out = encoder.embed(torch.from_numpy(batch)[:, None], batch_size=batch_size)
            cls_rows.append(out.cls)
            mean_rows.append(out.patches.mean(1))
        else:
            squares, real = model_input(load_sample(samples[start]), prep)
            out = encoder.embed(torch.from_numpy(squares[:real])[:, None], batch_size=batch_size)
            n, d = prep.slices or real, out.cls.shape[-1]
            cls_pad = torch.zeros(n, d)
            mean_pad = torch.zeros(n, d)
            cls_pad[:real], mean_pad[:real] = out.cls, out.patches.mean(1)
            cls_rows.append(cls_pad[None])
            mean_rows.append(mean_pad[None])
            mask = torch.zeros(1, n, dtype=torch.bool)
            mask[0, :real] = True
            masks.append(mask)
    return FeatureSet(
        cls=torch.cat(cls_rows).float(),
        meanpatch=torch.cat(mean_rows).float(),
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64),
        patients=[s.patient_id for s in samples],
        keys=[s.key for s in samples],
        splits=[s.split for s in samples],
        mask=torch.cat(masks) if masks else None,
        meta={"encoder_fingerprint": encoder.fingerprint, "preprocessing": prep.as_dict()},
    )


class FeatureCache:
    """Feature sets on disk, keyed by encoder fingerprint, dataset name, preprocessing and sample list."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path_for(
        self, fingerprint: str, dataset: str, samples: Sequence[Sample], prep: Preprocessing
    ) -> Path:
        digest = hashlib.sha256(f"{prep.digest()}\0{samples_digest(samples)}".encode()).hexdigest()[:16]
        return self.cache_dir / fingerprint / f"{dataset}-{digest}.safetensors"

    def get_or_compute(
        self,
        encoder: EncoderLike,
        dataset: str,
        samples: Sequence[Sample],
        prep: Preprocessing,
        *,
        batch_size: int = 32,
        progress: bool = False,
    ) -> FeatureSet:
        """The cached features of ``samples`` if present and consistent, else compute and store them."""
        path = self.path_for(encoder.fingerprint, dataset, samples, prep)
        if path.is_file():
            features = FeatureSet.load(path)
            if features.keys == [s.key for s in samples] and features.meta.get("encoder_fingerprint") == (
                encoder.fingerprint
            ):
                log.info("features from cache %s (%d samples)", path.name, len(features))
                return features
            log.warning("cache file %s does not match its sample list; recomputing", path.name)
        features = embed_samples(encoder, samples, prep, batch_size=batch_size, progress=progress)
        features.meta["dataset"] = dataset
        features.save(path)
        log.info("features computed and cached in %s (%d samples)", path.name, len(features))
        return features
