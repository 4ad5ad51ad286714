"""The node's Application Entity: association policy, presentation contexts and the listening server.

Association negotiation (PS3.8 §7.1): the called AE title must be ours, the calling AE title must be in
``allowed_calling_aets`` when that list is set (otherwise A-ASSOCIATE-RJ "calling AE title not
recognised"), at most ``max_associations`` at once, PDUs up to ``max_pdu``. Optional DICOM TLS per
PS3.15 Annex B.9 (BCP 195 profile: TLS 1.2 or newer), with client certificates verified against a CA
when configured.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from orthonode import metrics
from orthonode.dicom import transport
from orthonode.dicom.contexts import NON_IMAGE_SYNTAXES, TRANSFER_SYNTAXES, VERIFICATION
from orthonode.dicom.handlers import StoreHandlers
from orthonode.settings import Settings
from orthonode.sop_classes import STORAGE_CLASSES

log = logging.getLogger(__name__)


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.require_called_aet = True
    if settings.allowed_calling_aets:
        ae.require_calling_aet = list(settings.allowed_calling_aets)
    ae.add_supported_context(VERIFICATION)
    for storage in STORAGE_CLASSES:
        ae.add_supported_context(
            storage.uid, list(TRANSFER_SYNTAXES if storage.image else NON_IMAGE_SYNTAXES)
        )
    return ae


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    if tls.ca_file is not None:
        context.load_verify_locations(cafile=str(tls.ca_file))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def _log_rejections(event: Any) -> None:
    rejected = [cx for cx in event.assoc.rejected_contexts]
    if rejected:
        names = sorted({str(cx.abstract_syntax) for cx in rejected})
        metrics.CONTEXTS_REJECTED.inc(len(rejected))
        # PACS routinely propose every storage class they know: this is normal, not a warning.
        log.info(
            "association from %s: %d presentation context(s) rejected (unsupported SOP class or transfer "
            "syntax): %s",
            event.assoc.requestor.ae_title,
            len(rejected),
            ", ".join(names)[:300],
        )


#: (Result Source, Diagnostic) of an A-ASSOCIATE-RJ (PS3.8 Table 9-21) -> the metric's reason label.
REJECT_REASONS: dict[tuple[int, int], str] = {
    (0x01, 0x01): "no_reason_given",
    (0x01, 0x02): "application_context_not_supported",
    (0x01, 0x03): "calling_ae_not_recognized",
    (0x01, 0x07): "called_ae_not_recognized",
    (0x02, 0x01): "no_reason_given",
    (0x02, 0x02): "protocol_version_not_supported",
    (0x03, 0x01): "temporary_congestion",
    (0x03, 0x02): "local_limit_exceeded",
}


def reject_reason(primitive: Any) -> str:
    """The reason label of the A-ASSOCIATE-RJ that pynetdicom's ACSE sent (``acceptor.primitive``)."""
    key = (getattr(primitive, "result_source", None), getattr(primitive, "diagnostic", None))
    return REJECT_REASONS.get(key, "other")  # type: ignore[arg-type]


def _log_rejected_association(event: Any) -> None:
    reason = reject_reason(event.assoc.acceptor.primitive)
    metrics.ASSOCIATIONS_REJECTED.labels(reason=reason).inc()
    log.warning(
        "association from %s@%s rejected: %s",
        event.assoc.requestor.ae_title,
        event.assoc.requestor.address,
        reason.replace("_", " "),
    )


class StorageSCP:
    """A running SCP in background threads; :meth:`stop` drains the associations in progress."""

    def __init__(self, settings: Settings, handlers: StoreHandlers) -> None:
        self.settings = settings
        self.handlers = handlers
        self.ae = build_ae(settings)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SCP not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        # Received datasets stream to a file in the data directory's incoming/ folder instead of memory,
        # so memory stays bounded by the PDU size and the final rename never crosses filesystems.
        _config.STORE_RECV_CHUNKED_DATASET = True
        tempfile.tempdir = str(self.handlers.store.incoming)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self.handlers.on_echo),
            (evt.EVT_C_STORE, self.handlers.on_store),
            (evt.EVT_ACCEPTED, _log_rejections),
            (evt.EVT_REJECTED, _log_rejected_association),
        ]
        server = self.ae.make_server(
            (self.settings.host, self.settings.port),
            evt_handlers=handlers,
            ssl_context=server_tls_context(self.settings),
            server_class=ThreadedAssociationServer,
            request_handler=(
                transport.request_handler(self.handlers.store.received_digests)
                if self.settings.fast_transport
                else transport.BoundedReadsHandler
            ),
        )
        thread = threading.Thread(target=server.serve_forever, name="orthonode-scp", daemon=True)
        thread.start()
        self.ae._servers.append(server)  # as AE.start_server does: AE.shutdown() and server.shutdown() use it
        self._server = server
        log.info(
            "listening as %s on %s:%d%s",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            " (TLS)" if self.settings.tls else "",
        )

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server is not None else 0

    def stop(self, drain_seconds: float = 60.0) -> None:
        """Stop accepting associations, let established ones finish (bounded), abort the rest.

        A connection that never sent an A-ASSOCIATE-RQ (a port probe, a load balancer's health check) is
        not an association in progress and is not waited for.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + drain_seconds
        assocs = [t for t in server.active_associations if isinstance(t, threading.Thread)]
        drained = 0
        for assoc in assocs:
            if assoc.is_established:
                assoc.join(max(0.0, deadline - time.monotonic()))
                drained += not assoc.is_alive()
        left = [a for a in assocs if a.is_alive()]
        for assoc in left:
            assoc.abort()
        log.info("SCP stopped (%d association(s) drained, %d closed)", drained, len(left))
