"""orthonode.inference.pipeline with a convolutional encoder (the tiny UNTRAINED ``convnext_test``) and a
linear KL head that asks for hflip test-time augmentation, on SYNTHETIC DICOM.

Checked against computations written here: the probabilities are the mean of the head on the image and
on its mirror, each from timm's own pooled features; the key image's overlay is the class activation of
the reported grade (the head's linear map applied to each position of the last feature map), min-max
scaled and placed on the source image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.runtime import isolated_settings

from orthonode.completion.selection import Route
from orthonode.inference.heads import load_head
from orthonode.inference.loading import load_radiograph
from orthonode.inference.pipeline import Models, run_pipeline
from orthonode.inference.preprocess import fit_to_square
from orthonode.inference.untrained import write_untrained_models
from orthonode.peers import synthetic
from orthonode.tasks.bundle import encoder_fields, make_card, save_bundle
from orthonode.tasks.modules import build_head
from orthonode.tasks.registry import get_task

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = write_untrained_models(
        tmp_path_factory.mktemp("models"), arch="convnext_test", img_size=SIZE, tasks=()
    )
    settings = isolated_settings(models_dir=root, data_dir=tmp_path_factory.mktemp("data"))
    encoder = Models.load(root, settings).encoder
    task = get_task("kl_grade")
    torch.manual_seed(3)
    head = build_head("linear", encoder.embed_dim, task.num_classes)
    for param in head.parameters():
        param.data.normal_()
    card = make_card(
        task, head, **encoder_fields(encoder), features="cls", version="untrained", trained=False,
        name="kl UNTRAINED test head", tta="hflip",
    )  # fmt: skip
    save_bundle(head, card, root / "heads")
    return Models.load(root, settings)


def test_cnn_probabilities_average_the_mirror_and_overlay_is_the_class_activation(
    models: Models, tmp_path: Path
) -> None:
    uid = synthetic.new_study_uid()
    ds = synthetic.radiograph(uid, laterality="L", rows=80, cols=64, seed=1, series_number=1)
    (path,) = synthetic.write_all([ds], tmp_path, prefix="dx")
    route = Route.from_json({
        "pipeline": "knee_radiograph", "anatomy": "knee", "modality": "radiograph", "laterality": "L",
        "series": [{"series_uid": str(ds.SeriesInstanceUID), "plane": None, "weighting": None,
                    "fat_suppressed": False, "laterality": "L"}],
    })  # fmt: skip
    out = run_pipeline(models, [route], {str(ds.SeriesInstanceUID): [path]})
    assert out.failures == []
    (finding,) = out.findings

    square, placement = fit_to_square(load_radiograph(path).pixels, SIZE, patch=32)
    model = models.encoder.model
    head = load_head(models.root / "heads" / "kl_grade-untrained").head
    assert (models.encoder.card.mean, models.encoder.card.std) == (0.5, 0.25)
    mean, std = 0.5, 0.25

    def pooled_and_positions(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.from_numpy(image.copy())[None, None].repeat(1, 3, 1, 1) - mean) / std
        with torch.no_grad():
            fmap = model.forward_features(x)
            pooled = model.forward_head(fmap, pre_logits=True)  # timm: average, then the final norm
            positions = model.head.norm(fmap).flatten(2).transpose(1, 2)[0]
        return pooled, positions

    pooled, positions = pooled_and_positions(square)
    pooled_flip, _ = pooled_and_positions(square[:, ::-1])
    with torch.no_grad():
        probs = (torch.softmax(head(pooled), -1) + torch.softmax(head(pooled_flip), -1)) / 2
    meanings = [t[2] for t in load_head(models.root / "heads" / "kl_grade-untrained").card.codes.values]
    got = np.array([finding.probabilities[m] for m in meanings])
    np.testing.assert_allclose(got, probs[0].numpy(), atol=1e-5)

    label = int(probs.argmax())
    with torch.no_grad():
        standardised = (positions - head.norm.mean) / head.norm.std
        evidence = standardised @ head.out.weight[label] + head.out.bias[label]
    cam = ((evidence - evidence.min()) / (evidence.max() - evidence.min())).reshape(2, 2).numpy()
    np.testing.assert_allclose(finding.heatmap, placement.to_source(cam), atol=1e-5)
