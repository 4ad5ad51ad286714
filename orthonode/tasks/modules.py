"""Task heads: small ``nn.Module`` s that map frozen encoder features to class probabilities.

Inputs are encoder features composed by :func:`compose_features`: the CLS token ``[B, D]``, or the CLS
token concatenated with the mean patch token ``[B, 2D]`` (``"cls+meanpatch"``). MRI tasks feed one such
vector per slice, ``[B, S, F]``, to :class:`AttentionPoolHead`.

Every head standardises its input with a :class:`FeatureNorm` whose mean/std are buffers (set from the
training features, saved in the bundle), exposes ``forward(x) -> logits`` and
``probabilities(x) -> [B, K]`` (rows sum to 1), and ``loss(logits, y, class_weights)``.

* :class:`LinearHead` -- a linear probe (softmax over K classes).
* :class:`MLPHead` -- one hidden layer (GELU, dropout).
* :class:`OrdinalHead` -- cumulative-logit ordinal regression for KL grades: one shared score
  ``g(x)`` and K-1 increasing thresholds ``t_k``, ``P(y > k) = sigmoid(g(x) - t_k)`` (McCullagh 1980's
  proportional-odds model; trained with the K-1 binary tasks of CORAL, Cao et al. 2020,
  arXiv:1901.07884). Thresholds are ``t_0 + cumsum(softplus(d))``, so they are strictly increasing and
  the per-grade probabilities ``P(y=k) = P(y>k-1) - P(y>k)`` are never negative.
* :class:`AttentionPoolHead` -- gated attention pooling over a slice set (Ilse et al. 2018, *Attention-
  based deep multiple instance learning*, arXiv:1802.04712): ``a_s = w^T (tanh(V h_s) * sigmoid(U h_s))``,
  softmax over the (unmasked) slices, pooled ``sum_s a_s h_s`` -> a linear or ordinal output.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

FeatureMode = Literal["cls", "cls+meanpatch"]
FEATURE_MODES: tuple[str, ...] = get_args(FeatureMode)
HeadKind = Literal["linear", "mlp", "ordinal", "attention"]
HEAD_KINDS: tuple[str, ...] = get_args(HeadKind)


def compose_features(cls: Tensor, meanpatch: Tensor | None, mode: str) -> Tensor:
    """``cls`` ``[..., D]`` alone, or concatenated with the mean patch token ``[..., D]`` -> ``[..., 2D]``."""
    if mode == "cls":
        return cls
    if mode == "cls+meanpatch":
        if meanpatch is None:
            raise ValueError("features 'cls+meanpatch' need the mean patch token")
        return torch.cat([cls, meanpatch], dim=-1)
    raise ValueError(f"unknown feature mode {mode!r}; choose one of {FEATURE_MODES}")


def feature_dim(embed_dim: int, mode: str) -> int:
    """Width of the composed features for an encoder of width ``embed_dim``."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"unknown feature mode {mode!r}; choose one of {FEATURE_MODES}")
    return embed_dim * (2 if mode == "cls+meanpatch" else 1)


