"""``orthonode status --watch``: the dashboard live in the terminal (rich), refreshed every few seconds.

The same reads as the web dashboard (:mod:`orthonode.index.reads`): counts of today, the queue, jobs and
deliveries by state, the workers seen, failed items, and the newest studies. ``--count N`` stops after
N refreshes (scripts and tests); otherwise Ctrl-C ends it.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from orthonode.index import reads
from orthonode.index.db import transaction
from orthonode.index.models import utcnow
from orthonode.runtime import Runtime

_STYLE = {
    "failed": "bold red",
    "done": "green",
    "sent": "green",
    "complete": "green",
    "running": "blue",
    "sending": "blue",
    "pending": "yellow",
    "queued": "yellow",
    "discarded": "dim",
}


def _state(state: str | None) -> Text:
    return Text(state or "-", style=_STYLE.get(state or "", ""))


def render(rt: Runtime, *, studies: int = 10) -> Group:
    """One frame: the dashboard and the newest ``studies``."""
    with transaction(rt.sessions) as session:
        board = reads.dashboard(session, utcnow())
        page = reads.list_studies(session, limit=studies)
        failed = reads.failed_items(session, limit=10)
    summary = Table.grid(padding=(0, 2))
    summary.add_row("received today", f"{board.instances_today} instances, {board.studies_today} studies")
    summary.add_row("queue", f"{board.queue_depth} waiting")
    style = "bold red" if board.failed_jobs + board.failed_deliveries else ""
    summary.add_row(
        "failed", Text(f"{board.failed_jobs} jobs, {board.failed_deliveries} deliveries", style=style)
    )
    summary.add_row("free disk", f"{rt.store.free_bytes() / 2**30:.1f} GiB")
    jobs = Table(title="jobs", show_edge=False)
    states = ("pending", "queued", "running", "done", "failed", "discarded")
    for state in states:
        jobs.add_column(state, justify="right")
    jobs.add_row(*(_state(s) if board.jobs_by_state.get(s) else Text("0") for s in states))
    deliveries = Table(title="deliveries", show_edge=False)
    for col in ("destination", "sent", "pending", "sending", "failed", "discarded"):
        deliveries.add_column(col)
    for name, counts in sorted(board.deliveries_by_destination.items()):
        deliveries.add_row(
            name, *(str(counts.get(s, 0)) for s in ("sent", "pending", "sending", "failed", "discarded"))
        )
    workers = Table(title="workers (last hour)", show_edge=False)
    for col in ("host", "pid", "running job", "last seen"):
        workers.add_column(col)
    for w in board.workers:
        workers.add_row(w.host, str(w.pid), str(w.running_job or "-"), w.last_seen.strftime("%H:%M:%S"))
    recent = Table(title=f"newest studies ({page.total} in all)", show_edge=False)
    recent.add_column("study", no_wrap=True, overflow="ellipsis", max_width=40)
    for col in ("v", "state", "anatomy", "inst", "job"):
        recent.add_column(col)
    for s in page.rows:
        recent.add_row(
            s.study_uid,
            str(s.version),
            _state(s.state),
            s.anatomy or "-",
            str(s.instances),
            _state(s.job_state),
        )
    parts: list[object] = [summary, jobs, deliveries, workers, recent]
    if failed.jobs:
        problems = Table(title="failed jobs", show_edge=False)
        problems.add_column("job")
        problems.add_column("error")
        for j in failed.jobs:
            problems.add_row(str(j.id), (j.error or "")[:120])
        parts.append(problems)
    return Group(Panel(Group(*parts), title=f"orthonode · {board.now:%Y-%m-%d %H:%M:%S} UTC"))  # type: ignore[arg-type]


def watch(
    rt: Runtime, *, interval: float = 2.0, count: int | None = None, console: Console | None = None
) -> int:
    console = console or Console()
    shown = 0
    with Live(render(rt), console=console, refresh_per_second=4, transient=False) as live:
        shown = 1
        while count is None or shown < count:
            time.sleep(interval)
            live.update(render(rt))
            shown += 1
    return 0
