"""Full fine-tuning of an encoder with a task head on single radiographs, resumable.

The recipe is the one used for ViT fine-tuning in BEiT / MAE / DINOv2 evaluations, scaled to a CPU:

* **Layer-wise learning-rate decay** (BEiT, Bao et al. 2021, arXiv:2106.08254, §2.4): block ``i`` of ``L``
  gets ``lr * decay^(L - i)``, the embeddings ``lr * decay^(L + 1)``, the final norm and the head ``lr``;
  no weight decay on biases, norms, LayerScale gammas and tokens.
* **Schedule**: linear warm-up, then cosine decay to ``min_lr``, stepped every iteration.
* **Stochastic depth** (Huang et al. 2016), linearly increasing to ``drop_path`` over the blocks.
* **Augmentation** on the decoded, letterboxed squares (``[0, 1]`` single channel, done in torch on the
  whole batch): a random affine map (zoom in by ``1 / s`` with ``s`` in ``scale``, rotation within
  ``±rotate_deg``, a translation that keeps the zoomed window inside the image, and a horizontal flip when
  ``hflip``), then gamma, contrast and brightness jitter of strength ``intensity``. No hue, no colour: the
  images are grayscale. A horizontal flip is safe for grading tasks that do not depend on laterality.
* **Selection**: after every epoch the model is scored on a validation carve of the TRAINING patients
  (:func:`heads.datasets.base.carve_validation`); the epoch with the best ``select`` score (validation
  loss, accuracy or quadratic weighted kappa) is kept, and training stops after ``patience`` epochs
  without improvement. The split that results are reported on is never looked at.
* **Precision**: ``precision="bf16"`` (or ``"auto"`` on a CPU with native bf16,
  :mod:`orthonode.inference.precision`) autocasts the training forward pass; the loss, the weights and the
  optimiser stay float32, and the validation carve is always scored in float32.
* **Resume**: with a ``state_dir`` the full state (weights, optimiser, best weights, history, RNG) is
  written atomically after every epoch; calling again with the same configuration and samples continues
  from the last finished epoch, and the result equals an uninterrupted run.

Every training image is decoded once (float16 in memory: 160 px x 5,778 images is about 300 MB).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from heads.config import HeadTraining
from heads.datasets.base import Sample, carve_validation, load_sample, samples_digest, subsample_patients
from heads.features import Preprocessing, model_input
from heads.finetune_optim import layer_decay_param_groups, lr_at, set_drop_path
from heads.metrics import accuracy, quadratic_weighted_kappa
from heads.train import class_weights
from orthonode.inference.backbones import is_vit
from orthonode.inference.device import resolve_device
from orthonode.inference.encoder import forward_tokens
from orthonode.inference.precision import PRECISIONS, resolve_precision
from orthonode.tasks import tta
from orthonode.tasks.modules import Head, build_head, compose_features
from orthonode.tasks.registry import TaskSpec

log = logging.getLogger(__name__)

__all__ = [
    "FineTuneConfig",
    "FineTuneResult",
    "augment_batch",
    "carve_tta_scores",
    "choose_tta",
    "decode_squares",
    "finetune",
    "layer_decay_param_groups",
    "lr_at",
    "set_drop_path",
]

STATE_FILE = "finetune_state.pt"


@dataclass
class FineTuneConfig(HeadTraining):
    """Hyper-parameters of fine-tuning (saved in the bundle card): the shared
    :class:`~heads.config.HeadTraining` fields with fine-tuning's defaults, and the recipe's own."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    patience: int = 5
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    layer_decay: float = 0.75
    drop_path: float = 0.1
    clip_grad: float | None = 3.0
    select: str = "loss"  # loss | accuracy | qwk
    augment: bool = True
    hflip: bool = True
    scale: tuple[float, float] = (0.8, 1.0)
    rotate_deg: float = 10.0
    intensity: float = 0.15
    label_smoothing: float = 0.0  # cross-entropy heads only (Szegedy et al. 2016)
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 autocast of the training forward where native)
    device: str = "auto"  # auto | cpu | cuda (orthonode.inference.device); not part of the resume identity
    #: Seed of the patient carve (``None``: ``seed``). Members of an ensemble trained with other seeds keep
    #: one carve, so that the carve can still choose among them (no member trained on it).
    carve_seed: int | None = None
    #: Fraction of the training PATIENTS used at all (label efficiency, as in the OrthoFoundation paper's
    #: label-fraction study): the subset is drawn with ``seed`` (stratified by grade), and the carve that
    #: selects the epoch is cut from that subset, so a run at 12.5% never sees more labels than 12.5%.
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.select not in ("loss", "accuracy", "qwk"):
            raise ValueError(f"select must be loss, accuracy or qwk, not {self.select!r}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        self.scale = (float(self.scale[0]), float(self.scale[1]))

    @property
    def carve_seed_or_seed(self) -> int:
        return self.seed if self.carve_seed is None else self.carve_seed

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale"] = list(self.scale)
        if out["carve_seed"] is None:  # configurations from before the option keep their identity
            del out["carve_seed"]
        if out["train_fraction"] == 1.0:  # likewise for runs on all the training patients
            del out["train_fraction"]
        return out


@dataclass
class FineTuneResult:
    backbone: nn.Module
    head: Head
    config: FineTuneConfig
    best_epoch: int
    history: list[dict[str, float]]
    n_train: int = 0
    n_val: int = 0
    resumed_from_epoch: int = 0
    #: Scores of the kept model on the validation carve per test-time augmentation (``none``, ``hflip``).
    tta_carve: dict[str, dict[str, float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ pixels


def decode_squares(samples: Sequence[Sample], prep: Preprocessing) -> Tensor:
    """``[N, 1, S, S]`` float16 letterboxed squares in ``[0, 1]`` of every sample, decoded once."""
    out = torch.empty((len(samples), 1, prep.img_size, prep.img_size), dtype=torch.float16)
    for i, sample in enumerate(samples):
        out[i, 0] = torch.from_numpy(model_input(load_sample(sample), prep)[0][0])
    return out


def augment_batch(images: Tensor, config: FineTuneConfig, generator: torch.Generator) -> Tensor:
    """Random affine (zoom, rotation, translation, optional flip) and intensity jitter of ``[B, 1, H, W]``.

    Values stay in ``[0, 1]``; the area outside the source image is filled with 0 (the letterbox colour).
    """
    batch = images.shape[0]
    x = images.float()
    rand = torch.rand((batch, 7), generator=generator)
    low, high = config.scale
    s = low + (high - low) * rand[:, 0]
    angle = (2 * rand[:, 1] - 1) * math.radians(config.rotate_deg)
    tx = (2 * rand[:, 2] - 1) * (1 - s)
    ty = (2 * rand[:, 3] - 1) * (1 - s)
    flip = torch.where(rand[:, 4] < 0.5, -1.0, 1.0) if config.hflip else torch.ones(batch)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], dim=1), torch.stack([sin * flip, cos, ty], dim=1)], dim=1
    )  # output (u, v) samples input at theta @ (u, v, 1): a window of relative size s
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    a = config.intensity
    if a > 0:
        gamma = torch.exp((2 * rand[:, 5] - 1) * a).view(-1, 1, 1, 1)
        contrast = 1 + (2 * torch.rand(batch, generator=generator) - 1).view(-1, 1, 1, 1) * a
        brightness = (2 * rand[:, 6] - 1).view(-1, 1, 1, 1) * a / 2
        x = x.clamp(0, 1) ** gamma
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean + brightness
    return x.clamp(0, 1)


