"""Choose a bundle's test-time augmentation on the validation carve of the TRAINING patients (never on val).

    .venv/bin/python experiments/knee_kl224/carve_tta.py RUN_DIR

RUN_DIR holds ``encoder-kl_grade-1.0.0`` and ``kl_grade-1.0.0`` from ``heads fit --finetune``. The carve is
the one fine-tuning chose its epoch on (the card's ``val_fraction`` and ``seed``). Prints the carve scores
without and with the hflip TTA (``heads.finetune.carve_tta_scores``) and the choice (``choose_tta``).
For runs made before fine-tuning did this itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from heads.datasets.base import carve_validation
from heads.datasets.chen_kl import load_chen_kl
from heads.features import Preprocessing
from heads.finetune import FineTuneConfig, carve_tta_scores, choose_tta, decode_squares
from orthonode.inference.encoder import load_encoder
from orthonode.tasks.bundle import load_bundle
from orthonode.tasks.registry import get_task


def main(run: Path, data: Path = Path("../shared/data/knee_kl224")) -> int:
    encoder = load_encoder(run / "encoder-kl_grade-1.0.0")
    bundle = load_bundle(run / "kl_grade-1.0.0", encoder_fingerprint=encoder.fingerprint)
    ft = bundle.card.head.training["finetune"]
    config = FineTuneConfig(features=bundle.card.input.features, batch_size=64)
    _, carve = carve_validation(
        load_chen_kl(data, splits=("train",)).samples, ft["val_fraction"], ft.get("carve_seed", ft["seed"])
    )
    prep = Preprocessing("radiograph", encoder.card.img_size, patch=encoder.patch_size)
    x, y = decode_squares(carve, prep), torch.tensor([s.label for s in carve])
    model = encoder.model.float().eval()
    scores = carve_tta_scores(encoder, model, bundle.head, x, y, get_task("kl_grade"), config)
    print(
        json.dumps(
            {"carve": len(carve), "scores": scores, "chosen": choose_tta("auto", scores, ft["select"])}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
