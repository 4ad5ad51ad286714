"""Which device the encoder runs on: the ``inference_device`` setting (and ``heads fit --device``).

``cpu`` always means the CPU. ``cuda`` and ``auto`` take the first CUDA device when PyTorch sees one;
where none is available ``auto`` quietly means the CPU, and an explicit ``cuda`` falls back to the CPU with
one warning naming the setting -- a worker on a machine without a GPU still works, and says so once.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

DeviceSetting = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    """The ``torch.device`` for a device setting (see the module docstring)."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("inference device 'cuda' requested but no CUDA device is available: running on the CPU")
    return torch.device("cpu")
