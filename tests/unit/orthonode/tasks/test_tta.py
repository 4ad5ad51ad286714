"""orthonode.tasks.tta: the views a head sees and how their probabilities combine -- and the same
combination in ``heads`` (evaluation on cached features) and in the node (the installed head runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.encoders import write_test_encoder

from heads.datasets.chen_kl import load_chen_kl
from heads.evaluate import evaluate_head_on
from heads.features import Preprocessing, embed_samples
from orthonode.inference.encoder import load_encoder
from orthonode.inference.heads import load_head
from orthonode.inference.preprocess import fit_to_square
from orthonode.tasks import tta
from orthonode.tasks.bundle import BundleError, encoder_fields, make_card, save_bundle
from orthonode.tasks.modules import build_head
from orthonode.tasks.registry import get_task


def test_views_and_combine() -> None:
    images = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    (same,) = tta.views(images, "none")
    assert same is images
    original, mirrored = tta.views(images, "hflip")
    assert original is images
    np.testing.assert_array_equal(mirrored[..., ::-1], images)
    torch.testing.assert_close(tta.mirror(torch.from_numpy(images)), torch.from_numpy(images).flip(-1))
    p = np.array([[0.2, 0.8], [1.0, 0.0]])
    q = np.array([[0.6, 0.4], [0.5, 0.5]])
    np.testing.assert_allclose(tta.combine([p, q]), [[0.4, 0.6], [0.75, 0.25]])
    np.testing.assert_array_equal(tta.combine([p]), p)
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        tta.views(images, "rot90")
    with pytest.raises(ValueError, match="disagree"):
        tta.combine([p, q[:1]])


def test_mri_heads_take_no_flip() -> None:
    task = get_task("acl_injury")
    head = build_head("attention", 8, task.num_classes)
    with pytest.raises(BundleError, match="radiograph heads only"):
        make_card(
            task, head, encoder_fingerprint="0" * 16, encoder_name="e", img_size=32, features="cls",
            version="1", trained=True, tta="hflip",
        )  # fmt: skip


def test_flip_tta_is_identical_in_heads_and_in_the_node(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "knee_kl224"
    if not root.is_dir():
        pytest.skip("knee_kl224 not present")
    samples = load_chen_kl(root, splits=("val",), limit_per_class=2).samples
    encoder = load_encoder(write_test_encoder(tmp_path / "enc", img_size=32))
    task = get_task("kl_grade")
    torch.manual_seed(0)
    head = build_head("linear", encoder.embed_dim * 2, task.num_classes)
    card = make_card(
        task, head, **encoder_fields(encoder), features="cls+meanpatch", version="1", trained=True,
        tta="hflip",
    )  # fmt: skip
    bundle = save_bundle(head, card, tmp_path / "heads")

    prep = Preprocessing("radiograph", 32)
    features = embed_samples(encoder, samples, prep)
    mirrored = embed_samples(encoder, samples, Preprocessing("radiograph", 32, hflip=True))
    _, by_heads = evaluate_head_on(task, head, features, "cls+meanpatch", n_boot=10, mirrored=mirrored)
    _, plain = evaluate_head_on(task, head, features, "cls+meanpatch", n_boot=10)

    from heads.datasets.base import load_sample

    installed = load_head(bundle, encoder.fingerprint)
    squares = np.stack([fit_to_square(load_sample(s), 32)[0] for s in samples])[:, None]
    by_node = installed.predict_with_tta(encoder.embed(squares), encoder.embed(tta.mirror(squares)))
    np.testing.assert_allclose(by_node, by_heads, rtol=1e-5, atol=1e-6)
    assert not np.allclose(by_heads, plain)  # the mirror really changed the probabilities
    with pytest.raises(BundleError, match="needs the mirrored"):
        installed.predict_with_tta(encoder.embed(squares))
