"""Honest evaluation: metrics with patient-level bootstrap CIs, label efficiency, cross-anatomy transfer.

Outputs of :func:`write_report`: ``results.json`` (every number, the data it was computed on, whether
that data is real), ``results.md`` (a Markdown table) and PNG plots drawn with matplotlib's Agg backend:
``confusion.png`` (every task), ``roc.png`` (binary tasks), ``label_efficiency.png`` (sweeps).

* Ordinal / multi-class tasks: accuracy, balanced accuracy, quadratic weighted kappa, MAE (ordinal).
* Binary tasks: AUROC, AUPRC, and accuracy / balanced accuracy at the decision threshold.
* :func:`label_efficiency_sweep`: train on 12.5 / 25 / 50 / 100 % of the training *patients* (several
  seeds), evaluate each on the same evaluation split (the OrthoFoundation paper's label-efficiency study).
* :func:`cross_anatomy`: train a head on one task's data, evaluate it on another task's data with the
  same label structure (e.g. a knee ligament head on ankle ligament data).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from heads import metrics as M  # noqa: N812
from heads.features import FeatureSet
from heads.train import FitConfig, fit_head, predict_proba
from orthonode.tasks import decoding, tta
from orthonode.tasks.registry import TaskSpec

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def predicted_class(
    task: TaskSpec, probs: np.ndarray, threshold: float = 0.5, decode: str = "argmax"
) -> np.ndarray:
    """For binary tasks ``p(positive) >= threshold``, else the bundle's decoding rule (argmax by default;
    :mod:`orthonode.tasks.decoding`): the class the node would report."""
    if task.binary:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return decoding.decode(probs, decode)


def _metric_functions(
    task: TaskSpec, threshold: float, decode: str = "argmax"
) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    def hard(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda y, p: fn(y, predicted_class(task, p, threshold, decode))

    out: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": hard(M.accuracy),
        "balanced_accuracy": hard(M.balanced_accuracy),
    }
    if task.binary:
        out["auroc"] = lambda y, p: M.auroc(y, p[:, 1])
        out["auprc"] = lambda y, p: M.auprc(y, p[:, 1])
    else:
        out["qwk"] = hard(lambda y, q: M.quadratic_weighted_kappa(y, q, task.num_classes))
        if task.ordinal:
            out["mae"] = hard(M.mean_absolute_error)
    return out


def evaluate_probabilities(
    task: TaskSpec,
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    patients: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    decode: str = "argmax",
) -> dict[str, Any]:
    """Every metric of ``task`` with a 95 % patient-level bootstrap CI, plus the confusion matrix; the
    hard metrics score the class ``decode`` gives (:mod:`orthonode.tasks.decoding`)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.size, task.num_classes):
        raise ValueError(f"probabilities must be [N, {task.num_classes}], got {p.shape} for N={y.size}")
    results: dict[str, Any] = {}
    for name, fn in _metric_functions(task, threshold, decode).items():
        try:
            results[name] = M.patient_bootstrap(fn, y, p, patients, n_boot=n_boot, seed=seed).as_dict()
        except ValueError as exc:
            results[name] = {"value": None, "error": str(exc)}
    return {
        "metrics": results,
        "confusion": M.confusion_matrix(
            y, predicted_class(task, p, threshold, decode), task.num_classes
        ).tolist(),
        "n_samples": int(y.size),
        "n_patients": len(set(patients)),
        "threshold": threshold if task.binary else None,
        "decode": None if task.binary else decode,
        "n_boot": n_boot,
        "seed": seed,
    }


def evaluate_head_on(
    task: TaskSpec,
    head: Any,
    features: FeatureSet,
    mode: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    mirrored: FeatureSet | None = None,
    decode: str = "argmax",
) -> tuple[dict[str, Any], np.ndarray]:
    """``(results, probabilities)`` of a trained head on a feature set; with the features of the mirrored
    images (``mirrored``, same samples and order) the probabilities are combined as the node's ``hflip``
    test-time augmentation combines them (:func:`orthonode.tasks.tta.combine`)."""
    probs = predict_proba(head, features, mode)
    if mirrored is not None:
        if mirrored.keys != features.keys:
            raise ValueError("the mirrored features are not of the same samples")
        probs = tta.combine([probs, predict_proba(head, mirrored, mode)])
    return evaluate_probabilities(
        task, features.labels.numpy(), probs, features.patients, n_boot=n_boot, seed=seed, decode=decode
    ), probs


def label_efficiency_sweep(
    task: TaskSpec,
    train: FeatureSet,
    evaluation: FeatureSet,
    config: FitConfig,
    *,
    fractions: Sequence[float] = FRACTIONS,
    seeds: Sequence[int] = (0, 1, 2),
    n_boot: int = 200,
) -> list[dict[str, Any]]:
    """One row per (fraction, seed): the patient subset of ``train`` used and the evaluation metrics."""
    from heads.datasets.base import subsample_patients
    from heads.train import _rows_as_samples

    rows = []
    all_rows = _rows_as_samples(train)
    for fraction in fractions:
        for seed in seeds:
            subset = train.select(subsample_patients(all_rows, fraction, seed))
            fit = fit_head(task, subset, replace(config, seed=seed))
            result, _ = evaluate_head_on(
                task, fit.head, evaluation, config.features, n_boot=n_boot, seed=seed
            )
            rows.append(
                {
                    "fraction": fraction,
                    "seed": seed,
                    "n_train": len(subset),
                    "train_patients": len(set(subset.patients)),
                    "metrics": result["metrics"],
                }
            )
    return rows


