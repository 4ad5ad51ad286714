"""Checkpoints of a run: where they live, what they hold, writing them atomically, and resuming exactly.

A checkpoint (``run_dir/checkpoints/checkpoint_<iteration>.pt``) holds the student, EMA teacher, Gram
teacher, centering buffers, optimizer, the torch / NumPy / Python (and CUDA) RNG states of every process,
the next iteration and the iterations per epoch. Resuming restores all of them and re-enters the epoch at
that iteration, so it reproduces the uninterrupted run's losses exactly. Under FSDP the model and optimiser
states are gathered in full first, the optimiser's keyed by parameter name (``optimizer_format: names``);
a DDP checkpoint keys it by position.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ssl_train.config import Config, config_from_dict, config_to_dict
from ssl_train.distributed import DistInfo, barrier
from ssl_train.errors import TrainingError
from ssl_train.meta_arch import SSLMetaArch
from ssl_train.parallel import full_model_state, full_optimizer_state, load_full_state

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "checkpoint_path",
    "config_of_run",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_training_state",
    "run_directory",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"


def run_directory(cfg: Config) -> Path:
    """``run.output_dir / run.name``."""
    return Path(cfg.run.output_dir) / cfg.run.name


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    """Where the checkpoint taken before ``iteration`` runs is written."""
    return run_dir / CHECKPOINT_DIR / f"checkpoint_{iteration:09d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir/checkpoints`` (``None`` if there is none)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("checkpoint_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (on CPU)."""
    loaded: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    return loaded


def config_of_run(run_dir: str | Path) -> Config:
    """The resolved configuration saved in ``run_dir``."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TrainingError(f"{run_dir} has no {CONFIG_FILE}: not a run directory")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return config_from_dict(data)


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


def save_checkpoint(
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
        _atomic_save(payload, checkpoint_path(run_dir, iteration))
        found = sorted((run_dir / CHECKPOINT_DIR).glob("checkpoint_*.pt"))
        for old in found[: -cfg.train.keep_checkpoints]:
            old.unlink(missing_ok=True)
    barrier(info)


def restore_training_state(
    checkpoint: dict[str, Any],
    meta: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    *,
    ipe: int,
    sharded: bool,
) -> int:
    """Load the optimiser state and this process's RNG state of ``checkpoint``; return its iteration.

    (The model state is loaded before sharding, see :func:`ssl_train.train.fit`.)

    Raises:
        TrainingError: a DDP checkpoint resumed sharded, or a changed number of iterations per epoch.
    """
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
        logger.warning("checkpoint has RNG states of %d processes, this job has %d", len(states), info.world)
        _set_rng_state(states[0])
    saved_ipe = checkpoint.get("iterations_per_epoch")
    if saved_ipe is not None and saved_ipe != ipe:
        raise TrainingError(f"iterations per epoch changed ({saved_ipe} -> {ipe}): cannot resume exactly")
    return start
