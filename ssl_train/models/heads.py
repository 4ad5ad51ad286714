"""Projection heads of DINO / iBOT: MLP -> bottleneck -> L2 norm -> weight-normalised prototypes.

References
----------
* Caron et al., "DINO", ICCV 2021, arXiv:2104.14294, Section 3.1 and Appendix: a 3-layer MLP (hidden 2048,
  GELU) to a 256-d bottleneck, L2 normalisation, then a weight-normalised linear layer (no bias) to ``K``
  prototypes with the weight norm fixed to 1 (``norm_last_layer=True``).
* Zhou et al., "iBOT", arXiv:2111.07832 and Oquab et al., "DINOv2", arXiv:2304.07193: the patch (iBOT) head
  has the same form; it may share the CLS head's parameters or be separate.

Formula: ``z = W_hat (h / ||h||)`` with ``h = MLP(x)`` and ``W_hat`` the prototype matrix ``[K, bottleneck]``
with every row divided by its L2 norm (weight normalisation with the gain fixed to 1; written out instead of
``torch.nn.utils.weight_norm`` so the parameter is one plain tensor, ``prototypes.weight``). The outputs are
thus cosine similarities in ``[-1, 1]``.

Shapes: input ``[..., in_dim]``, output ``[..., K]``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    """MLP projection to L2-normalised bottleneck features and cosine scores against ``K`` prototypes.

    Args:
        in_dim: backbone width ``D``.
        num_prototypes: ``K``.
        hidden_dim: MLP hidden width.
        bottleneck_dim: width of the L2-normalised bottleneck.
        n_layers: MLP layers (1: a single linear map to the bottleneck).
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
    ) -> None:
        super().__init__()
        if min(in_dim, num_prototypes, hidden_dim, bottleneck_dim) < 1:
            raise ValueError("head dimensions must all be >= 1")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        layers.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Linear(bottleneck_dim, num_prototypes, bias=False)
        self.num_prototypes = num_prototypes
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def project(self, x: Tensor) -> Tensor:
        """L2-normalised bottleneck features ``[..., bottleneck_dim]``."""
        return functional.normalize(self.mlp(x), p=2.0, dim=-1, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Prototype scores ``[..., K]`` (cosine similarities)."""
        features = self.project(x)
        weight = functional.normalize(self.prototypes.weight, p=2.0, dim=-1, eps=1e-6)
        return functional.linear(features, weight.to(features.dtype))

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The prototype matrix (frozen during the first epoch, as DINO does)."""
        return [cast(nn.Parameter, self.prototypes.weight)]


def head_parameter_count(head: nn.Module) -> int:
    """Number of parameters of a head (for logs)."""
    return sum(int(torch.numel(p)) for p in head.parameters())
