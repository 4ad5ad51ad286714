"""The default model shipped in ``orthonode/models/default`` (issue 5).

It is present, under 30 MB, has its model card, is what the node loads when ``models_dir`` is not set, is
trained and matched to its encoder -- and it reproduces the val accuracy and QWK its card reports when
computed here through the NODE's own path: the node's letterboxing, ``Encoder.embed`` and the installed
head runtime (not the ``heads`` package that produced the numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.runtime import isolated_settings

from heads.datasets.base import load_sample
from heads.datasets.chen_kl import load_chen_kl
from heads.metrics import accuracy, quadratic_weighted_kappa
from orthonode.inference.layout import PACKAGED_MODELS, models_root
from orthonode.inference.pipeline import Models
from orthonode.inference.preprocess import fit_to_square
from orthonode.tasks import tta

MAX_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def models() -> Models:
    return Models.load(PACKAGED_MODELS, isolated_settings(inference_autocast="off"))


def test_packaged_model_is_complete_and_small() -> None:
    files = [p for p in PACKAGED_MODELS.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"encoder.safetensors", "encoder.json", "head.safetensors", "head.json", "MODEL_CARD.md"} <= names
    assert sum(p.stat().st_size for p in files) < MAX_BYTES
    card = (PACKAGED_MODELS / "MODEL_CARD.md").read_text(encoding="utf-8").lower()
    for phrase in ("research use", "not for diagnosis", "licence", "val", "reproduce"):
        assert phrase in card, phrase


def test_node_uses_the_packaged_model_by_default(models: Models) -> None:
    assert models_root(isolated_settings()) == PACKAGED_MODELS
    (kl,) = [h for h in models.heads_for("knee_radiograph") if h.task == "kl_grade"]
    assert kl.trained and "UNTRAINED" not in kl.card.name.upper()
    assert kl.card.encoder.fingerprint == models.encoder.fingerprint
    assert kl.card.evaluated_on is not None and kl.card.evaluated_on.split == "val"
    assert kl.card.evaluated_on.real


def test_packaged_model_reproduces_its_val_metrics(models: Models, shared_data: Path) -> None:
    root = shared_data / "knee_kl224"
    if not root.is_dir():
        pytest.skip("knee_kl224 not present")
    (kl,) = [h for h in models.heads_for("knee_radiograph") if h.task == "kl_grade"]
    samples = load_chen_kl(root, splits=("val",)).samples
    encoder, size = models.encoder, models.encoder.card.img_size
    predicted: list[int] = []
    for start in range(0, len(samples), 64):
        chunk = samples[start : start + 64]
        squares = np.stack([fit_to_square(load_sample(s), size, patch=encoder.patch_size)[0] for s in chunk])
        embedded = encoder.embed(squares[:, None], batch_size=64)
        mirrored = (
            encoder.embed(tta.mirror(squares[:, None]), batch_size=64)
            if kl.card.input.tta != "none"
            else None
        )
        probs = kl.predict_with_tta(embedded, mirrored)
        predicted += [kl.decide(p) for p in probs]  # the grade the node reports (the card's decoding)
    truth = [s.label for s in samples]
    reported = kl.card.metrics
    assert len(samples) == kl.card.evaluated_on.n_samples  # type: ignore[union-attr]
    assert accuracy(truth, predicted) == pytest.approx(reported["accuracy"].value, abs=2e-3)
    assert quadratic_weighted_kappa(truth, predicted, k=5) == pytest.approx(reported["qwk"].value, abs=5e-3)
