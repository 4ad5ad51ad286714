"""The label-efficiency table of ``label_efficiency.sh``: one row per run found under RUNS, the val metrics
with their patient-bootstrap 95% CIs and what each run trained on; written as JSON and printed as markdown.

    .venv/bin/python experiments/knee_kl224/label_efficiency_table.py runs docs/results/label_efficiency.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RUN = re.compile(r"lite0_in1k_ft224_frac(?P<fraction>[0-9.]+)_s(?P<seed>\d+)$")


def rows(runs: Path) -> list[dict[str, object]]:
    out = []
    for run in sorted(runs.iterdir()):
        match = RUN.match(run.name)
        results, head = run / "eval-val-tta" / "results.json", run / "kl_grade-1.0.0" / "head.json"
        if match is None or not results.is_file() or not head.is_file():
            continue
        metrics = json.loads(results.read_text(encoding="utf-8"))["metrics"]
        training = json.loads(head.read_text(encoding="utf-8"))["head"]["training"]
        out.append({
            "fraction": float(match["fraction"]), "seed": int(match["seed"]),
            "n_train": training["n_train"], "n_carve": training["n_val"],
            "epochs": training["finetune"]["epochs"], "best_epoch": training["best_epoch"],
            "epochs_run": training["epochs_run"], "tta": training["tta"],
            "val": {k: metrics[k] for k in ("accuracy", "qwk", "mae", "balanced_accuracy")},
        })  # fmt: skip
    return sorted(out, key=lambda r: (r["fraction"], r["seed"]))  # type: ignore[arg-type,return-value]


def _cell(metric: dict[str, float], digits: int = 3) -> str:
    return f"{metric['value']:.{digits}f} ({metric['ci_low']:.{digits}f}-{metric['ci_high']:.{digits}f})"


def main() -> int:
    table = rows(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    header = ("training patients", "seed", "images (fit + carve)", "best epoch / run", "val accuracy")
    print("| " + " | ".join((*header, "val QWK", "MAE")) + " |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        v = r["val"]
        print(f"| {100 * r['fraction']:g}% | {r['seed']} | {r['n_train']} + {r['n_carve']} | "  # type: ignore[operator]
              f"{r['best_epoch']} / {r['epochs_run']} | {_cell(v['accuracy'])} | {_cell(v['qwk'])} | "  # type: ignore[index]
              f"{v['mae']['value']:.3f} |")  # type: ignore[index]  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
