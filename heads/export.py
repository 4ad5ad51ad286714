"""From a trained head (and its evaluation report) to a head bundle the node installs.

:func:`export_head` writes ``<out_root>/<task>-<version>/`` for a head trained on frozen features;
:func:`export_finetuned` first exports the fine-tuned encoder (``orthonode-encoder/1``, new
fingerprint) beside it, and binds the head bundle to that encoder's fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from orthonode.inference.encoder import load_encoder, save_encoder
from orthonode.tasks.bundle import encoder_fields, make_card, save_bundle
from orthonode.tasks.modules import Head
from orthonode.tasks.registry import TaskSpec


def _metrics_of(report: dict[str, Any] | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    if not report:
        return {}, None
    metrics = {k: v for k, v in report.get("metrics", {}).items() if v.get("value") is not None}
    data = report.get("data", {})
    evaluated = {
        "dataset": str(data.get("dataset", "?")),
        "split": str(data.get("split", "?")),
        "n_samples": int(report.get("n_samples", 0)),
        "n_patients": int(report.get("n_patients", 0)),
        "real": bool(data.get("real", False)),
    }
    return metrics, evaluated


def export_head(
    task: TaskSpec,
    head: Head,
    encoder: Any,
    out_root: Path,
    *,
    version: str,
    features: str,
    training: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    threshold: float = 0.5,
    overwrite: bool = False,
    tta: str = "none",
) -> Path:
    """Write the bundle of a trained ``head`` for ``task`` on ``encoder`` (an ``Encoder``); ``tta`` is the
    test-time augmentation the node applies with it (:mod:`orthonode.tasks.tta`)."""
    metrics, evaluated = _metrics_of(report)
    card = make_card(
        task,
        head,
        **encoder_fields(encoder),
        features=features,
        version=version,
        trained=True,
        thresholds={"positive": threshold} if task.binary else {},
        training=training,
        metrics=metrics,
        evaluated_on=evaluated,
        tta=tta,
    )
    return save_bundle(head, card, out_root, overwrite=overwrite)


def finetuned_name(base_name: str, base_training: dict[str, Any], task: str) -> tuple[str, int]:
    """The name and fine-tuning stage of an encoder tuned for ``task`` from one called ``base_name``.

    A further stage on the same task keeps the name (``"<pretrained> fine-tuned for <task>"``) and counts
    the stage, instead of chaining the suffix once per stage.
    """
    suffix = f" fine-tuned for {task}"
    if base_training.get("task") == task or base_name.endswith(suffix):
        chained = 0
        while base_name.endswith(suffix):
            base_name, chained = base_name[: -len(suffix)], chained + 1
        previous = int(base_training.get("stage") or max(chained, 1))
        return base_name + suffix, previous + 1
    return base_name + suffix, 1


def export_finetuned(
    task: TaskSpec,
    backbone: Any,
    head: Head,
    encoder: Any,
    out_root: Path,
    *,
    version: str,
    features: str,
    training: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    tta: str = "none",
) -> tuple[Path, Path]:
    """Export the fine-tuned encoder to ``out_root/encoder-<task>-<version>/`` and the head bundle.

    ``dtype`` is the encoder's stored precision (float16 halves the size; the node computes in float32).
    Returns ``(encoder_dir, bundle_dir)``; the bundle records the fingerprint of the encoder AS STORED.
    """

    card = encoder.card
    name, stage = finetuned_name(card.name, dict(card.training), task.name)
    encoder_dir = Path(out_root) / f"encoder-{task.name}-{version}"
    save_encoder(
        backbone,
        encoder_dir,
        name=name,
        version=version,
        img_size=int(card.img_size),
        mean=card.mean,
        std=card.std,
        training={"base_encoder": card.fingerprint, "task": task.name, "stage": stage, **(training or {})},
        arch=card.arch,
        dtype=dtype,
    )
    tuned = load_encoder(encoder_dir)
    bundle = export_head(
        task, head, tuned, out_root, version=version, features=features, training=training, report=report,
        tta=tta,
    )  # fmt: skip
    return encoder_dir, bundle
