"""Test-time augmentation of a head: which views of an image it sees, and how their outputs combine.

One definition, used by the node (:mod:`orthonode.inference.pipeline`), by fine-tuning's choice on the
validation carve (:mod:`heads.finetune`) and by evaluation (:mod:`heads.evaluate`), so the probabilities a
bundle was scored with are the ones the node reports.

* ``none`` -- the image as it is.
* ``hflip`` -- the image and its left-right mirror; the class probabilities of the two are averaged
  (the flip TTA of the KL-grading literature, e.g. Tiulpin et al., Sci. Rep. 2018). A mirror is safe for
  grading tasks that do not depend on laterality; the reported side comes from the header and the joint's
  position, never from the mirrored view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch

TTAMode = Literal["none", "hflip"]
TTA_MODES: tuple[str, ...] = get_args(TTAMode)


def check_mode(mode: str) -> TTAMode:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return mode  # type: ignore[return-value]


def mirror(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Left-right mirror of ``[..., H, W]`` images (a contiguous copy)."""
    if isinstance(images, torch.Tensor):
        return images.flip(-1).contiguous()
    return np.ascontiguousarray(images[..., ::-1])


def views(images: np.ndarray | torch.Tensor, mode: str) -> list[np.ndarray | torch.Tensor]:
    """The inputs a head with test-time augmentation ``mode`` sees for ``images``, original first."""
    if check_mode(mode) == "hflip":
        return [images, mirror(images)]
    return [images]


def combine(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Per-view class probabilities ``[B, K]`` (one array per view, same order as :func:`views`) -> their
    mean ``[B, K]`` (rows still sum to 1)."""
    if not probabilities:
        raise ValueError("no views to combine")
    first = np.asarray(probabilities[0], dtype=np.float64)
    if any(np.shape(p) != first.shape for p in probabilities):
        raise ValueError("views disagree in shape")
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]), axis=0)
