"""The pretraining's own exception (in the one tree of :mod:`orthonode.errors`)."""

from __future__ import annotations

from orthonode.errors import OrthonodeError

__all__ = ["TrainingError"]


class TrainingError(OrthonodeError, RuntimeError):
    """A run that cannot start or continue (missing data, existing run, no checkpoint to resume)."""
