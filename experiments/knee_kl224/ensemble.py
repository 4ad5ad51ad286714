"""Which fine-tuned KL models to average: every subset scored on the TRAINING patients' carve, and the
chosen one (with each member alone) reported once on val.

    .venv/bin/python experiments/knee_kl224/ensemble.py --member ENCODER_DIR:BUNDLE_DIR ... [--out DIR]

Each member is a fine-tuned encoder and its head bundle (``heads fit --finetune`` then ``heads export
--tta``), run exactly as the node runs it (``Encoder.embed`` + ``InstalledHead.predict_with_tta``, at the
bundle's input size). The carve is the one every member chose its epoch on: the members must share the
carve's fraction and seed (a member that saw another's carve would leak). An ensemble's probabilities are
the mean of its members' (after each member's own test-time augmentation).

The choice, fixed before val is read: the best single model on the carve (accuracy, QWK breaking ties;
a weight-averaged soup from ``soup.py`` counts as a single model: it costs one) and the best ensemble; the
ensemble is chosen only when it beats that single model by at least ``--margin`` carve accuracy (default
1 point), because it costs its member count in CPU time per study. val is read only for the finalists,
and their numbers carry patient-bootstrap 95% CIs. Probabilities are cached per member and split in
``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from heads.datasets.base import carve_validation
from heads.datasets.chen_kl import load_chen_kl
from heads.evaluate import evaluate_probabilities
from heads.features import Preprocessing
from heads.finetune import decode_squares
from heads.metrics import accuracy, quadratic_weighted_kappa
from orthonode.inference.encoder import load_encoder
from orthonode.inference.heads import load_head
from orthonode.tasks import tta
from orthonode.tasks.registry import get_task

TASK = get_task("kl_grade")


def member_probabilities(encoder_dir: Path, bundle_dir: Path, samples: list, cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    encoder = load_encoder(encoder_dir)
    head = load_head(bundle_dir, encoder.fingerprint)
    prep = Preprocessing("radiograph", head.card.input.img_size, patch=encoder.patch_size)
    squares = decode_squares(samples, prep).float().numpy()
    embedded = encoder.embed(squares, batch_size=32)
    mirrored = encoder.embed(tta.mirror(squares), batch_size=32) if head.card.input.tta == "hflip" else None
    probs = head.predict_with_tta(embedded, mirrored)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, probs)
    return probs


def member_name(bundle: Path) -> str:
    """The run a bundle belongs to: ``runs/RUN/kl_grade-1.0.0`` or ``runs/RUN/tta/kl_grade-1.0.0`` -> RUN."""
    parts = [p for p in bundle.parts[:-1] if p != "tta"]
    return parts[-1] if parts else bundle.name


def carve_of(bundles: list[Path]) -> tuple[float, int]:
    keys = set()
    for bundle in bundles:
        card = json.loads((bundle / "head.json").read_text())
        ft = card["head"]["training"]["finetune"]
        keys.add((float(ft["val_fraction"]), int(ft.get("carve_seed", ft["seed"]))))
    if len(keys) != 1:
        raise SystemExit(f"the members chose their epochs on different carves {sorted(keys)}: not comparable")
    return keys.pop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--member", action="append", required=True, help="ENCODER_DIR:BUNDLE_DIR")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/knee_kl224"))
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble"))
    parser.add_argument("--no-val", action="store_true", help="score the carve only")
    parser.add_argument("--margin", type=float, default=0.01, help="carve accuracy an ensemble must add")
    args = parser.parse_args()
    members = [tuple(Path(p) for p in m.split(":", 1)) for m in args.member]
    names = [member_name(bundle) for _, bundle in members]
    if len(set(names)) != len(names):
        raise SystemExit(f"two members have the same name: {names}")
    fraction, seed = carve_of([b for _, b in members])
    data = load_chen_kl(args.data, splits=("train", "val"))
    train = [s for s in data.samples if s.split == "train"]
    _, carve = carve_validation(train, fraction, seed)
    truth = np.array([s.label for s in carve])
    carve_probs = [
        member_probabilities(e, b, carve, args.out / f"{n}.carve.npy")
        for (e, b), n in zip(members, names, strict=True)
    ]

    def score(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        predicted = probs.argmax(axis=1)
        return accuracy(y, predicted), quadratic_weighted_kappa(y, predicted, k=TASK.num_classes)

    rows = []
    for k in range(1, len(members) + 1):
        for subset in itertools.combinations(range(len(members)), k):
            acc, qwk = score(np.mean([carve_probs[i] for i in subset], axis=0), truth)
            rows.append({"members": [names[i] for i in subset], "carve_accuracy": acc, "carve_qwk": qwk})
    print(f"carve: {len(carve)} images of the training patients (fraction {fraction}, seed {seed})")
    for row in rows:
        print(
            f"  {' + '.join(row['members']):60s} acc {row['carve_accuracy']:.4f}  QWK {row['carve_qwk']:.4f}"
        )

    def rank(row: dict) -> tuple[float, float]:
        return row["carve_accuracy"], row["carve_qwk"]

    single = max((r for r in rows if len(r["members"]) == 1), key=rank)
    ensembles = [r for r in rows if len(r["members"]) > 1]
    multi = max(ensembles, key=rank) if ensembles else None
    earns = multi is not None and multi["carve_accuracy"] >= single["carve_accuracy"] + args.margin
    best = multi if earns and multi is not None else single
    multi_name = " + ".join(multi["members"]) if multi else "-"
    print(f"best single: {single['members'][0]}; best ensemble: {multi_name}")
    print(f"chosen on the carve (an ensemble must add {args.margin:.3f}): {' + '.join(best['members'])}")
    report: dict = {
        "carve": {"n": len(carve), "fraction": fraction, "seed": seed, "rows": rows},
        "chosen": best,
    }
    if not args.no_val:
        val = [s for s in data.samples if s.split == "val"]
        y = np.array([s.label for s in val])
        patients = [s.patient_id for s in val]
        val_probs = {
            n: member_probabilities(e, b, val, args.out / f"{n}.val.npy")
            for (e, b), n in zip(members, names, strict=True)
        }
        finalists = {n: val_probs[n] for n in names}
        for row in (single, multi):
            if row is not None:
                finalists[" + ".join(row["members"])] = np.mean(
                    [val_probs[n] for n in row["members"]], axis=0
                )
        report["val"] = {}
        for name, probs in finalists.items():
            result = evaluate_probabilities(TASK, y, probs, patients)
            report["val"][name] = result
            m = result["metrics"]
            print(
                f"val {name:60s} acc {m['accuracy']['value']:.4f} ({m['accuracy']['ci_low']:.3f}-"
                f"{m['accuracy']['ci_high']:.3f})  QWK {m['qwk']['value']:.4f} ({m['qwk']['ci_low']:.3f}-"
                f"{m['qwk']['ci_high']:.3f})  MAE {m['mae']['value']:.3f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ensemble.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
