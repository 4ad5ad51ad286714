"""DINO's weighted k-NN classifier on embeddings, shared by ``ssl_train``'s monitoring and ``heads knn``.

Reference: Caron et al., "DINO", arXiv:2104.14294, Section 4.1 / ``eval_knn.py``; Wu et al., "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018 -- features L2-normalised, cosine
similarity to every bank feature, the ``k`` nearest vote for their class with weight ``exp(sim / T)``
(``k = 20``, ``T = 0.07``), and the class with the largest summed weight wins.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

__all__ = ["knn_classify"]


def knn_classify(
    bank: Tensor, bank_labels: Tensor, queries: Tensor, *, k: int = 20, temperature: float = 0.07
) -> Tensor:
    """Predicted class of every query ``[Q]`` from bank features ``[M, D]`` with labels ``[M]`` (int64).

    Features are L2-normalised here; ties in the summed weights go to the lowest class index.
    """
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank {tuple(bank.shape)} and queries {tuple(queries.shape)} must be [*, D]")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must have shape [{bank.shape[0]}], got {tuple(bank_labels.shape)}")
    if bank.shape[0] == 0:
        raise ValueError("empty k-NN bank")
    n_classes = int(bank_labels.max()) + 1
    k = min(k, bank.shape[0])
    sims = functional.normalize(queries.float(), dim=1) @ functional.normalize(bank.float(), dim=1).t()
    top_sims, top_idx = sims.topk(k, dim=1)  # [Q, k]
    weights = (top_sims / temperature).exp()
    votes = torch.zeros(queries.shape[0], n_classes, dtype=weights.dtype)
    votes.scatter_add_(1, bank_labels[top_idx], weights)
    return votes.argmax(dim=1)
