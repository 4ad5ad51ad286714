"""``/api/v1``: the console's JSON API (its OpenAPI schema is at ``/api/openapi.json``).

Reads are open to whoever reaches the port (loopback by default); the actions -- retry and discard of
failed jobs and deliveries -- need the operator token (:mod:`orthonode.console.auth`). Path parameters are
untrusted input: a study UID is checked against PS3.5 §9.1 before it reaches a query, numbers are bounded,
and an unknown item is a 404 with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydicom import dcmread

from orthonode.console import render
from orthonode.console.auth import require_token
from orthonode.index import operator, reads
from orthonode.index.db import transaction
from orthonode.index.models import utcnow
from orthonode.inference.layout import (
    ENCODER_CARD_FILE,
    ENCODER_SUBDIR,
    HEAD_CARD_FILE,
    HEADS_SUBDIR,
    MODEL_CARD_FILE,
    models_root,
)
from orthonode.runtime import Runtime
from orthonode.uid import is_valid_uid

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["node"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item"}}
_ACTION: dict[int | str, dict[str, Any]] = {
    401: {"description": "The operator token is missing"},
    403: {"description": "Wrong token, or actions are disabled (no web_token configured)"},
    404: {"description": "No such job"},
}

JobId = Annotated[int, Path(ge=1, le=2**62, description="Job id (from a study or the failed list)")]
StudyUid = Annotated[str, Path(max_length=64, description="Study Instance UID")]


@dataclass(frozen=True)
class Health:
    status: str
    version: str
    index: str


@dataclass(frozen=True)
class NodeDashboard:
    """The front page: the index's counts, and what only this process knows (disk, embedded worker)."""

    index: reads.Dashboard
    free_disk_bytes: int
    min_free_bytes: int
    embedded_worker_alive: bool | None
    started_at: datetime
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class Patient:
    """Shown only with ``web_show_patient_names`` on: read from the study's first stored file."""

    name: str | None
    id: str | None


@dataclass(frozen=True)
class StudyOut:
    detail: reads.StudyDetail
    patient: Patient | None


@dataclass(frozen=True)
class ActionResult:
    job_id: int
    changed: bool
    message: str


@dataclass(frozen=True)
class InstalledModels:
    models_dir: str
    encoder: dict[str, Any] | None
    heads: tuple[dict[str, Any], ...]
    model_card: str | None


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.console.rt
    return rt


@router.get("/health")
def health(request: Request) -> Health:
    from orthonode import __version__

    try:
        with transaction(_rt(request).sessions) as session:
            reads.dashboard(session, utcnow())
        index = "ok"
    except Exception as exc:  # the page says so; the node keeps serving
        log.warning("health: index unreachable: %s", exc)
        index = "unreachable"
    return Health(status="ok" if index == "ok" else "degraded", version=__version__, index=index)


def node_dashboard(request: Request) -> NodeDashboard:
    rt, console = _rt(request), request.app.state.console
    with transaction(rt.sessions) as session:
        board = reads.dashboard(session, utcnow())
    return NodeDashboard(
        index=board,
        free_disk_bytes=rt.store.free_bytes(),
        min_free_bytes=rt.settings.min_free_bytes,
        embedded_worker_alive=console.embedded_worker_alive(),
        started_at=console.started_at,
        destinations=tuple(d.name for d in rt.settings.destinations),
    )


@router.get("/dashboard")
def dashboard(request: Request) -> NodeDashboard:
    return node_dashboard(request)


