"""The training data of a run: the multi-crop dataset of its config, and each iteration's batch.

Data order (what makes a run reproducible, resumable and independent of the process count): the global
batch of iteration ``t`` of epoch ``e`` is positions ``[t * G, (t + 1) * G)`` of a permutation of the
dataset drawn from ``(seed, e)`` (``G`` = world size x per-device batch); process ``r`` takes the contiguous
slice ``[r * b, (r + 1) * b)`` of it (:func:`epoch_batches`). Each item's crops come from its own generator
seeded by ``(seed, epoch, index)`` (:meth:`ssl_train.data.ManifestDataset.generator_for`), whatever worker
loads it, and the DataLoader gets its own generator, so it never advances the global torch RNG.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssl_train.augment import MultiCropAugment
from ssl_train.config import Config, ConfigError
from ssl_train.data.dataset import ManifestDataset, item_seed
from ssl_train.errors import TrainingError

__all__ = ["build_augment", "build_dataset", "collate_crops", "epoch_batches", "epoch_loader"]


def epoch_batches(
    n_items: int, *, batch_size: int, seed: int, epoch: int, rank: int, world: int, iterations: int
) -> list[list[int]]:
    """This process's index lists for ``iterations`` iterations of ``epoch`` (see the module docstring).

    The permutation of ``(seed, epoch)`` is extended by further permutations when an epoch is configured
    longer than the dataset. Raises :class:`TrainingError` when the dataset is empty.
    """
    if n_items < 1:
        raise TrainingError("the training dataset is empty")
    global_batch = batch_size * world
    needed = iterations * global_batch
    order: list[int] = []
    round_ = 0
    while len(order) < needed:
        generator = torch.Generator()
        generator.manual_seed(item_seed(seed, epoch, -1 - round_))
        order.extend(torch.randperm(n_items, generator=generator).tolist())
        round_ += 1
    return [
        order[t * global_batch + rank * batch_size : t * global_batch + (rank + 1) * batch_size]
        for t in range(iterations)
    ]


def collate_crops(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Multi-crop items to ``global`` ``[n_g * B, 1, G, G]`` and ``local`` ``[n_l * B, 1, L, L]`` (crop-major,
    ``None`` without local crops), ``index`` ``[B]``."""
    n_global = len(items[0]["image"]["global"])
    n_local = len(items[0]["image"]["local"])
    global_crops = torch.stack([item["image"]["global"][c] for c in range(n_global) for item in items])
    local_crops = (
        torch.stack([item["image"]["local"][c] for c in range(n_local) for item in items])
        if n_local
        else None
    )
    index = torch.tensor([int(item["index"]) for item in items], dtype=torch.int64)
    return {"global": global_crops, "local": local_crops, "index": index}


def build_augment(cfg: Config) -> MultiCropAugment:
    """The multi-crop augmentation of ``cfg.crops``."""
    c = cfg.crops
    return MultiCropAugment(
        global_size=c.global_size,
        local_size=c.local_size,
        n_local=c.n_local,
        global_scale=c.global_scale,
        local_scale=c.local_scale,
        n_global=c.n_global,
        respect_laterality=c.respect_laterality,
        global_blur_probs=(1.0, 0.1, *([0.5] * max(0, c.n_global - 2)))[: c.n_global],
        solarize_prob=c.solarize_prob,
        mean=c.mean,
        std=c.std,
    )


def build_dataset(cfg: Config) -> ManifestDataset:
    """The training images of ``cfg.data`` with the crops of ``cfg.crops``.

    Raises:
        ConfigError: no manifest configured.
        TrainingError: the manifest file does not exist.
    """
    if cfg.data.manifest is None:
        raise ConfigError(
            "data.manifest is not set (scan a corpus with `ssl-train scan DATA_DIR --out FILE`)"
        )
    if not Path(cfg.data.manifest).is_file():
        raise TrainingError(f"manifest {cfg.data.manifest} does not exist")
    return ManifestDataset(
        cfg.data.manifest,
        split=cfg.data.split,
        root=cfg.data.root,
        cache_dir=cfg.data.cache_dir,
        transform=build_augment(cfg),
        seed=cfg.run.seed,
        max_side=cfg.data.max_side,
        on_decode_error=cfg.data.on_decode_error,
    )


def epoch_loader(
    dataset: ManifestDataset,
    cfg: Config,
    *,
    rank: int,
    world: int,
    epoch: int,
    first: int,
    iterations_per_epoch: int,
    pin_memory: bool,
) -> Iterator[dict[str, Any]]:
    """This process's batches of ``epoch`` from iteration ``first`` on (a resume re-enters the epoch)."""
    dataset.set_epoch(epoch)
    index_lists = epoch_batches(
        len(dataset),
        batch_size=cfg.data.batch_size_per_device,
        seed=cfg.run.seed,
        epoch=epoch,
        rank=rank,
        world=world,
        iterations=iterations_per_epoch,
    )[first:]
    loader = DataLoader(
        dataset,
        batch_sampler=index_lists,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_crops,
        pin_memory=pin_memory,
        generator=torch.Generator(),
        persistent_workers=False,
    )
    yield from loader
