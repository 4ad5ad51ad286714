"""A small SCU for operators and the demo: C-ECHO and C-STORE of files to a peer (PS3.4 A, B).

Files are sent as they are (``STORE_SEND_CHUNKED_DATASET``: no decode, no re-encode) in their own
transfer syntax; uncompressed files also offer the other uncompressed syntaxes.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from orthonode.dicom.contexts import UNCOMPRESSED_SYNTAXES, VERIFICATION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    ae_title: str
    calling_aet: str = "ORTHONODE"
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: not sent (no accepted presentation context, association failed)
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 or (self.status is not None and 0xB000 <= self.status <= 0xBFFF)


def _ae(peer: Peer, timeout: float) -> AE:
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _associate(ae: AE, peer: Peer, contexts: list[PresentationContext]) -> Association:
    tls_args = (peer.tls, peer.host) if peer.tls is not None else None
    return ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.ae_title, tls_args=tls_args)


def echo(peer: Peer, timeout: float = 30.0) -> int | None:
    """C-ECHO the peer; returns the status (0 = success) or None if no association."""
    ae = _ae(peer, timeout)
    assoc = _associate(ae, peer, [build_context(VERIFICATION)])
    if not assoc.is_established:
        return None
    try:
        rsp = assoc.send_c_echo()
        return int(rsp.Status) if "Status" in rsp else None
    finally:
        assoc.release()


def _contexts_for(files: Sequence[Path]) -> tuple[list[PresentationContext], dict[Path, tuple[str, str]]]:
    """Presentation contexts for ``files``; files that are not DICOM Part 10 files are left out."""
    meta: dict[Path, tuple[str, str]] = {}
    wanted: dict[str, set[str]] = {}
    for path in files:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except (InvalidDicomError, OSError, ValueError) as exc:
            log.warning("not sending %s: not a readable DICOM file (%s)", path, exc)
            continue
        if "SOPClassUID" not in ds or "TransferSyntaxUID" not in ds.file_meta:
            log.warning("not sending %s: no SOP Class UID or Transfer Syntax UID", path)
            continue
        sop_class = str(ds.SOPClassUID)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        meta[path] = (sop_class, syntax)
        syntaxes = wanted.setdefault(sop_class, set())
        syntaxes.add(syntax)
        if syntax in UNCOMPRESSED_SYNTAXES:
            syntaxes.update(UNCOMPRESSED_SYNTAXES)
    contexts = []
    for sop_class, syntaxes in sorted(wanted.items()):
        for syntax in sorted(syntaxes):  # one context per syntax, so the peer may accept any of them
            contexts.append(build_context(sop_class, [syntax]))
    if len(contexts) > 128:  # PS3.8 §9.3.2.2: at most 128 presentation contexts per association
        raise ValueError(f"{len(contexts)} presentation contexts needed; send fewer kinds of files at once")
    return contexts, meta


def send_files(peer: Peer, files: Iterable[Path], timeout: float = 60.0) -> list[SendResult]:
    """C-STORE each file over one association; returns one result per file."""
    paths = [Path(f) for f in files]
    if not paths:
        return []
    contexts, meta = _contexts_for(paths)
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = _ae(peer, timeout)
    assoc = _associate(ae, peer, contexts)
    if not assoc.is_established:
        return [SendResult(p, None, "association not established") for p in paths]
    results = [SendResult(p, None, "not a DICOM file") for p in paths if p not in meta]
    paths = [p for p in paths if p in meta]
    try:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for path in paths:
            if meta[path] not in accepted and not (
                meta[path][1] in UNCOMPRESSED_SYNTAXES
                and any((meta[path][0], s) in accepted for s in UNCOMPRESSED_SYNTAXES)
            ):
                results.append(SendResult(path, None, "no accepted presentation context"))
                continue
            rsp = assoc.send_c_store(path)
            code = int(rsp.Status) if "Status" in rsp else None
            results.append(SendResult(path, code, str(rsp.get("ErrorComment", "")) if code else ""))
            if not assoc.is_established:
                results.extend(SendResult(p, None, "association lost") for p in paths[len(results) :])
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results