def cross_anatomy(
    source_task: TaskSpec,
    source_train: FeatureSet,
    target_task: TaskSpec,
    target_eval: FeatureSet,
    config: FitConfig,
    *,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Train on ``source_task``'s data, evaluate on ``target_task``'s (same number of classes)."""
    if source_task.num_classes != target_task.num_classes:
        raise ValueError(
            f"cross-anatomy transfer needs the same label structure: {source_task.name} has "
            f"{source_task.num_classes} classes, {target_task.name} {target_task.num_classes}"
        )
    fit = fit_head(source_task, source_train, config)
    result, _ = evaluate_head_on(target_task, fit.head, target_eval, config.features, n_boot=n_boot)
    result.update(
        {"protocol": "cross_anatomy", "trained_on": source_task.name, "evaluated_on": target_task.name}
    )
    return result


# ---------------------------------------------------------------------------------- outputs


def _fmt(entry: dict[str, Any]) -> str:
    if entry.get("value") is None:
        return "n/a"
    value, low, high = entry["value"], entry.get("ci_low"), entry.get("ci_high")
    if low is None or high is None or (isinstance(low, float) and np.isnan(low)):
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: one row per metric, and the label-efficiency rows if any."""
    lines = [
        f"# {report['title']} ({report['task']})",
        "",
        f"Evaluated on **{report['data']['dataset']} / {report['data']['split']}** "
        f"({report['n_samples']} samples, {report['n_patients']} patients; "
        f"{'real data' if report['data'].get('real', False) else 'fixture / synthetic data'}). "
        f"Encoder `{report.get('encoder', {}).get('fingerprint', '?')}`. "
        f"95 % CIs from {report['n_boot']} patient-level bootstrap replicates.",
        "",
        "| metric | value (95 % CI) |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_fmt(entry)} |" for name, entry in report["metrics"].items()]
    sweep = report.get("label_efficiency")
    if sweep:
        lines += [
            "",
            "## Label efficiency",
            "",
            "| fraction | seed | train images | patients | metrics |",
            "|---|---|---|---|---|",
        ]
        for row in sweep:
            summary = ", ".join(f"{k} {_fmt(v)}" for k, v in row["metrics"].items())
            cells = [
                f"{row['fraction']:g}",
                str(row["seed"]),
                str(row["n_train"]),
                str(row["train_patients"]),
            ]
            lines.append(f"| {' | '.join(cells)} | {summary} |")
    return "\n".join(lines) + "\n"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(i) for i in range(len(labels))])
    ax.set_yticks(range(len(labels)), [str(i) for i in range(len(labels))])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(y_true: np.ndarray, score: np.ndarray, path: Path, title: str) -> None:
    plt = _plt()
    fpr, tpr = M.roc_curve(y_true, score)
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUROC {M.auroc(y_true, score):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_label_efficiency(rows: Sequence[dict[str, Any]], metric: str, path: Path, title: str) -> None:
    plt = _plt()
    fractions = sorted({r["fraction"] for r in rows})
    means, lows, highs = [], [], []
    for f in fractions:
        values = [
            r["metrics"][metric]["value"]
            for r in rows
            if r["fraction"] == f and r["metrics"][metric].get("value") is not None
        ]
        arr = np.asarray(values, dtype=np.float64)
        means.append(arr.mean() if arr.size else np.nan)
        lows.append(arr.min() if arr.size else np.nan)
        highs.append(arr.max() if arr.size else np.nan)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([100 * f for f in fractions], means, "o-", label=f"{metric} (mean over seeds)")
    ax.fill_between([100 * f for f in fractions], lows, highs, alpha=0.2, label="min-max over seeds")
    ax.set_xscale("log", base=2)
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("training labels (by patient)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_report(
    task: TaskSpec,
    result: dict[str, Any],
    *,
    dataset: str,
    split: str,
    real: bool,
    encoder: dict[str, str] | None = None,
    head: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: task, data (name, split, real or fixture), encoder, head and the results."""
    return {
        "task": task.name,
        "title": task.title,
        "labels": list(task.labels),
        "data": {"dataset": dataset, "split": split, "real": real},
        "encoder": encoder or {},
        "head": head or {},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **result,
    }


def write_report(
    report: dict[str, Any],
    out_dir: Path,
    *,
    task: TaskSpec,
    y_true: np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the plots; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    written[0].write_text(
        json.dumps(report, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8"
    )
    written[1].write_text(markdown_table(report), encoding="utf-8")
    if "confusion" in report:
        path = out_dir / "confusion.png"
        plot_confusion(np.asarray(report["confusion"]), task.labels, path, f"{task.title}: confusion")
        written.append(path)
    if (
        task.binary
        and y_true is not None
        and probs is not None
        and len(set(np.asarray(y_true).tolist())) == 2
    ):
        path = out_dir / "roc.png"
        plot_roc(np.asarray(y_true), np.asarray(probs)[:, 1], path, f"{task.title}: ROC")
        written.append(path)
    if report.get("label_efficiency"):
        path = out_dir / "label_efficiency.png"
        plot_label_efficiency(
            report["label_efficiency"], task.metrics[-1], path, f"{task.title}: label efficiency"
        )
        written.append(path)
    return written
