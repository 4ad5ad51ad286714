"""Results back to PACS: C-STORE (PS3.4 Annex B) of a job's SR and SC to every configured destination.

Each (job, destination) pair is one row in the index (``Delivery``) with its own state:

``PENDING`` --claim--> ``SENDING`` --all accepted--> ``SENT``
                                   --a failure-----> ``PENDING`` again after an exponential backoff, or
                                                     ``FAILED`` once ``delivery_max_attempts`` are used up
                                                     (``orthonode retry JOB`` puts it back to PENDING).

A claim is a conditional update with a lease (like a job's), renewed while the send goes on
(``orthonode.worker.heartbeat``): two workers never send the same delivery at once, however slow the
destination, and a worker that dies mid-send leaves a lease that expires, after which the delivery is due
again.
Because the state lives in the index, retries survive node restarts. Resending after such a crash sends
the same files, with the same SOP Instance UIDs (``orthonode.encode.uids``): the destination receives the
same objects again, never a second, different report.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from orthonode import metrics
from orthonode.dicom.scu import Peer, send_files
from orthonode.index import deliveries
from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction
from orthonode.index.leases import Release
from orthonode.index.models import DeliveryState, utcnow
from orthonode.retries import attempt_holder, backoff
from orthonode.runtime import Runtime
from orthonode.settings import Destination, Settings
from orthonode.worker.heartbeat import LeaseKeeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryOutcome:
    delivery_id: int
    destination: str
    state: str  # the state the attempt left: sent, pending (will retry), failed; "skipped" if not claimed
    error: str | None = None


def client_tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS for a destination marked ``tls`` (PS3.15 B.9 / BCP 195): TLS 1.2+, the peer's certificate
    verified against ``tls.ca_file`` (or the system store), our certificate presented when configured.
    DICOM TLS authenticates peers by certificate, not by host name, so the name is not checked."""
    tls = settings.tls
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls and tls.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if tls is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def peer_for(settings: Settings, destination: Destination) -> Peer:
    return Peer(
        host=destination.host,
        port=destination.port,
        ae_title=destination.ae_title,
        calling_aet=settings.ae_title,
        tls=client_tls_context(settings) if destination.tls else None,
    )


def attempt_delivery(rt: Runtime, delivery_id: int) -> DeliveryOutcome:
    """One sending attempt of one delivery, if it is due and nobody else holds it."""
    settings = rt.settings
    holder = attempt_holder()
    lease = timedelta(seconds=settings.delivery_lease_seconds)
    with transaction(rt.sessions) as session:
        delivery = deliveries.claim(session, delivery_id, holder=holder, now=utcnow(), lease=lease)
        if delivery is None:
            return DeliveryOutcome(delivery_id, "?", "skipped")
        name, job_id, attempt = delivery.destination, delivery.job_id, delivery.attempts
        files = [rt.store.absolute(r.rel_path) for r in job_rows.results(session, job_id)]
    with LeaseKeeper(rt.sessions, delivery_id, holder, lease, renew=deliveries.renew, kind="delivery"):
        error = _send(rt, name, files)  # a slow destination keeps the attempt's lease: no second sender
    retry_after = None
    if error is not None:
        retry_after = backoff(
            attempt, base=settings.delivery_backoff_seconds, cap=settings.delivery_backoff_cap_seconds
        )
    state = _record_attempt(rt, delivery_id, holder, error, retry_after)
    if state is not None:
        outcome = "sent" if error is None else _outcome(state)
        metrics.DELIVERIES.labels(destination=name, outcome=outcome).inc()
    if state is None:
        log.warning("delivery %d to %s: lease passed to another attempt meanwhile", delivery_id, name)
        return DeliveryOutcome(delivery_id, name, "skipped", error)
    if error is None:
        log.info("job %d: %d result(s) delivered to %s", job_id, len(files), name)
    elif state == DeliveryState.FAILED:
        log.error("job %d: delivery to %s failed after %d attempts: %s", job_id, name, attempt, error)
    else:
        assert retry_after is not None
        log.warning(
            "job %d: delivery to %s failed (attempt %d: %s); retry in %.0f s",
            job_id,
            name,
            attempt,
            error,
            retry_after.total_seconds(),
        )
    return DeliveryOutcome(delivery_id, name, state, error)


def _record_attempt(
    rt: Runtime, delivery_id: int, holder: str, error: str | None, retry_after: timedelta | None
) -> str | None:
    """The attempt's outcome in the index: SENT (no error), PENDING again after ``retry_after``, or
    FAILED when the attempts are used up. Returns the new state, or None if ``holder`` no longer holds
    the delivery."""
    with transaction(rt.sessions) as session:
        if error is None:
            sent = deliveries.finish(session, delivery_id, holder=holder, now=utcnow())
            return DeliveryState.SENT if sent else None
        released = deliveries.fail(
            session,
            delivery_id,
            holder=holder,
            error=error,
            now=utcnow(),
            retry_after=retry_after,
            max_attempts=rt.settings.delivery_max_attempts,
        )
    return released.state if released.outcome in (Release.RETRY, Release.FAILED) else None


def _outcome(state: str) -> str:
    return "failed" if state == DeliveryState.FAILED else "retry"


def _send(rt: Runtime, name: str, files: list[Path]) -> str | None:
    """C-STORE ``files`` to the destination called ``name``; None when every file was accepted."""
    destination = next((d for d in rt.settings.destinations if d.name == name), None)
    if destination is None:
        return f"destination {name!r} is no longer configured"
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        return f"result file(s) missing on disk: {', '.join(missing[:3])}"
    if not files:
        return None
    try:
        results = send_files(
            peer_for(rt.settings, destination), files, timeout=rt.settings.delivery_timeout_seconds
        )
    except (OSError, ssl.SSLError, RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    failed = [r for r in results if not r.ok]
    if not failed:
        return None
    first = failed[0]
    status = "not sent" if first.status is None else f"status 0x{first.status:04X}"
    summary = f"{len(failed)} of {len(results)} not accepted by {destination.ae_title}"
    return f"{summary}: {status} {first.comment}".strip()


def deliver_job(rt: Runtime, job_id: int) -> list[DeliveryOutcome]:
    """Attempt every due delivery of one job (called right after the job and by the retry task)."""
    with transaction(rt.sessions) as session:
        due = deliveries.due(session, now=utcnow(), job_id=job_id)
    return [attempt_delivery(rt, d) for d, _ in due]
