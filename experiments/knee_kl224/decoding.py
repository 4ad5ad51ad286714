"""How to turn the KL head's five probabilities into one grade: chosen on the TRAINING patients' carve,
reported once on val.

    .venv/bin/python experiments/knee_kl224/decoding.py [--encoder DIR --bundle DIR] [--out DIR]

The default is the shipped model (``orthonode/models/default``), run exactly as the node runs it (its
bundle's input size and test-time augmentation). Its members chose their epochs on the carve of
``--carve-fraction`` / ``--carve-seed`` (0.15, seed 0) and never trained on it, so the carve is a fair
place to choose a decoder; val is read once, after the choice.

Decoders (the grade is ordinal, so a probability vector can be read in more than one way):

* ``argmax``: the most probable grade (what the node reported before 2.3.0);
* ``median``: the smallest grade whose cumulative probability reaches 0.5 (minimises absolute error);
* ``expected``: the expected grade sum_k k p_k, rounded to the nearest grade (cross-entropy with
  expected-grade decoding; minimises squared error, which is what QWK weighs).

The rule, fixed before any number below was seen: among the decoders whose carve accuracy is at most one
point below argmax's, the one with the highest carve QWK; ties go to the first in the order above.
Metrics on val carry patient-bootstrap 95% CIs (``heads.evaluate``), computed on the decoded grades.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ensemble import member_probabilities  # experiments/knee_kl224/ensemble.py: the node's forward pass

from heads.datasets.base import carve_validation
from heads.datasets.chen_kl import load_chen_kl
from heads.evaluate import evaluate_probabilities
from heads.metrics import accuracy, mean_absolute_error, quadratic_weighted_kappa
from orthonode.tasks.decoding import DECODINGS, decode
from orthonode.tasks.registry import get_task

TASK = get_task("kl_grade")
DEFAULT = Path("orthonode/models/default")


DECODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    rule: functools.partial(decode, rule=rule) for rule in DECODINGS
}  # the node's own rules (orthonode.tasks.decoding), in order: argmax, median, expected


def score(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy(y, predicted),
        "qwk": quadratic_weighted_kappa(y, predicted, k=TASK.num_classes),
        "mae": mean_absolute_error(y, predicted),
        "predicted_counts": np.bincount(predicted, minlength=TASK.num_classes).tolist(),
    }


def choose(carve_rows: dict[str, dict[str, float]], tolerance: float = 0.01) -> str:
    """The rule of the module docstring."""
    floor = carve_rows["argmax"]["accuracy"] - tolerance
    eligible = [name for name in DECODERS if carve_rows[name]["accuracy"] >= floor - 1e-12]
    return max(eligible, key=lambda name: (carve_rows[name]["qwk"], -list(DECODERS).index(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, default=DEFAULT / "encoder")
    parser.add_argument("--bundle", type=Path, default=None, help="default: the shipped kl_grade head")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/knee_kl224"))
    parser.add_argument("--carve-fraction", type=float, default=0.15)
    parser.add_argument("--carve-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/decoding"))
    args = parser.parse_args()
    bundle = args.bundle or next(iter(sorted((DEFAULT / "heads").glob("kl_grade-*"))))
    data = load_chen_kl(args.data, splits=("train", "val"))
    train = [s for s in data.samples if s.split == "train"]
    _, carve = carve_validation(train, args.carve_fraction, args.carve_seed)
    y_carve = np.array([s.label for s in carve])
    p_carve = member_probabilities(args.encoder, bundle, carve, args.out / "carve.npy")
    carve_rows = {name: score(y_carve, fn(p_carve)) for name, fn in DECODERS.items()}
    print(f"carve: {len(carve)} images of the training patients; model {bundle}")
    for name, row in carve_rows.items():
        print(
            f"  {name:9s} acc {row['accuracy']:.4f}  QWK {row['qwk']:.4f}  MAE {row['mae']:.3f}  "
            f"predicted {row['predicted_counts']}"
        )
    chosen = choose(carve_rows)
    print(f"chosen on the carve: {chosen}")
    val = [s for s in data.samples if s.split == "val"]
    y_val = np.array([s.label for s in val])
    p_val = member_probabilities(args.encoder, bundle, val, args.out / "val.npy")
    report: dict = {
        "model": str(bundle),
        "carve": {
            "n": len(carve),
            "fraction": args.carve_fraction,
            "seed": args.carve_seed,
            "rows": carve_rows,
        },
        "chosen": chosen,
        "val": {},
    }
    patients = [s.patient_id for s in val]
    for name in dict.fromkeys(["argmax", chosen]):
        decoded = DECODERS[name](p_val)
        result = evaluate_probabilities(TASK, y_val, np.eye(TASK.num_classes)[decoded], patients)
        report["val"][name] = result
        m = result["metrics"]
        print(
            f"val {name:9s} acc {m['accuracy']['value']:.4f} ({m['accuracy']['ci_low']:.3f}-"
            f"{m['accuracy']['ci_high']:.3f})  QWK {m['qwk']['value']:.4f} ({m['qwk']['ci_low']:.3f}-"
            f"{m['qwk']['ci_high']:.3f})  MAE {m['mae']['value']:.3f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decoding.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
