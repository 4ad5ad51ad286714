"""Decoding rules (orthonode.tasks.decoding): what each rule reports, where it may be used, and that the
node reports what the bundle's card says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.encoders import write_test_encoder

from orthonode.inference.encoder import load_encoder
from orthonode.inference.heads import load_head
from orthonode.tasks.bundle import BundleError, load_bundle, make_card, random_bundle, save_bundle
from orthonode.tasks.decoding import check_decoding, decode
from orthonode.tasks.registry import get_task

# A KL distribution whose mode (0), median (1) and rounded mean (2) differ.
SPREAD = np.array([0.40, 0.15, 0.10, 0.15, 0.20])


def test_each_rule_reads_the_distribution_its_own_way() -> None:
    assert decode(SPREAD, "argmax") == 0
    assert decode(SPREAD, "median") == 1  # cumulative 0.40, 0.55: the first to reach 0.5
    assert decode(SPREAD, "expected") == 2  # 0.15 + 0.20 + 0.45 + 0.80 = 1.60 -> 2
    batch = np.stack([SPREAD, np.eye(5)[3], np.full(5, 0.2)])
    assert decode(batch, "argmax").tolist() == [0, 3, 0]
    assert decode(batch, "median").tolist() == [1, 3, 2]
    assert decode(batch, "expected").tolist() == [2, 3, 2]


def test_ties_and_rounding_are_settled_the_same_way_every_time() -> None:
    half = np.array([0.5, 0.0, 0.0, 0.0, 0.5])
    assert decode(half, "median") == 0  # the cumulative sum reaches 0.5 at grade 0
    assert decode(np.array([0.5, 0.5, 0, 0, 0]), "expected") == 1  # 0.5 rounds up
    assert decode(np.array([0.1, 0.2, 0.2, 0.2, 0.3]) * (1 - 1e-12), "median") == 2


def test_ordinal_rules_are_refused_where_the_classes_have_no_order() -> None:
    assert check_decoding("median", ordinal=True) == "median"
    with pytest.raises(ValueError, match="needs an ordinal task"):
        check_decoding("median", ordinal=False)
    with pytest.raises(ValueError, match="unknown decoding 'mode'"):
        check_decoding("mode", ordinal=True)
    with pytest.raises(ValueError, match="unknown decoding"):
        decode(SPREAD, "mode")


def test_the_node_reports_the_grade_the_card_asks_for(tmp_path: Path) -> None:
    encoder = load_encoder(write_test_encoder(tmp_path / "enc"))
    loaded = load_bundle(random_bundle("kl_grade", encoder, tmp_path / "random"))
    for rule, grade in (("argmax", 0), ("median", 1), ("expected", 2)):
        card = make_card(
            get_task("kl_grade"), loaded.head, encoder_fingerprint=encoder.fingerprint,
            encoder_name=encoder.card.name, img_size=loaded.card.input.img_size,
            features=loaded.card.input.features, version=f"1.0.{len(rule)}",
            trained=True, decode=rule,
        )  # fmt: skip
        path = save_bundle(loaded.head, card, tmp_path / rule)
        assert json.loads((path / "head.json").read_text())["head"]["decode"] == rule
        head = load_head(path, encoder.fingerprint)
        assert head.decide(SPREAD) == grade
        out = encoder.embed(torch.rand(3, 1, 32, 32))
        probs = head.predict_array(out)
        assert [head.decide(p) for p in probs] == decode(probs, rule).tolist()


def test_a_card_without_the_field_decodes_by_argmax_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    encoder = load_encoder(write_test_encoder(tmp_path / "enc"))
    kl = random_bundle("kl_grade", encoder, tmp_path / "kl")
    data = json.loads((kl / "head.json").read_text())
    del data["head"]["decode"]  # bundles written before the field existed
    (kl / "head.json").write_text(json.dumps(data))
    assert load_head(kl, encoder.fingerprint).decide(SPREAD) == 0
    binary = random_bundle("tkr", encoder, tmp_path / "tkr")
    data = json.loads((binary / "head.json").read_text())
    data["head"]["decode"] = "median"
    (binary / "head.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="needs an ordinal task"):
        load_bundle(binary)
    with pytest.raises(BundleError, match="needs an ordinal task"):
        make_card(
            get_task("tkr"), load_bundle(random_bundle("tkr", encoder, tmp_path / "t2")).head,
            encoder_fingerprint=encoder.fingerprint, encoder_name="e", img_size=32, features="cls",
            version="1", trained=True, decode="expected",
        )  # fmt: skip


def test_a_binary_head_applies_its_cards_threshold(tmp_path: Path) -> None:
    encoder = load_encoder(write_test_encoder(tmp_path / "enc"))
    loaded = load_bundle(random_bundle("tkr", encoder, tmp_path / "random"))
    card = make_card(
        get_task("tkr"), loaded.head, encoder_fingerprint=encoder.fingerprint,
        encoder_name=encoder.card.name, img_size=loaded.card.input.img_size,
        features=loaded.card.input.features, version="1.0.0", trained=True, thresholds={"positive": 0.7},
    )  # fmt: skip
    head = load_head(save_bundle(loaded.head, card, tmp_path / "m"), encoder.fingerprint)
    assert head.decide(np.array([0.35, 0.65])) == 0  # argmax would say positive
    assert head.decide(np.array([0.3, 0.7])) == 1
