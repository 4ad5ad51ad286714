"""The pretraining loop: one CPU to many GPUs (``torchrun``), exact resume, checkpoints, logs, k-NN monitor.

Data order and randomness (what makes a run reproducible, resumable and independent of the process count):

* the global batch of iteration ``t`` of epoch ``e`` is positions ``[t * G, (t + 1) * G)`` of a permutation of
  the dataset drawn from ``(seed, e)`` (``G`` = world size x per-device batch); process ``r`` takes the
  contiguous slice ``[r * b, (r + 1) * b)`` of it (:func:`ssl_train.data.batches.epoch_batches`);
* each item's crops come from its own generator seeded by ``(seed, epoch, index)``
  (:meth:`ssl_train.data.ManifestDataset.generator_for`), whatever worker loads it;
* iBOT masks are drawn for the whole global batch from ``(seed, iteration)`` and sliced per process
  (:func:`ssl_train.data.masking.global_masks`), on the backbone's own patch grid;
* the DataLoader gets its own generator, so it never advances the global torch RNG (used only by drop path).

Hence 1 process with batch ``G`` and ``k`` processes with batch ``G / k`` see the same images, crops, masks;
with DDP gradient averaging, global Sinkhorn-Knopp, globally normalised iBOT and gathered KoLeo they take the
same steps. A checkpoint (every ``train.checkpoint_every`` iterations, written atomically, see
:mod:`ssl_train.checkpoint`) holds everything a resume needs; resuming re-enters the epoch at that
iteration, so it reproduces the uninterrupted run's losses exactly.

Precision: with ``train.precision: bf16`` (or ``auto`` on hardware with native bf16, see
:mod:`orthonode.inference.precision`) the whole forward pass (teacher, student, heads, losses -- the
losses upcast to float32 internally) runs under ``torch.autocast`` on the run's device type, CPU or CUDA;
backward and the optimizer step run outside it, on float32 parameters.

The loop is a :class:`_Trainer`: set-up (fresh or resumed), one step, its record, then checkpoint and
evaluation. The model, optimiser, data, checkpoints and run files are built by the modules named for them;
their public names are importable from here as before.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from orthonode.inference.precision import resolve_precision
from ssl_train.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    config_of_run,
    latest_checkpoint,
    load_checkpoint,
    restore_training_state,
    run_directory,
    save_checkpoint,
)
from ssl_train.config import Config
from ssl_train.data.batches import build_dataset, collate_crops, epoch_batches, epoch_loader
from ssl_train.data.masking import global_masks
from ssl_train.distributed import DistInfo, barrier, setup_distributed
from ssl_train.errors import TrainingError
from ssl_train.init_weights import initial_weights
from ssl_train.meta_arch import SSLMetaArch, build_meta_arch
from ssl_train.monitor import evaluate_teacher
from ssl_train.optim import build_optimizer, build_schedules
from ssl_train.parallel import shard_meta_arch
from ssl_train.run_log import METRICS_FILE, Progress, append_record, write_run_files
from ssl_train.schedules import ScheduleValues, apply_schedule

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PretrainResult",
    "TrainingError",
    "build_meta_arch",
    "build_optimizer",
    "build_schedules",
    "collate_crops",
    "config_of_run",
    "epoch_batches",
    "fit",
    "global_masks",
    "initial_weights",
    "latest_checkpoint",
    "load_checkpoint",
    "run_directory",
]

logger = logging.getLogger(__name__)

_LOSS_KEYS = ("total", "dino", "ibot", "koleo", "gram")


@dataclass
class PretrainResult:
    """What a call of :func:`fit` did."""

    run_dir: Path
    start_iteration: int
    end_iteration: int
    total_iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def fit(cfg: Config, *, resume_from: str | Path | None = None) -> PretrainResult:
    """Train according to ``cfg`` (a fresh run), or continue the run in ``resume_from``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; the process group is created here
    unless the caller already made one.

    Raises:
        TrainingError: a fresh run whose directory already has checkpoints, a resume without checkpoint, or
            an unusable dataset.
        ConfigError: for a configuration the trainer cannot use.
    """
    info, created_group = setup_distributed(cfg.train.device)
    try:
        return _Trainer(cfg, info, resume_from).run()
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()


def _open_run(cfg: Config, resume_from: str | Path | None) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and, for a resume, its latest checkpoint; a fresh run into checkpoints is refused."""
    run_dir = Path(resume_from) if resume_from is not None else run_directory(cfg)
    if resume_from is None:
        if latest_checkpoint(run_dir) is not None:
            raise TrainingError(f"{run_dir} already holds checkpoints: use `ssl-train resume {run_dir}`")
        return run_dir, None
    ckpt_path = latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise TrainingError(f"no checkpoint to resume from in {run_dir / CHECKPOINT_DIR}")
    checkpoint = load_checkpoint(ckpt_path)
    logger.info("resuming from %s (iteration %d)", ckpt_path.name, checkpoint["iteration"])
    return run_dir, checkpoint


