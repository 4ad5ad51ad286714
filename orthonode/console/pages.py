"""The console's HTML pages: server-rendered from the same reads as the API, no JavaScript needed.

Dashboard ``/``, studies ``/studies`` (filters: state, anatomy, received on or after / before a date),
a study ``/studies/{uid}``, failed items ``/failed`` with retry and discard, installed models ``/models``,
and the configuration ``/config`` (secrets hidden). Actions are HTML forms that POST to ``/actions/...``
with the session cookie set by ``/signin``, then redirect back (303) with a notice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from orthonode.console import api
from orthonode.console.auth import COOKIE, may_act, require_token, token_matches
from orthonode.index import reads
from orthonode.index.db import transaction
from orthonode.index.models import DeliveryState, JobState, StudyState

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a card is not rendered


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


templates.env.filters["bytes"] = _bytes
templates.env.filters["when"] = _when
templates.env.filters["urlpart"] = lambda s: quote(str(s), safe="")


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {
            "may_act": may_act(request),
            "actions_enabled": request.app.state.console.token is not None,
            "notice": request.query_params.get("notice", "")[:300],
            **context,
        },
        status_code=status_code,
    )


@router.get("/", response_class=HTMLResponse)
def dashboard_page(request: Request) -> HTMLResponse:
    board = api.node_dashboard(request)
    return _page(request, "dashboard.html", board=board, idx=board.index)


def _day(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text[:10]), time(), tzinfo=UTC)
    except ValueError:
        return None


@router.get("/studies", response_class=HTMLResponse)
def studies_page(
    request: Request,
    state: str = "",
    anatomy: str = "",
    received_from: str = "",
    received_to: str = "",
    offset: int = 0,
) -> HTMLResponse:
    limit = 50
    start, end = _day(received_from), _day(received_to)
    with transaction(request.app.state.console.rt.sessions) as session:
        page = reads.list_studies(
            session,
            state=state[:16] or None,
            anatomy=anatomy[:16] or None,
            received_from=start,
            received_to=end,
            limit=limit,
            offset=max(0, min(offset, 10_000_000)),
        )
    filters = {"state": state, "anatomy": anatomy, "received_from": received_from, "received_to": received_to}
    query = urlencode({k: v for k, v in filters.items() if v})
    return _page(
        request,
        "studies.html",
        page=page,
        filters=filters,
        query=query,
        states=[s.value for s in StudyState],
        anatomies=["knee", "hip", "shoulder", "ankle"],
        bad_dates=[t for t, d in ((received_from, start), (received_to, end)) if t and d is None],
    )


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(request: Request, study_uid: str) -> HTMLResponse:
    try:
        out = api.study_out(request, study_uid[:64])
    except HTTPException as exc:
        return _page(request, "missing.html", status_code=exc.status_code, what=str(exc.detail))
    return _page(request, "study.html", s=out.detail.study, detail=out.detail, patient=out.patient)


@router.get("/failed", response_class=HTMLResponse)
def failed_page(request: Request) -> HTMLResponse:
    with transaction(request.app.state.console.rt.sessions) as session:
        items = reads.failed_items(session)
    return _page(request, "failed.html", items=items)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> HTMLResponse:
    installed = api.installed_models(request.app.state.console.rt)
    card_html = _markdown.render(installed.model_card) if installed.model_card else None
    return _page(request, "models.html", m=installed, card_html=card_html)


@router.get("/config", response_class=HTMLResponse)
def config_page(request: Request) -> HTMLResponse:
    return _page(request, "config.html", config=request.app.state.console.rt.settings.redacted())


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> HTMLResponse:
    return _page(request, "signin.html", failed=False)


@router.post("/signin", response_class=HTMLResponse, response_model=None)
def signin(request: Request, token: Annotated[str, Form(max_length=512)]) -> HTMLResponse | RedirectResponse:
    if not token_matches(request.app.state.console.token, token):
        return _page(request, "signin.html", status_code=status.HTTP_403_FORBIDDEN, failed=True)
    response = RedirectResponse("/failed?notice=" + quote("signed in"), status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.post("/signout")
def signout() -> RedirectResponse:
    response = RedirectResponse("/?notice=" + quote("signed out"), status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response


def _back(next_url: str, message: str) -> RedirectResponse:
    target = next_url if next_url.startswith("/") and not next_url.startswith("//") else "/failed"
    sep = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{sep}notice={quote(message)}", status.HTTP_303_SEE_OTHER)


_VERBS = {"retry", "discard"}


@router.post("/actions/jobs/{job_id}/{verb}", dependencies=[Depends(require_token)])
def job_action(
    request: Request, job_id: api.JobId, verb: str, next: Annotated[str, Form()] = "/failed"
) -> Any:
    if verb not in _VERBS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {verb!r}")
    return _back(next, api.act(request, job_id, verb).message)


@router.post("/actions/jobs/{job_id}/deliveries/{destination}/{verb}", dependencies=[Depends(require_token)])
def delivery_action(
    request: Request,
    job_id: api.JobId,
    destination: api.Destination,
    verb: str,
    next: Annotated[str, Form()] = "/failed",
) -> Any:
    if verb not in _VERBS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {verb!r}")
    return _back(next, api.act(request, job_id, verb, destination).message)


#: What a state looks like on the pages (CSS class).
STATE_CLASS: dict[str, str] = {
    JobState.FAILED: "bad",
    DeliveryState.FAILED: "bad",
    StudyState.DISCARDED: "muted",
    JobState.DISCARDED: "muted",
    JobState.DONE: "good",
    DeliveryState.SENT: "good",
    StudyState.COMPLETE: "good",
    JobState.RUNNING: "busy",
    DeliveryState.SENDING: "busy",
    JobState.QUEUED: "wait",
    JobState.PENDING: "wait",
}
templates.env.filters["state_class"] = lambda s: STATE_CLASS.get(s, "")
