"""Training of task heads: probes on cached features, attention pooling for MRI, full fine-tuning.

* :func:`fit_head` trains a :class:`~orthonode.tasks.modules.Head` on a :class:`~heads.features.FeatureSet`
  (linear probe, MLP, ordinal, or attention pooling over slice sets) with AdamW, optional class
  weighting (``"balanced"``: ``w_c = N / (K n_c)``), and early stopping on a validation set carved by
  patient from the TRAINING patients (:func:`heads.datasets.base.carve_validation`); the split results
  are reported on is never looked at. The best epoch's weights are kept. Seeded (torch and the carving).
* Full fine-tuning of the encoder with the head lives in :mod:`heads.finetune`.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from heads.config import HeadTraining
from heads.datasets.base import Sample, carve_validation
from heads.features import FeatureSet
from orthonode.tasks.modules import Head, build_head
from orthonode.tasks.registry import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class FitConfig(HeadTraining):
    """Hyper-parameters of head training on cached features (saved in the bundle card): the shared
    :class:`~heads.config.HeadTraining` fields with their defaults."""


@dataclass
class FitResult:
    head: Head
    config: FitConfig
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    n_train: int
    n_val: int
    train_patients: int
    val_patients: int


def class_weights(labels: Tensor, num_classes: int, mode: str) -> Tensor | None:
    """``balanced``: ``N / (K n_c)`` per class (absent classes get 0); ``none``: None."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class_weighting must be 'balanced' or 'none', not {mode!r}")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    weights = torch.where(
        counts > 0, labels.numel() / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts)
    )
    return weights


def _rows_as_samples(features: FeatureSet) -> list[Sample]:
    return [
        Sample(key=k, paths=(), label=int(y), patient_id=p, split=s)
        for k, y, p, s in zip(
            features.keys, features.labels.tolist(), features.patients, features.splits, strict=True
        )
    ]


def carve_features(features: FeatureSet, fraction: float, seed: int) -> tuple[FeatureSet, FeatureSet]:
    """(train, validation) rows of ``features``, split by patient (see ``carve_validation``)."""
    train, val = carve_validation(_rows_as_samples(features), fraction, seed)
    return features.select(train), features.select(val)


def _inputs(features: FeatureSet, mode: str) -> tuple[Tensor, Tensor | None]:
    return features.features(mode).float(), features.mask


def _batched_logits(head: Head, x: Tensor, mask: Tensor | None, batch: int = 1024) -> Tensor:
    outs = []
    for start in range(0, x.shape[0], batch):
        m = None if mask is None else mask[start : start + batch]
        outs.append(head.forward_masked(x[start : start + batch], m))
    return torch.cat(outs)


def fit_head(
    task: TaskSpec, train: FeatureSet, config: FitConfig, val: FeatureSet | None = None
) -> FitResult:
    """Train a head for ``task`` on ``train``; ``val`` defaults to a patient-level carve of ``train``."""
    if config.head == "attention" and not train.slice_sets:
        raise ValueError("an attention head needs slice-set features (MRI)")
    if config.head != "attention" and train.slice_sets:
        raise ValueError("slice-set features need the attention head")
    if val is None:
        train, val = carve_features(train, config.val_fraction, config.seed)
    torch.manual_seed(config.seed)
    x_train, m_train = _inputs(train, config.features)
    x_val, m_val = _inputs(val, config.features)
    y_train, y_val = train.labels, val.labels
    head = build_head(config.head, x_train.shape[-1], task.num_classes, **config.hparams)
    head.norm.fit(x_train if m_train is None else x_train[m_train])
    weights = class_weights(y_train, task.num_classes, config.class_weighting)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    best_state = copy.deepcopy(head.state_dict())
    best_loss, best_epoch, waited = math.inf, 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        head.train()
        order = torch.randperm(x_train.shape[0], generator=generator)
        total = 0.0
        for start in range(0, order.numel(), config.batch_size):
            idx = order[start : start + config.batch_size]
            logits = head.forward_masked(x_train[idx], None if m_train is None else m_train[idx])
            loss = head.loss(logits, y_train[idx], weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * idx.numel()
        head.eval()
        with torch.no_grad():
            val_loss = (
                float(head.loss(_batched_logits(head, x_val, m_val), y_val, weights)) if len(val) else 0.0
            )
        history.append({"epoch": epoch, "train_loss": total / max(order.numel(), 1), "val_loss": val_loss})
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    log.info(
        "fit %s head: best epoch %d of %d (val loss %.4f)", config.head, best_epoch, len(history), best_loss
    )
    return FitResult(
        head=head,
        config=config,
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        history=history,
        n_train=len(train),
        n_val=len(val),
        train_patients=len(set(train.patients)),
        val_patients=len(set(val.patients)),
    )


@torch.no_grad()
def predict_proba(head: Head, features: FeatureSet, mode: str) -> np.ndarray:
    """Class probabilities ``[N, K]`` of every row of ``features``."""
    head.eval()
    x, mask = _inputs(features, mode)
    return head.probabilities_from_logits(_batched_logits(head, x, mask)).numpy()