def _iterations_per_epoch(cfg: Config, n_images: int, world: int) -> int:
    global_batch = cfg.data.batch_size_per_device * world
    ipe = cfg.train.iterations_per_epoch or n_images // global_batch
    if ipe < 1:
        raise TrainingError(
            f"{n_images} training images cannot fill one global batch of {global_batch}: "
            "lower data.batch_size_per_device or set train.iterations_per_epoch"
        )
    return ipe


class _Trainer:
    """One call of :func:`fit`: the set-up in ``__init__``, then :meth:`run` steps to ``stop``."""

    def __init__(self, cfg: Config, info: DistInfo, resume_from: str | Path | None) -> None:
        self.cfg, self.info = cfg, info
        self.run_dir, checkpoint = _open_run(cfg, resume_from)
        self.sharded = cfg.train.strategy == "fsdp" and info.world > 1
        if cfg.train.strategy == "fsdp" and not self.sharded:
            logger.info("train.strategy=fsdp with one process: nothing to shard, training unsharded")
        if cfg.model.drop_path_rate > 0 and info.world > 1:
            logger.info("drop path draws from each process's RNG: runs differ with the number of processes")
        self.meta, self.optimizer = self._build_model(checkpoint)
        self.dataset = build_dataset(cfg)
        self.ipe = _iterations_per_epoch(cfg, len(self.dataset), info.world)
        self.schedules = build_schedules(cfg, self.ipe)
        self.total = total = self.schedules.total_iters
        self.stop = min(total, cfg.train.max_iterations) if cfg.train.max_iterations is not None else total
        self.start = 0
        if checkpoint is not None:
            self.start = restore_training_state(
                checkpoint, self.meta, self.optimizer, info, ipe=self.ipe, sharded=self.sharded
            )
        self.metrics_path = self.run_dir / METRICS_FILE
        if info.is_main:
            self.metrics_path = write_run_files(cfg, self.run_dir, self.start)
            logger.info(
                "run %s: %d images, %d process(es) x batch %d, %d iterations/epoch, %d total, "
                "start %d, stop %d",
                self.run_dir, len(self.dataset), info.world, cfg.data.batch_size_per_device, self.ipe, total,
                self.start, self.stop,
            )  # fmt: skip
        barrier(info)
        self.model = self._wrap(self.meta)
        self.meta.train()
        self.grid = self.meta.student.backbone.grid(cfg.crops.global_size, cfg.crops.global_size)
        precision = resolve_precision(cfg.train.precision, info.device)
        if info.is_main:
            logger.info("precision: %s (train.precision=%s)", precision, cfg.train.precision)
        self.bf16 = precision == "bf16"
        self.last_layer = self.meta.last_layer_parameters()

    def _build_model(self, checkpoint: dict[str, Any] | None) -> tuple[SSLMetaArch, torch.optim.AdamW]:
        """Seeded model (identical initial weights on every process), restored or warm-started, sharded
        under FSDP, and its optimiser; the RNGs are then seeded per process."""
        cfg, info = self.cfg, self.info
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
        if self.sharded:
            shard_meta_arch(meta, info.device, info.world)
        torch.manual_seed(cfg.run.seed + info.rank)
        return meta, build_optimizer(meta, cfg)

    def _wrap(self, meta: SSLMetaArch) -> torch.nn.Module:
        """DDP around the model when several processes train it unsharded."""
        if self.info.world > 1 and not self.sharded:
            device = self.info.device
            return DistributedDataParallel(
                meta, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        return meta

    # ------------------------------------------------------------------------------------------ the loop

    def run(self) -> PretrainResult:
        """Step from ``start`` to ``stop``; log, checkpoint and evaluate on the configured iterations."""
        cfg = self.cfg
        result = PretrainResult(
            run_dir=self.run_dir,
            start_iteration=self.start,
            end_iteration=self.start,
            total_iterations=self.total,
        )
        progress = Progress(cfg.train.progress, self.stop, self.start, self.info.is_main)
        iteration = self.start
        batches: Iterator[dict[str, Any]] | None = None
        tick = time.perf_counter()
        try:
            while iteration < self.stop:
                epoch = iteration // self.ipe
                if batches is None or iteration % self.ipe == 0:
                    batches = self._epoch_batches(epoch, iteration % self.ipe)
                values, logged, grad_norm = self._step(iteration, next(batches))
                iteration += 1
                now = time.perf_counter()
                elapsed, tick = now - tick, now
                record = self._record(iteration - 1, epoch, values, logged, grad_norm, elapsed)
                result.history.append(record)
                result.end_iteration = iteration
                show = (iteration - 1) % cfg.train.log_every == 0 or iteration == self.stop
                if self.info.is_main and show:
                    append_record(self.metrics_path, record)
                progress.update(record if show else None)
                if self._checkpoint_and_evaluate(iteration, result):
                    tick = time.perf_counter()
        finally:
            progress.close()
        return result

    def _epoch_batches(self, epoch: int, first: int) -> Iterator[dict[str, Any]]:
        return epoch_loader(
            self.dataset,
            self.cfg,
            rank=self.info.rank,
            world=self.info.world,
            epoch=epoch,
            first=first,
            iterations_per_epoch=self.ipe,
            pin_memory=self.info.device.type == "cuda",
        )

    def _masks(self, iteration: int) -> Tensor:
        """This process's iBOT masks on the backbone's grid (all False for a CNN: no patch tokens)."""
        masks = global_masks(
            self.cfg,
            iteration,
            grid=self.grid,
            rank=self.info.rank,
            world=self.info.world,
            batch_size=self.cfg.data.batch_size_per_device,
        ).to(self.info.device)
        if not self.meta.student.backbone.is_vit:  # a CNN has no patch tokens to mask (iBOT is ViT-only)
            masks = torch.zeros_like(masks)
        return masks

    def _step(self, iteration: int, batch: dict[str, Any]) -> tuple[ScheduleValues, list[float], float]:
        """One optimisation step: schedules, forward, backward, clipping, AdamW, EMA teacher.

        Returns the schedule values, the losses averaged over the processes (:data:`_LOSS_KEYS` order) and
        the gradient norm (NaN without clipping).
        """
        cfg, meta, device = self.cfg, self.meta, self.info.device
        if meta.gram_refresh_due(iteration):
            meta.refresh_gram_teacher()
        values = self.schedules.at(iteration)
        apply_schedule(self.optimizer, values)
        masks = self._masks(iteration)
        global_crops = batch["global"].to(device, non_blocking=True)
        local_crops = batch["local"].to(device, non_blocking=True) if batch["local"] is not None else None
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=self.bf16):
            losses = self.model(global_crops, local_crops, masks, teacher_temp=values.teacher_temp)
        loss = losses["total"]
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss {float(loss)} at iteration {iteration}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if values.freeze_last_layer:
            for param in self.last_layer:
                param.grad = None
        grad_norm = float("nan")
        if cfg.optim.clip_grad is not None:
            params = [p for p in meta.student.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        meta.update_teacher(values.momentum)
        logged = torch.stack([losses[k].detach().float() for k in _LOSS_KEYS])
        if self.info.world > 1:
            dist.all_reduce(logged)
            logged /= self.info.world
        return values, logged.tolist(), grad_norm

    def _record(
        self,
        iteration: int,
        epoch: int,
        values: ScheduleValues,
        logged: list[float],
        grad_norm: float,
        elapsed: float,
    ) -> dict[str, Any]:
        """The metrics record of one step (``metrics.jsonl``, :attr:`PretrainResult.history`)."""
        images = self.cfg.data.batch_size_per_device * self.info.world
        images *= self.cfg.crops.n_global + self.cfg.crops.n_local
        return {
            "iteration": iteration,
            "epoch": epoch,
            "total_iterations": self.stop,
            **dict(zip(_LOSS_KEYS, logged, strict=True)),
            "lr": values.lr,
            "weight_decay": values.weight_decay,
            "teacher_temp": values.teacher_temp,
            "momentum": values.momentum,
            "grad_norm": grad_norm,
            "seconds": elapsed,
            "images_per_s": images / elapsed if elapsed > 0 else math.inf,
        }

    def _checkpoint_and_evaluate(self, iteration: int, result: PretrainResult) -> bool:
        """Checkpoint and k-NN evaluation due after ``iteration`` steps; True when an evaluation ran."""
        cfg, info = self.cfg, self.info
        last = iteration == self.stop
        if iteration % cfg.train.checkpoint_every == 0 or last:
            save_checkpoint(
                self.meta, self.optimizer, cfg, info, self.run_dir, iteration, self.ipe, sharded=self.sharded
            )
        if not (cfg.eval.manifest and cfg.eval.every > 0 and (iteration % cfg.eval.every == 0 or last)):
            return False
        evaluation = evaluate_teacher(self.meta, cfg, info, iteration, sharded=self.sharded, bf16=self.bf16)
        if evaluation is not None:
            result.evaluations.append(evaluation)
            append_record(self.metrics_path, evaluation)
        return True
