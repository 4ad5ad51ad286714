"""Heads: shapes, probabilities, the ordinal parametrisation and gated attention pooling."""

from __future__ import annotations

import pytest
import torch

from orthonode.tasks.modules import (
    AttentionPoolHead,
    LinearHead,
    MLPHead,
    OrdinalHead,
    build_head,
    compose_features,
    feature_dim,
    ordinal_probabilities,
)


def test_compose_features() -> None:
    cls, mean = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(compose_features(cls, mean, "cls"), cls)
    both = compose_features(cls, mean, "cls+meanpatch")
    assert both.shape == (3, 16) and torch.equal(both[:, 8:], mean)
    assert feature_dim(8, "cls+meanpatch") == 16
    with pytest.raises(ValueError):
        compose_features(cls, None, "cls+meanpatch")
    with pytest.raises(ValueError):
        compose_features(cls, mean, "mean")


@pytest.mark.parametrize("head", [LinearHead(16, 5), MLPHead(16, 2, hidden=8), OrdinalHead(16, 5)])
def test_probabilities_are_distributions(head: torch.nn.Module) -> None:
    torch.manual_seed(0)
    probs = head.probabilities(torch.randn(7, 16))  # type: ignore[operator]
    assert probs.shape == (7, head.num_classes)  # type: ignore[attr-defined]
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(1), torch.ones(7), atol=1e-6)


def test_feature_norm_standardises_inputs() -> None:
    head = LinearHead(4, 2)
    x = torch.randn(100, 4) * 5 + 3
    head.norm.fit(x)
    z = head.norm(x)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(4), atol=1e-4)


def test_ordinal_head_matches_cumulative_logit_formula() -> None:
    torch.manual_seed(1)
    head = OrdinalHead(6, 5)
    with torch.no_grad():
        head.out.gaps.copy_(torch.tensor([0.3, -1.0, 2.0]))
        head.out.first.fill_(-0.5)
    x = torch.randn(4, 6)
    # independent computation: thresholds t0, t0+softplus(d0), ...; P(y>k) = sigmoid(score - t_k)
    softplus = lambda v: torch.log1p(torch.exp(v))  # noqa: E731
    t = [-0.5]
    for d in [0.3, -1.0, 2.0]:
        t.append(t[-1] + float(softplus(torch.tensor(d))))
    score = head.out.score(head.body(head.norm(x))).squeeze(1)
    above = torch.stack([torch.sigmoid(score - tk) for tk in t], dim=1)
    expected = torch.stack(
        [
            1 - above[:, 0],
            above[:, 0] - above[:, 1],
            above[:, 1] - above[:, 2],
            above[:, 2] - above[:, 3],
            above[:, 3],
        ],
        dim=1,
    )
    assert torch.all(torch.diff(head.out.thresholds()) > 0)
    assert torch.allclose(head.probabilities(x), expected, atol=1e-6)


def test_ordinal_loss_is_mean_binary_cross_entropy() -> None:
    head = OrdinalHead(3, 4)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, -0.2, -3.0]])
    y = torch.tensor([2, 0])
    levels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    p = torch.sigmoid(logits)
    bce = -(levels * torch.log(p) + (1 - levels) * torch.log(1 - p))
    assert float(head.loss(logits, y)) == pytest.approx(float(bce.sum(1).mean() / 3), rel=1e-6)
    assert torch.allclose(ordinal_probabilities(logits).sum(1), torch.ones(2))


def test_attention_pooling_ignores_masked_slices_and_matches_formula() -> None:
    torch.manual_seed(2)
    head = AttentionPoolHead(8, 2, attn_dim=4)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    changed = x.clone()
    changed[0, 3:] = 100.0  # padding content must not matter
    assert torch.allclose(head.probabilities(x, mask), head.probabilities(changed, mask), atol=1e-6)
    # independent computation of the gated attention
    h = head.norm(x[1])
    a = head.attn_w(torch.tanh(head.attn_v(h)) * torch.sigmoid(head.attn_u(h))).squeeze(-1)
    w = torch.softmax(a, 0)
    logits = head.out((w[:, None] * h).sum(0, keepdim=True))
    assert torch.allclose(head.forward_masked(x[1:2]), logits, atol=1e-6)
    with pytest.raises(ValueError):
        head(torch.randn(2, 8))


def test_build_head_kinds_and_errors() -> None:
    assert build_head("mlp", 10, 3, hidden=4).hparams() == {"hidden": 4, "dropout": 0.1}
    assert build_head("attention", 10, 5, ordinal=True).ordinal
    with pytest.raises(ValueError, match="unknown head kind"):
        build_head("transformer", 10, 2)
    with pytest.raises(ValueError, match="hyper-parameters"):
        build_head("linear", 10, 2, hidden=3)
    with pytest.raises(ValueError):
        OrdinalHead(4, 2)


def test_label_smoothing_is_the_mixture_with_the_uniform_target() -> None:
    """(1 - e) * CE(onehot) + e * mean_k(-log p_k), written out here (Szegedy et al. 2016, sec. 7)."""
    torch.manual_seed(0)
    head = build_head("linear", 4, 5)
    logits = torch.randn(6, 5)
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    logp = torch.log_softmax(logits, dim=1)
    expected = (0.9 * -logp[torch.arange(6), target] + 0.1 * -logp.mean(1)).mean()
    torch.testing.assert_close(head.loss(logits, target, label_smoothing=0.1), expected)
    torch.testing.assert_close(head.loss(logits, target), -logp[torch.arange(6), target].mean())


def test_linear_position_logits_average_to_the_logits_of_the_mean() -> None:
    """Class activation maps decompose a linear head exactly over mean-pooled positions (Zhou et al.)."""
    torch.manual_seed(0)
    head = build_head("linear", 6, 5)
    head.norm.fit(torch.randn(20, 6))
    head.eval()
    positions = torch.randn(3, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(head.position_logits(positions).mean(1), head(positions.mean(1)))
    assert not hasattr(build_head("mlp", 6, 5), "position_logits")
