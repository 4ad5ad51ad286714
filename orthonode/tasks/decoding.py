"""How a head's class probabilities become the one class the node reports (``head.json``: ``head.decode``).

An ordinal grade (Kellgren-Lawrence 0-4) can be read from its probability vector in more than one way,
and the way matters for the metric of record (Chen et al. 2019 score KL with accuracy and MAE; QWK
weighs squared distance between grades):

* ``argmax`` -- the most probable class (every task; the only rule for binary and nominal tasks, whose
  decision thresholds are applied elsewhere);
* ``median`` -- the smallest grade whose cumulative probability reaches 0.5: the grade that minimises
  the expected absolute error under the predicted distribution (ordinal tasks only);
* ``expected`` -- the expected grade ``sum_k k p_k`` rounded to the nearest grade: minimises squared
  error, i.e. cross-entropy with expected-grade decoding (ordinal tasks only).

The rule a bundle carries is chosen on held-out training data (``experiments/knee_kl224/decoding.py``),
never on the split its metrics are reported on. The reported probabilities are unchanged by the rule.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

Decoding = Literal["argmax", "median", "expected"]
DECODINGS: tuple[str, ...] = get_args(Decoding)
ORDINAL_ONLY = frozenset({"median", "expected"})


def check_decoding(rule: str, *, ordinal: bool) -> Decoding:
    """``rule`` if it is known and applies to the task (``median`` / ``expected`` need an ordinal task)."""
    if rule not in DECODINGS:
        raise ValueError(f"unknown decoding {rule!r} (known: {', '.join(DECODINGS)})")
    if rule in ORDINAL_ONLY and not ordinal:
        raise ValueError(f"decoding {rule!r} needs an ordinal task")
    return rule  # type: ignore[return-value]


def decode(probabilities: np.ndarray, rule: str = "argmax") -> np.ndarray:
    """Class index per row of ``probabilities`` ``[N, K]`` under ``rule`` (one index for a ``[K]`` vector)."""
    p = np.asarray(probabilities, dtype=np.float64)
    single = p.ndim == 1
    p = np.atleast_2d(p)
    if rule == "argmax":
        out = p.argmax(axis=1)
    elif rule == "median":
        # The tolerance keeps a cumulative sum that is 0.5 up to rounding on the lower grade.
        out = (np.cumsum(p, axis=1) >= 0.5 - 1e-9).argmax(axis=1)
    elif rule == "expected":
        grades = np.arange(p.shape[1], dtype=np.float64)
        out = np.clip(np.floor(p @ grades + 0.5), 0, p.shape[1] - 1)
    else:
        raise ValueError(f"unknown decoding {rule!r} (known: {', '.join(DECODINGS)})")
    out = out.astype(np.int64)
    return out[0] if single else out