def _forward(encoder: Any, backbone: nn.Module, head: Head, images: Tensor, mode: str) -> Tensor:
    x = encoder.prepare(images).to(next(backbone.parameters()).device)
    if not is_vit(backbone):
        x = x.contiguous(memory_format=torch.channels_last)
    pooled, positions = forward_tokens(backbone, x)
    return head(compose_features(pooled, positions.mean(1), mode))


@torch.no_grad()
def _logits(encoder: Any, backbone: nn.Module, head: Head, x: Tensor, mode: str, batch: int) -> Tensor:
    backbone.eval()
    head.eval()
    chunks = [x[i : i + batch].float() for i in range(0, x.shape[0], batch)]
    return torch.cat([_forward(encoder, backbone, head, chunk, mode).float().cpu() for chunk in chunks])


# ---------------------------------------------------------------------------------------- resume


def _fingerprint(config: FineTuneConfig, samples: Sequence[Sample], encoder: Any, prep: Preprocessing) -> str:
    identity = {k: v for k, v in config.as_dict().items() if k != "device"}
    blob = json.dumps(
        {
            "config": identity,
            "samples": samples_digest(samples),
            "encoder": getattr(encoder, "fingerprint", ""),
            "prep": prep.as_dict(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


# ---------------------------------------------------------------------------------------- training


def finetune(
    encoder: Any,
    task: TaskSpec,
    train_samples: Sequence[Sample],
    prep: Preprocessing,
    config: FineTuneConfig,
    *,
    state_dir: str | Path | None = None,
    max_epochs_this_call: int | None = None,
    progress: bool = False,
) -> FineTuneResult:
    """Fine-tune a copy of ``encoder.model`` with a new head for ``task`` (see the module docstring).

    ``encoder`` is an ``orthonode.inference.encoder.Encoder`` (``.model``, ``.prepare``, ``.embed_dim``,
    ``.fingerprint``); it is not modified. With ``state_dir`` the run resumes from
    ``state_dir/finetune_state.pt`` when that file belongs to the same configuration, samples and encoder
    (a different one is an error). ``max_epochs_this_call`` stops early after that many epochs (the state
    is saved; call again to continue) -- for runs split over several sessions. ``progress`` shows a tqdm
    bar over each epoch's batches (the epoch summaries are logged either way).
    """
    if task.input.kind != "radiograph":
        raise ValueError("full fine-tuning is implemented for single-radiograph tasks only")
    run, carve = _set_up(encoder, task, train_samples, prep, config)
    fingerprint = _fingerprint(config, train_samples, encoder, prep)
    state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
    selection = _Selection(best=_weights(run))
    if state_path is not None and state_path.exists():
        _resume(state_path, fingerprint, run, selection)
        log.info("fine-tune %s: resumed after epoch %d", task.name, selection.epoch)
    resumed_from = selection.epoch
    while selection.epoch < config.epochs and not selection.stopped(config.patience):
        if max_epochs_this_call is not None and selection.epoch - resumed_from >= max_epochs_this_call:
            break
        _run_epoch(run, task, carve, selection, progress)
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            _save_state(state_path, _resume_state(fingerprint, run, selection))
    backbone, head = _kept_model(run, selection)
    tta_carve = carve_tta_scores(encoder, backbone, head, carve.images, carve.labels, task, config)
    return FineTuneResult(
        backbone, head, config, selection.best_epoch, selection.history, n_train=len(run.train_x),
        n_val=len(carve.labels), resumed_from_epoch=resumed_from, tta_carve=tta_carve,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- set-up


@dataclass
class _Carve:
    """The validation carve of the training patients, decoded once: what selects the epoch."""

    images: Tensor
    labels: Tensor


def _set_up(
    encoder: Any, task: TaskSpec, train_samples: Sequence[Sample], prep: Preprocessing, config: FineTuneConfig
) -> tuple[_EpochRun, _Carve]:
    """Seed, carve, copy the backbone onto the device with a new head and its optimiser, decode the
    images: everything an epoch and the selection work on."""
    torch.manual_seed(config.seed)
    labelled = subsample_patients(train_samples, config.train_fraction, config.seed)
    train, val = carve_validation(labelled, config.val_fraction, config.carve_seed_or_seed)
    if not val:
        raise ValueError("fine-tuning needs a validation carve: val_fraction is 0 or there is one patient")
    device = resolve_device(config.device)
    backbone: nn.Module = copy.deepcopy(encoder.model).float().to(device)
    if not is_vit(backbone):  # oneDNN's convolutions are about 1.7x faster in NHWC on a CPU
        backbone = backbone.to(memory_format=torch.channels_last)
    set_drop_path(backbone, config.drop_path)
    in_dim = encoder.embed_dim * (2 if config.features == "cls+meanpatch" else 1)
    head = build_head(config.head, in_dim, task.num_classes, **config.hparams).to(device)
    groups = layer_decay_param_groups(
        backbone, head, lr=config.lr, layer_decay=config.layer_decay, weight_decay=config.weight_decay
    )
    optimiser = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups])
    labels = torch.tensor([s.label for s in train])
    weights = class_weights(labels, task.num_classes, config.class_weighting)
    weights = weights.to(device) if weights is not None else None
    labels = labels.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    bf16 = resolve_precision(config.precision, device) == "bf16"
    log.info(
        "fine-tune %s: on %s, precision %s (requested %s)", task.name, device, "bf16" if bf16 else "fp32",
        config.precision,
    )  # fmt: skip
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    started = time.perf_counter()
    train_x = decode_squares(train, prep)
    carve = _Carve(decode_squares(val, prep), torch.tensor([s.label for s in val]))
    log.info(
        "fine-tune %s: %d train / %d validation images decoded in %.0f s",
        task.name, len(train), len(val), time.perf_counter() - started,
    )  # fmt: skip
    run = _EpochRun(
        encoder, backbone, head, optimiser, generator, config, device, bf16, labels, weights, train_x,
        steps_per_epoch, total_steps, warmup_steps,
    )  # fmt: skip
    return run, carve


@dataclass
class _EpochRun:
    """What one fine-tuning epoch works on (see :func:`finetune`)."""

    encoder: Any
    backbone: nn.Module
    head: Head
    optimiser: torch.optim.Optimizer
    generator: torch.Generator
    config: FineTuneConfig
    device: torch.device
    bf16: bool
    labels: Tensor
    weights: Tensor | None
    train_x: Tensor
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def _train_epoch(run: _EpochRun, epoch: int, progress: bool) -> float:
    """One pass over the training images in a fresh random order; returns the summed loss."""
    config, backbone, head = run.config, run.backbone, run.head
    backbone.train()
    head.train()
    order = torch.randperm(len(run.train_x), generator=run.generator)
    total = 0.0
    starts: Any = range(0, len(order), config.batch_size)
    if progress:
        from tqdm import tqdm  # type: ignore[import-untyped]

        starts = tqdm(starts, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
    for index, start in enumerate(starts):
        step = epoch * run.steps_per_epoch + index
        lr = lr_at(step, run.total_steps, run.warmup_steps, config.lr, config.min_lr)
        for group in run.optimiser.param_groups:
            group["lr"] = lr * group["lr_scale"]
        idx = order[start : start + config.batch_size]
        images = run.train_x[idx]
        idx = idx.to(run.device)
        images = augment_batch(images, config, run.generator) if config.augment else images.float()
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
            logits = _forward(run.encoder, backbone, head, images, config.features)
        loss = head.loss(logits.float(), run.labels[idx], run.weights, label_smoothing=config.label_smoothing)
        run.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad is not None:
            params = [p for g in run.optimiser.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(params, config.clip_grad)
        run.optimiser.step()
        total += float(loss.detach()) * idx.numel()
    return total


def _carve_record(
    run: _EpochRun, task: TaskSpec, epoch: int, train_loss: float, val_x: Tensor, val_y: Tensor, tick: float
) -> dict[str, float]:
    """The epoch's line of the history: train loss, and loss, accuracy and QWK on the carve (float32)."""
    config = run.config
    logits = _logits(run.encoder, run.backbone, run.head, val_x, config.features, max(config.batch_size, 64))
    val_loss = float(run.head.loss(logits, val_y, None if run.weights is None else run.weights.cpu()))
    predicted = run.head.probabilities_from_logits(logits).argmax(dim=1).numpy()
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": accuracy(val_y.numpy(), predicted),
        "val_qwk": quadratic_weighted_kappa(val_y.numpy(), predicted, k=task.num_classes)
        if task.ordinal
        else float("nan"),
        "seconds": time.perf_counter() - tick,
    }


# ---------------------------------------------------------------------------------------- selection


@dataclass
class _Selection:
    """The epochs so far and the best of them by the ``select`` score (what the resume state keeps)."""

    best: tuple[dict[str, Any], dict[str, Any]]  # backbone and head weights of the best epoch
    best_score: float = -math.inf
    best_epoch: int = 0
    waited: int = 0  # epochs since the best one
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0  # the last finished epoch

    def stopped(self, patience: int) -> bool:
        return self.waited >= patience


def _weights(run: _EpochRun) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of the backbone's and the head's weights now."""
    return copy.deepcopy(run.backbone.state_dict()), copy.deepcopy(run.head.state_dict())


def _run_epoch(run: _EpochRun, task: TaskSpec, carve: _Carve, selection: _Selection, progress: bool) -> None:
    """Train one epoch, score it on the carve, and keep its weights when its ``select`` score is the best."""
    config = run.config
    tick = time.perf_counter()
    total = _train_epoch(run, selection.epoch, progress)
    selection.epoch += 1
    epoch = selection.epoch
    record = _carve_record(run, task, epoch, total / len(run.train_x), carve.images, carve.labels, tick)
    val_loss = record["val_loss"]
    selection.history.append(record)
    scores = {"loss": -val_loss, "accuracy": record["val_accuracy"], "qwk": record["val_qwk"]}
    score = scores[config.select]
    if score > selection.best_score + 1e-9:
        selection.best_score, selection.best_epoch, selection.waited = score, epoch, 0
        selection.best = _weights(run)
    else:
        selection.waited += 1
    log.info(
        "fine-tune %s epoch %d/%d: train loss %.4f, carve loss %.4f acc %.3f qwk %.3f (%.0f s)%s",
        task.name, epoch, config.epochs, record["train_loss"], val_loss, record["val_accuracy"],
        record["val_qwk"], record["seconds"], "  *best" if selection.best_epoch == epoch else "",
    )  # fmt: skip


def _resume_state(fingerprint: str, run: _EpochRun, selection: _Selection) -> dict[str, Any]:
    """The full state after an epoch (``finetune_state.pt``): weights, optimiser, RNG and selection."""
    return {
        "fingerprint": fingerprint,
        "epoch": selection.epoch,
        "backbone": run.backbone.state_dict(),
        "head": run.head.state_dict(),
        "optimiser": run.optimiser.state_dict(),
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "best_backbone": selection.best[0],
        "best_head": selection.best[1],
        "best_score": selection.best_score,
        "best_epoch": selection.best_epoch,
        "waited": selection.waited,
        "history": selection.history,
    }


def _resume(state_path: Path, fingerprint: str, run: _EpochRun, selection: _Selection) -> None:
    """Load what :func:`_resume_state` saved into ``run`` and ``selection``; another run's is an error."""
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{state_path} belongs to another fine-tuning run (configuration, samples or encoder "
            "differ); use a new output directory"
        )
    run.backbone.load_state_dict(state["backbone"])
    run.head.load_state_dict(state["head"])
    run.optimiser.load_state_dict(state["optimiser"])
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    selection.best = (state["best_backbone"], state["best_head"])
    selection.best_score, selection.best_epoch = state["best_score"], state["best_epoch"]
    selection.waited, selection.history, selection.epoch = state["waited"], state["history"], state["epoch"]


# ---------------------------------------------------------------------------------------- export


def _kept_model(run: _EpochRun, selection: _Selection) -> tuple[nn.Module, Head]:
    """The best epoch's backbone and head, without stochastic depth, in eval mode, on the CPU."""
    backbone, head = run.backbone, run.head
    backbone.load_state_dict(selection.best[0])
    head.load_state_dict(selection.best[1])
    set_drop_path(backbone, 0.0)
    backbone.eval()
    head.eval()
    if run.device.type != "cpu":  # results, exports and the node's heads live on the CPU
        backbone, head = backbone.cpu(), head.cpu()
    return backbone, head


def carve_tta_scores(
    encoder: Any, backbone: nn.Module, head: Head, val_x: Tensor, val_y: Tensor, task: TaskSpec,
    config: FineTuneConfig,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Loss (NLL of the combined probabilities), accuracy and QWK on the carve for each TTA mode."""
    batch = max(config.batch_size, 64)
    truth = val_y.numpy()
    out: dict[str, dict[str, float]] = {}
    for mode in tta.TTA_MODES:
        probs = tta.combine(
            [
                head.probabilities_from_logits(
                    _logits(encoder, backbone, head, torch.as_tensor(view), config.features, batch)
                )
                .double()
                .numpy()
                for view in tta.views(val_x, mode)
            ]
        )
        predicted = probs.argmax(axis=1)
        nll = float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None)).mean())
        out[mode] = {
            "loss": nll,
            "accuracy": accuracy(truth, predicted),
            "qwk": quadratic_weighted_kappa(truth, predicted, k=task.num_classes)
            if task.ordinal
            else float("nan"),
        }
    return out


def choose_tta(requested: str, carve: dict[str, dict[str, float]], select: str) -> str:
    """``requested``, or for ``"auto"`` the mode with the better carve ``select`` score (``none`` if tied)."""
    if requested != "auto":
        return tta.check_mode(requested)
    if not carve:
        return "none"

    def score(mode: str) -> float:
        value = carve[mode][select]
        return -value if select == "loss" else value

    return "hflip" if score("hflip") > score("none") + 1e-9 else "none"
