"""k-NN monitoring of a backbone on a labelled manifest (DINO's weighted k-NN classifier).

Reference: Caron et al., "DINO", arXiv:2104.14294, Section 4.1 / ``eval_knn.py``; Wu et al., "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018 -- features L2-normalised, cosine
similarity to every bank feature, the ``k`` nearest vote for their class with weight ``exp(sim / T)``
(``k = 20``, ``T = 0.07``), and the class with the largest summed weight wins.

Labels are the name of each image's parent folder (the Chen 2018 layout ``{split}/{KL grade}/{id}.png``);
folder names that are not integers are numbered in sorted order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional
from torch.utils.data import DataLoader

from orthonode.inference.knn import knn_classify
from ssl_train.data import ManifestDataset
from ssl_train.models.backbone import SSLBackbone

__all__ = ["EvalTransform", "extract_features", "folder_labels", "knn_classify", "knn_evaluate"]

logger = logging.getLogger(__name__)


class EvalTransform:
    """Resize the whole image to ``size x size`` (bicubic, antialiased) and normalise ``(x - mean) / std``."""

    def __init__(self, size: int, mean: float = 0.5, std: float = 0.25) -> None:
        self.size = size
        self.mean = mean
        self.std = std

    def __call__(
        self, image: Tensor, *, generator: torch.Generator | None = None, family: str = ""
    ) -> Tensor:
        """``[1, H, W]`` in ``[0, 1]`` to ``[1, size, size]`` normalised (no randomness)."""
        out = functional.interpolate(
            image[None], size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False
        )[0].clamp(0.0, 1.0)
        return (out - self.mean) / self.std


def folder_labels(
    dataset: ManifestDataset, class_names: Sequence[str] | None = None
) -> tuple[Tensor, list[str]]:
    """Labels ``[len(dataset)]`` from parent folder names, and the class names in label order."""
    names = [dataset.path(i).parent.name for i in range(len(dataset))]
    if class_names is None:
        class_names = sorted(set(names), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
    lookup = {name: i for i, name in enumerate(class_names)}
    missing = sorted({n for n in names if n not in lookup})
    if missing:
        raise ValueError(f"folder labels {missing} are not among the classes {list(class_names)}")
    return torch.tensor([lookup[n] for n in names], dtype=torch.int64), list(class_names)


def _subset(n: int, limit: int | None) -> list[int]:
    """Evenly spaced indices (deterministic) of at most ``limit`` out of ``n``."""
    if limit is None or limit >= n:
        return list(range(n))
    return [int(i * n / limit) for i in range(limit)]


@torch.no_grad()
def extract_features(
    backbone: SSLBackbone,
    dataset: ManifestDataset,
    indices: Sequence[int],
    *,
    device: torch.device,
    batch_size: int = 64,
    autocast: bool = False,
) -> Tensor:
    """Backbone CLS features ``[len(indices), D]`` (float32, CPU) of the given items."""
    subset = torch.utils.data.Subset(dataset, list(indices))
    loader = DataLoader(
        subset, batch_size=batch_size, shuffle=False, num_workers=0, generator=torch.Generator()
    )
    was_training = backbone.training
    backbone.eval()
    chunks = []
    for batch in loader:
        images = batch["image"].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            chunks.append(backbone(images).cls.float().cpu())
    backbone.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, backbone.embed_dim)


def knn_evaluate(
    backbone: SSLBackbone,
    *,
    manifest: str,
    root: str | None,
    bank_split: str,
    query_split: str,
    image_size: int,
    mean: float,
    std: float,
    device: torch.device,
    k: int = 20,
    temperature: float = 0.07,
    max_bank: int | None = None,
    max_query: int | None = None,
    batch_size: int = 64,
    autocast: bool = False,
) -> dict[str, Any]:
    """k-NN top-1 accuracy of ``backbone`` CLS features.

    The bank is the ``bank_split`` rows of ``manifest``, the queries its ``query_split`` rows.
    """
    transform = EvalTransform(image_size, mean, std)
    bank_ds = ManifestDataset(manifest, split=bank_split, root=root, transform=transform)
    query_ds = ManifestDataset(manifest, split=query_split, root=root, transform=transform)
    if len(bank_ds) == 0 or len(query_ds) == 0:
        raise ValueError(f"k-NN needs rows in splits {bank_split!r} and {query_split!r} of {manifest}")
    bank_labels, classes = folder_labels(bank_ds)
    query_labels, _ = folder_labels(query_ds, classes)
    bank_idx = _subset(len(bank_ds), max_bank)
    query_idx = _subset(len(query_ds), max_query)
    opts = {"device": device, "batch_size": batch_size, "autocast": autocast}
    bank = extract_features(backbone, bank_ds, bank_idx, **opts)  # type: ignore[arg-type]
    queries = extract_features(backbone, query_ds, query_idx, **opts)  # type: ignore[arg-type]
    predicted = knn_classify(bank, bank_labels[bank_idx], queries, k=k, temperature=temperature)
    top1 = float((predicted == query_labels[query_idx]).float().mean())
    return {"knn_top1": top1, "knn_bank": len(bank_idx), "knn_queries": len(query_idx), "knn_k": k}
