"""The console application: :func:`create_app` builds it around one :class:`ConsoleContext`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from orthonode import __version__
from orthonode.console import api, pages
from orthonode.console.collector import IndexCollector
from orthonode.index.models import utcnow
from orthonode.metrics import MULTIPROC_ENV
from orthonode.runtime import Runtime

HERE = Path(__file__).resolve().parent


@dataclass
class ConsoleContext:
    """What the console reads from: the node's runtime, and how its embedded worker is doing."""

    rt: Runtime
    started_at: datetime = field(default_factory=utcnow)
    #: True/False when ``orthonode serve`` runs an embedded worker child (is it alive?), None otherwise.
    embedded_worker_alive: Callable[[], bool | None] = lambda: None

    @property
    def token(self) -> str | None:
        secret = self.rt.settings.web_token
        return secret.get_secret_value() if secret is not None else None


def _exposition(rt: Runtime) -> Callable[[], bytes]:
    """``/metrics``: the events of every node process on this machine (multi-process mode; this process's
    own where the mode is off, as in tests) followed by the index's state (another registry: the text
    format is a sequence of metric families, so the two concatenate)."""
    state = CollectorRegistry()
    state.register(IndexCollector(rt))

    def render() -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            events = CollectorRegistry()
            multiprocess.MultiProcessCollector(events)
        else:
            events = REGISTRY
        return generate_latest(events) + generate_latest(state)

    return render


def create_app(context: ConsoleContext) -> FastAPI:
    app = FastAPI(
        title="OrthoFoundation node",
        version=__version__,
        description="Operator console and REST API of one node: what arrived, what waits, what failed.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.console = context
    exposition = _exposition(context.rt)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