@router.get("/studies")
def studies(
    request: Request,
    state: Annotated[str | None, Query(max_length=16)] = None,
    anatomy: Annotated[str | None, Query(max_length=16)] = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=reads.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> reads.StudyPage:
    with transaction(_rt(request).sessions) as session:
        return reads.list_studies(
            session,
            state=state,
            anatomy=anatomy,
            received_from=_aware(received_from),
            received_to=_aware(received_to),
            limit=limit,
            offset=offset,
        )


def _aware(value: datetime | None) -> datetime | None:
    """A filter time without a zone is read as UTC (the index keeps UTC)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _patient(rt: Runtime, study_uid: str) -> Patient | None:
    if not rt.settings.web_show_patient_names:
        return None
    from sqlalchemy import select

    from orthonode.index.models import Instance, Study

    with transaction(rt.sessions) as session:
        rel = session.execute(
            select(Instance.rel_path)
            .join(Study, Study.id == Instance.study_id)
            .where(Study.study_uid == study_uid)
            .order_by(Instance.id)
            .limit(1)
        ).scalar()
    if rel is None:
        return None
    try:
        ds = dcmread(
            rt.store.absolute(rel), stop_before_pixels=True, specific_tags=["PatientName", "PatientID"]
        )
    except Exception as exc:
        log.warning("patient name of a study unreadable: %s", type(exc).__name__)
        return None
    name = ds.get("PatientName")
    return Patient(name=str(name) if name is not None else None, id=ds.get("PatientID"))


def study_out(request: Request, study_uid: str) -> StudyOut:
    if not is_valid_uid(study_uid):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not a valid Study Instance UID (PS3.5 9.1)")
    rt = _rt(request)
    with transaction(rt.sessions) as session:
        detail = reads.study_detail(session, study_uid)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study in the index")
    return StudyOut(detail=detail, patient=_patient(rt, study_uid))


@router.get("/studies/{study_uid}", responses=_NOT_FOUND)
def study(request: Request, study_uid: StudyUid) -> StudyOut:
    return study_out(request, study_uid)


@router.get("/jobs/{job_id}", responses=_NOT_FOUND)
def job(request: Request, job_id: JobId) -> reads.JobRow:
    with transaction(_rt(request).sessions) as session:
        row = reads.job_detail(session, job_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return row


@router.get("/failed")
def failed(request: Request) -> reads.FailedItems:
    with transaction(_rt(request).sessions) as session:
        return reads.failed_items(session)


def act(request: Request, job_id: int, verb: str, destination: str | None = None) -> ActionResult:
    """retry | discard the job (when FAILED) and its FAILED deliveries (to ``destination``, or all)."""
    rt = _rt(request)
    now = utcnow()
    with transaction(rt.sessions) as session:
        if reads.job_detail(session, job_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
        if verb == "retry":
            job = destination is None and operator.retry_job(session, job_id, now)
            deliveries = operator.retry_deliveries(session, job_id, now, destination=destination)
        else:
            job = destination is None and operator.discard_job(session, job_id, now)
            deliveries = operator.discard_deliveries(session, job_id, now, destination=destination)
    done = "re-queued" if verb == "retry" else "discarded"
    parts = [f"job {job_id} {done}"] if job else []
    if deliveries:
        parts.append(f"{deliveries} failed deliver{'y' if deliveries == 1 else 'ies'} {done}")
    message = "; ".join(parts) or f"job {job_id}: nothing failed to {verb}; nothing changed"
    log.info("console: %s", message)
    return ActionResult(job_id=job_id, changed=bool(parts), message=message)


@router.post("/jobs/{job_id}/retry", dependencies=[Depends(require_token)], responses=_ACTION)
def retry(request: Request, job_id: JobId) -> ActionResult:
    """Re-queue a FAILED job and its FAILED deliveries (``orthonode retry JOB``)."""
    return act(request, job_id, "retry")


@router.post("/jobs/{job_id}/discard", dependencies=[Depends(require_token)], responses=_ACTION)
def discard(request: Request, job_id: JobId) -> ActionResult:
    """Give up on a FAILED job and its FAILED deliveries: kept as DISCARDED, never sent."""
    return act(request, job_id, "discard")


Destination = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@router.post(
    "/jobs/{job_id}/deliveries/{destination}/retry", dependencies=[Depends(require_token)], responses=_ACTION
)
def retry_delivery(request: Request, job_id: JobId, destination: Destination) -> ActionResult:
    return act(request, job_id, "retry", destination)


@router.post(
    "/jobs/{job_id}/deliveries/{destination}/discard",
    dependencies=[Depends(require_token)],
    responses=_ACTION,
)
def discard_delivery(request: Request, job_id: JobId, destination: Destination) -> ActionResult:
    return act(request, job_id, "discard", destination)


@router.get(
    "/results/{result_id}/image.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The key image as PNG"}, **_NOT_FOUND},
)
def result_image(request: Request, result_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    rt = _rt(request)
    with transaction(rt.sessions) as session:
        found = reads.result_file(session, result_id)
    if found is None or found.kind != "sc":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no key image {result_id}")
    try:
        png = render.key_image_png(rt.store.absolute(found.rel_path))
    except (OSError, render.NotAnImage) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"key image {result_id} unreadable: {exc}") from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _json_file(path: FilePath) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.debug("unreadable card %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def installed_models(rt: Runtime) -> InstalledModels:
    """The cards of what is installed, read as JSON: no weights are loaded and torch is not imported
    (the serving process stays small). Workers validate the cards when they load the models."""
    root = models_root(rt.settings)
    encoder = _json_file(root / ENCODER_SUBDIR / ENCODER_CARD_FILE)
    fingerprint = encoder.get("fingerprint") if encoder else None
    heads = []
    for card_path in sorted((root / HEADS_SUBDIR).glob(f"*/{HEAD_CARD_FILE}"))[:100]:
        card = _json_file(card_path)
        if card is not None:
            used = fingerprint is not None and (card.get("encoder") or {}).get("fingerprint") == fingerprint
            heads.append({**card, "usable": used})
    card_path = root / MODEL_CARD_FILE
    text = card_path.read_text(errors="replace")[:200_000] if card_path.is_file() else None
    return InstalledModels(models_dir=str(root), encoder=encoder, heads=tuple(heads), model_card=text)


@router.get("/models")
def models(request: Request) -> InstalledModels:
    return installed_models(_rt(request))


@router.get("/config")
def config(request: Request) -> dict[str, Any]:
    """The running configuration, secrets hidden (the token; passwords in the database and broker URLs)."""
    return _rt(request).settings.redacted()