class FeatureNorm(nn.Module):
    """``(x - mean) / std`` with the statistics of the training features (buffers, saved with the head)."""

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: Tensor, eps: float = 1e-6) -> None:
        """Set mean/std from training features ``[N, D]`` or ``[N, S, D]`` (all slices pooled)."""
        flat = features.reshape(-1, features.shape[-1]).to(torch.float64)
        self.mean.copy_(flat.mean(0).to(self.mean.dtype))
        self.std.copy_(flat.std(0, unbiased=False).clamp_min(eps).to(self.std.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class OrdinalOutput(nn.Module):
    """Cumulative logits ``[B, K-1]``: ``g(x) - t_k`` with strictly increasing thresholds ``t_k``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 3:
            raise ValueError("an ordinal output needs at least 3 classes")
        self.score = nn.Linear(in_dim, 1)
        self.first = nn.Parameter(torch.zeros(1))
        self.gaps = nn.Parameter(torch.zeros(num_classes - 2))

    def thresholds(self) -> Tensor:
        return torch.cat([self.first, self.first + torch.cumsum(F.softplus(self.gaps), 0)])

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x) - self.thresholds()


def ordinal_probabilities(cumulative_logits: Tensor) -> Tensor:
    """Per-class probabilities ``[B, K]`` from cumulative logits ``[B, K-1]`` (``P(y > k)``)."""
    above = torch.sigmoid(cumulative_logits)  # P(y > k), non-increasing in k
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    upper = torch.cat([ones, above], dim=1)  # P(y > k - 1), P(y > -1) = 1
    lower = torch.cat([above, zeros], dim=1)  # P(y > k), P(y > K-1) = 0
    return (upper - lower).clamp_min(0.0)


class Head(nn.Module):
    """Common interface of every head (see the module docstring)."""

    kind: str = ""
    ordinal: bool = False

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"a head needs in_dim >= 1 and >= 2 classes (got {in_dim}, {num_classes})")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.norm = FeatureNorm(in_dim)

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments beyond ``in_dim`` / ``num_classes`` (stored in the bundle card)."""
        return {}

    def probabilities_from_logits(self, logits: Tensor) -> Tensor:
        if self.ordinal:
            return ordinal_probabilities(logits)
        return torch.softmax(logits, dim=-1)

    def probabilities(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.probabilities_from_logits(self.forward_masked(x, mask))

    def forward_masked(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self(x)

    def loss(
        self,
        logits: Tensor,
        target: Tensor,
        class_weights: Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """Weighted cross-entropy (with ``label_smoothing``), or for ordinal heads the mean of the K-1
        binary "y > k" BCE terms (label smoothing does not apply to them)."""
        if not self.ordinal:
            return F.cross_entropy(logits, target, weight=class_weights, label_smoothing=label_smoothing)
        ranks = torch.arange(self.num_classes - 1, device=logits.device)
        levels = (target[:, None] > ranks[None, :]).to(logits.dtype)
        per_sample = F.binary_cross_entropy_with_logits(logits, levels, reduction="none").sum(1)
        if class_weights is None:
            return per_sample.mean() / (self.num_classes - 1)
        weights = class_weights[target]
        return (per_sample * weights).sum() / weights.sum() / (self.num_classes - 1)


def _output(in_dim: int, num_classes: int, ordinal: bool) -> nn.Module:
    return OrdinalOutput(in_dim, num_classes) if ordinal else nn.Linear(in_dim, num_classes)


class LinearHead(Head):
    """Linear probe: standardise, dropout (0 by default), one linear layer."""

    kind = "linear"

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__(in_dim, num_classes)
        self.dropout_p = dropout
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(in_dim, num_classes)

    def hparams(self) -> dict[str, Any]:
        return {"dropout": self.dropout_p}

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(self.norm(x)))

    def position_logits(self, positions: Tensor) -> Tensor:
        """Class activation (Zhou et al., *Learning Deep Features for Discriminative Localization*, CVPR
        2016): the head applied to each position's features ``[..., N, D]`` -> ``[..., N, K]``. On a CNN whose
        pooled vector is the mean of its positions, the mean of these is exactly the image's logits."""
        return self.out(self.norm(positions))


class MLPHead(Head):
    """One hidden layer: standardise, Linear, GELU, dropout, Linear."""

    kind = "mlp"

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(in_dim, num_classes)
        self.hidden = hidden
        self.dropout_p = dropout
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, num_classes)

    def hparams(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "dropout": self.dropout_p}

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(self.norm(x)))


class OrdinalHead(Head):
    """Cumulative-logit ordinal head (K-1 increasing thresholds); ``hidden > 0`` adds an MLP layer."""

    kind = "ordinal"
    ordinal = True

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__(in_dim, num_classes)
        self.hidden = hidden
        self.dropout_p = dropout
        if hidden > 0:
            self.body: nn.Module = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        else:
            self.body = nn.Dropout(dropout)
        self.out = OrdinalOutput(hidden if hidden > 0 else in_dim, num_classes)

    def hparams(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "dropout": self.dropout_p}

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(self.norm(x)))


class AttentionPoolHead(Head):
    """Gated attention pooling over slices ``[B, S, F]`` (optional mask ``[B, S]``, True = real slice)."""

    kind = "attention"

    def __init__(
        self, in_dim: int, num_classes: int, attn_dim: int = 128, dropout: float = 0.0, ordinal: bool = False
    ) -> None:
        super().__init__(in_dim, num_classes)
        self.attn_dim = attn_dim
        self.dropout_p = dropout
        self.ordinal = ordinal
        self.attn_v = nn.Linear(in_dim, attn_dim)
        self.attn_u = nn.Linear(in_dim, attn_dim)
        self.attn_w = nn.Linear(attn_dim, 1)
        self.drop = nn.Dropout(dropout)
        self.out = _output(in_dim, num_classes, ordinal)

    def hparams(self) -> dict[str, Any]:
        return {"attn_dim": self.attn_dim, "dropout": self.dropout_p, "ordinal": self.ordinal}

    def attention(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Slice weights ``[B, S]`` (softmax over unmasked slices) of standardised features ``x``."""
        scores = self.attn_w(torch.tanh(self.attn_v(x)) * torch.sigmoid(self.attn_u(x))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward_masked(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.ndim != 3:
            raise ValueError(f"attention pooling takes slice sets [B, S, F], got shape {tuple(x.shape)}")
        h = self.norm(x)
        weights = self.attention(h, mask)
        pooled = torch.einsum("bs,bsf->bf", weights, h)
        return self.out(self.drop(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_masked(x, None)


def build_head(kind: str, in_dim: int, num_classes: int, **hparams: Any) -> Head:
    """A head of ``kind`` (:data:`HEAD_KINDS`) with its hyper-parameters (unknown ones are an error)."""
    classes: dict[str, type[Head]] = {
        "linear": LinearHead,
        "mlp": MLPHead,
        "ordinal": OrdinalHead,
        "attention": AttentionPoolHead,
    }
    try:
        cls = classes[kind]
    except KeyError:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {HEAD_KINDS}") from None
    try:
        return cls(in_dim, num_classes, **hparams)
    except TypeError as exc:
        raise ValueError(f"bad hyper-parameters for a {kind} head: {exc}") from exc
