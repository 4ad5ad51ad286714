"""Shared by the hostile-input suites (``tests/fuzz``): how many examples to run, and what was tried.

``FUZZ_EXAMPLES`` (environment) sets the examples per property: a few hundred in all in ``make test``,
10,000 and more in the ``slow`` run. ``FUZZ_SEED`` set: hypothesis draws afresh (default: derandomised,
the same inputs every run).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from pynetdicom import AE

#: inputs tried, by suite and outcome (printed by each module's summary test)
TRIED: Counter[str] = Counter()


def examples(default: int) -> int:
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def derandomize() -> bool:
    return os.environ.get("FUZZ_SEED") is None


def alive(node: Any, attempts: int = 6) -> bool:
    """C-ECHO succeeds; a few tries a second apart, because the previous hostile connection may still
    hold its association slot until the fuzz node's 3 s ACSE / network timeout frees it."""
    for _ in range(attempts):
        if _echo(node):
            return True
        time.sleep(1.0)
    return False


def _echo(node: Any) -> bool:
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        return False
    try:
        rsp = assoc.send_c_echo()
        return "Status" in rsp and int(rsp.Status) == 0
    finally:
        assoc.release()
