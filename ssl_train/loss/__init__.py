"""Self-supervised losses of the DINOv3 recipe (DINO, iBOT, KoLeo, Gram anchoring) and teacher centering.

One loss per module; every module docstring states its reference, formula, normalisation and shapes. The
iBOT masks are drawn with the data (:mod:`ssl_train.data.masking`).
"""

from ssl_train.loss.centering import SoftmaxCentering, sinkhorn_knopp
from ssl_train.loss.dino import DINOLoss
from ssl_train.loss.gram import GramLoss
from ssl_train.loss.ibot import IBOTPatchLoss
from ssl_train.loss.koleo import KoLeoLoss

__all__ = [
    "DINOLoss",
    "GramLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "SoftmaxCentering",
    "sinkhorn_knopp",
]
