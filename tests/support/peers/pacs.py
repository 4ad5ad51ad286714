"""A PACS that sends a study the way PACS do after a crash of the receiver: instance by instance on one
association, until the association is cut (the receiver killed), noting each one answered Success
(PS3.4 B.2.3: what Success acknowledged must survive)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pynetdicom import AE, _config

MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"


def store_until_cut(
    port: int,
    files: Sequence[Path],
    on_success: Callable[[Path], None],
    *,
    sop_class: str = MR,
    ae_title: str = "ORTHONODE",
    timeout: float = 10.0,
) -> None:
    """C-STORE ``files`` in order on one association to 127.0.0.1:``port``; ``on_success(path)`` for each
    answered Success. Returns when all are sent or as soon as the association fails or is cut."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="PACS")
    ae.add_requested_context(sop_class, [EXPLICIT_LITTLE])
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return
    try:
        for path in files:
            try:
                rsp = assoc.send_c_store(path)
            except Exception:  # the receiver went away mid-transfer
                return
            if not assoc.is_established:
                return
            if "Status" in rsp and int(rsp.Status) == 0:
                on_success(path)
    finally:
        if assoc.is_established:
            assoc.release()
