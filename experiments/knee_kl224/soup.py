"""A uniform model soup of fine-tuned KL models: one network whose weights are the mean of theirs.

    .venv/bin/python experiments/knee_kl224/soup.py --member ENC:BUNDLE ... --img-size 288 --out DIR

Wortsman et al., *Model soups* (ICML 2022): models fine-tuned from the same pretrained weights with the
same recipe usually lie in one basin, and the mean of their weights often scores like their ensemble at
the cost of one model. Here the members share the ImageNet EfficientNet-Lite0 initialisation and the
recipe, and differ in input size (224 / 288 / 320 px; a convolutional network runs at any size). Batch
normalisation statistics do not average linearly, so after averaging they are re-estimated (cumulative
mean, no labels, no augmentation) on the training patients' images the members trained on -- the carve
the members chose their epochs on is left out, so the carve can still judge the soup
(``experiments/knee_kl224/ensemble.py``). The heads (linear, with their standardisation buffers) are
averaged too. The soup is written as a fine-tuned encoder and its head bundle (``heads export`` layout),
run at ``--img-size`` with the members' test-time augmentation.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn

from heads.datasets.base import carve_validation
from heads.datasets.chen_kl import load_chen_kl
from heads.export import export_finetuned
from heads.features import Preprocessing
from heads.finetune import decode_squares
from orthonode.inference.encoder import forward_tokens, load_encoder
from orthonode.inference.heads import load_head
from orthonode.tasks.registry import get_task


def mean_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = states[0].keys()
    if any(s.keys() != keys for s in states):
        raise SystemExit("the members' networks differ: a soup needs one architecture")
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
        if states[0][k].is_floating_point()
        else states[0][k]
        for k in keys
    }


@torch.no_grad()
def recalibrate_batch_norm(encoder: object, model: nn.Module, images: torch.Tensor, batch: int = 64) -> int:
    """Re-estimate every BatchNorm's running mean / variance on ``images`` (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in norms:
        m.train()
    for start in range(0, images.shape[0], batch):
        x = encoder.prepare(images[start : start + batch].float())  # type: ignore[attr-defined]
        forward_tokens(model, x.contiguous(memory_format=torch.channels_last))
    model.eval()
    return len(norms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--member", action="append", required=True, help="ENCODER_DIR:BUNDLE_DIR")
    parser.add_argument("--img-size", type=int, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/knee_kl224"))
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    members = [tuple(Path(p) for p in m.split(":", 1)) for m in args.member]
    encoders = [load_encoder(e) for e, _ in members]
    heads = [load_head(b, enc.fingerprint) for (_, b), enc in zip(members, encoders, strict=True)]
    cards = [json.loads((b / "head.json").read_text()) for _, b in members]
    fts = [c["head"]["training"]["finetune"] for c in cards]
    carves = {(f["val_fraction"], f.get("carve_seed", f["seed"])) for f in fts}
    if len(carves) != 1 or len({h.card.input.tta for h in heads}) != 1:
        raise SystemExit("the members differ in carve or test-time augmentation")
    base = next(e for e, h in zip(encoders, heads, strict=True) if h.card.input.img_size == args.img_size)
    model = copy.deepcopy(base.model).float()
    model.load_state_dict(mean_state([e.model.float().state_dict() for e in encoders]))
    head = copy.deepcopy(heads[0].head).float()
    head.load_state_dict(mean_state([h.head.state_dict() for h in heads]))

    train = [s for s in load_chen_kl(args.data, splits=("train",)).samples]
    fraction, carve_seed = carves.pop()
    fitted, _carve = carve_validation(train, fraction, carve_seed)
    prep = Preprocessing("radiograph", args.img_size, patch=base.patch_size)
    images = decode_squares(fitted, prep)
    model = model.to(memory_format=torch.channels_last)
    count = recalibrate_batch_norm(base, model, images)
    print(f"averaged {len(members)} members; {count} BatchNorm layers re-estimated on {len(fitted)} images")

    base_card = next(c for c, h in zip(cards, heads, strict=True) if h.card.input.img_size == args.img_size)
    training = dict(
        base_card["head"]["training"]
    )  # the recipe of the member whose input size the soup runs at
    training.pop("history", None)
    training["soup"] = {
        "members": [
            {"encoder": e.fingerprint, "img_size": h.card.input.img_size}
            for e, h in zip(encoders, heads, strict=True)
        ],
        "batch_norm": f"re-estimated on the {len(fitted)} fitted training images (carve left out)",
        "img_size": args.img_size,
    }
    encoder_dir, bundle = export_finetuned(
        get_task("kl_grade"), model, head, base, args.out, version=args.version,
        features=heads[0].card.input.features, training=training, dtype=torch.float16,
        tta=heads[0].card.input.tta,
    )  # fmt: skip
    print(f"soup encoder: {encoder_dir}\nsoup bundle: {bundle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
