"""``orthonode`` command line: serve | worker | status | echo | send | retry | migrate | models | demo, and
the commands installed packages add (``orthonode.commands``: conformance, validate).

Exit codes: 0 success, 1 operation failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orthonode import __version__
from orthonode.commands import Command, installed_commands
from orthonode.errors import OrthonodeError
from orthonode.logging import configure as configure_logging
from orthonode.settings import Settings, load_settings

log = logging.getLogger(__name__)


def _parser(extra: list[Command] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orthonode", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--config", type=Path, help="TOML configuration file (ORTHONODE_* variables override it)")
    p.add_argument("--version", action="version", version=f"orthonode {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="receive studies (SCP), complete and queue them; runs until SIGTERM")

    w = sub.add_parser("worker", help="run a Celery worker that processes queued jobs")
    w.add_argument("--concurrency", type=int, help="parallel jobs (default: worker_concurrency)")
    w.add_argument("--pool", choices=["solo", "prefork", "threads"], help="default: worker_pool")

    s = sub.add_parser("status", help="studies and jobs in the index")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.add_argument("--limit", type=int, default=200)
    s.add_argument("--watch", action="store_true", help="the dashboard live in the terminal (Ctrl-C ends)")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (--watch)")
    s.add_argument("--count", type=int, default=None, help="stop after this many refreshes (--watch)")

    for name, text in (("echo", "C-ECHO a DICOM peer"), ("send", "C-STORE files to a DICOM peer")):
        c = sub.add_parser(name, help=text)
        c.add_argument("host")
        c.add_argument("port", type=int)
        c.add_argument("--aet", default="ANY-SCP", help="called AE title (the peer's)")
        c.add_argument("--calling-aet", help="our AE title (default: ae_title from the settings)")
        c.add_argument("--timeout", type=float, default=30.0)
        if name == "send":
            c.add_argument(
                "paths", nargs="+", type=Path, help="DICOM files or folders (searched recursively)"
            )

    r = sub.add_parser("retry", help="put a failed job, or its failed deliveries, back in the queue")
    r.add_argument("job", type=int)

    m = sub.add_parser("models", help="the encoder and the task heads installed in models_dir")
    m.add_argument("--json", action="store_true", help="one JSON object on stdout")

    sub.add_parser("migrate", help="create or upgrade the index schema")

    d = sub.add_parser("demo", help="show a study going through the node (temporary data directory)")
    d.add_argument("--images", type=Path, help="folder of knee radiograph PNGs to build the study from")
    d.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    for command in extra or []:
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return p


def _watch(settings: Settings, interval: float, count: int | None) -> int:
    from orthonode.console.watch import watch
    from orthonode.runtime import Runtime

    rt = Runtime(settings)
    try:
        rt.require_current_schema()
        return watch(rt, interval=max(0.2, interval), count=count)
    finally:
        rt.close()


def _share_metrics(settings: Settings, *, fresh: bool) -> None:
    """Processes of one node share their Prometheus events through ``data_dir/metrics`` (see
    ``orthonode.metrics``): set before prometheus-client is first imported, inherited by child
    processes. The serving process starts it ``fresh``: files of an earlier run's processes would
    be counted again."""
    path = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.data_dir / "metrics")))
    path.mkdir(parents=True, exist_ok=True)
    if fresh:
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)


def _status(settings: Settings, as_json: bool, limit: int) -> int:
    from orthonode.index import reads
    from orthonode.index.db import transaction
    from orthonode.runtime import Runtime

    rt = Runtime(settings)
    try:
        rt.require_current_schema()
        with transaction(rt.sessions) as session:
            snap = reads.status_snapshot(session, limit=limit)
    finally:
        rt.close()
    if as_json:
        json.dump(snap, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"{'STUDY UID':<64} {'VER':>3} {'INST':>5} {'STATE':<10} ANATOMY")
    for st in snap["studies"]:
        print(
            f"{st['study_uid']:<64} {st['version']:>3} {st['instances']:>5} {st['state']:<10} "
            f"{st['anatomy'] or '-'}"
        )
    print()
    print(f"{'JOB':>5} {'STATE':<8} {'TRIES':>5}  STUDY UID / DETAIL")
    for job in snap["jobs"]:
        print(
            f"{job['id']:>5} {job['state']:<8} {job['attempts']:>5}  "
            f"{job['study_uid']} v{job['study_version']}"
        )
        if job["error"] or job["detail"]:
            print(f"{'':>22}{job['error'] or job['detail']}")
    return 0


def _files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise OrthonodeError(f"no such file or folder: {path}")
    return out


def _scu(args: argparse.Namespace, settings: Settings) -> int:
    from orthonode.dicom.scu import Peer, echo, send_files

    peer = Peer(args.host, args.port, args.aet, args.calling_aet or settings.ae_title)
    if args.command == "echo":
        code = echo(peer, args.timeout)
        print("C-ECHO: " + ("no association" if code is None else f"status 0x{code:04X}"))
        return 0 if code == 0 else 1
    results = send_files(peer, _files(args.paths), args.timeout)
    failed = [r for r in results if not r.ok]
    for r in failed:
        status = "not sent" if r.status is None else f"0x{r.status:04X}"
        print(f"FAILED {r.path}: {status} {r.comment}".rstrip())
    print(f"sent {len(results) - len(failed)} of {len(results)} file(s)")
    return 0 if not failed else 1


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from orthonode.runtime import Runtime
    from orthonode.worker import celery_app

    rt = Runtime(settings)
    rt.migrate()  # a worker may be the first process to reach a new database
    if settings.inference_threads:  # the process-wide torch setting belongs to the worker's start-up
        import torch

        torch.set_num_threads(settings.inference_threads)
    app = celery_app.make_app(rt)

    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--pool={args.pool or settings.worker_pool}",
        f"--concurrency={args.concurrency or settings.worker_concurrency}",
        f"--queues={settings.queue_name}",
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.broker_is_local:
        argv.append("--without-heartbeat")
    app.worker_main(argv)
    return 0


def _retry(settings: Settings, job_id: int) -> int:
    from orthonode.index import operator
    from orthonode.index.db import transaction
    from orthonode.index.models import utcnow
    from orthonode.runtime import Runtime

    rt = Runtime(settings)
    try:
        rt.require_current_schema()
        with transaction(rt.sessions) as session:
            job = operator.retry_job(session, job_id, utcnow())
            deliveries = operator.retry_deliveries(session, job_id, utcnow())
    finally:
        rt.close()
    if job:
        print(f"job {job_id} re-queued")
    if deliveries:
        print(f"job {job_id}: {deliveries} failed deliver{'y' if deliveries == 1 else 'ies'} re-queued")
    if not job and not deliveries:
        print(f"job {job_id} has no failed job or delivery; nothing changed")
    return 0 if job or deliveries else 1


def _models(settings: Settings, as_json: bool) -> int:
    from orthonode.inference import pipeline
    from orthonode.inference.layout import models_root

    root = models_root(settings)
    try:
        models = pipeline.Models.load(root, settings)
    except pipeline.NoModelInstalled as exc:
        print(f"no model installed: {exc}", file=sys.stderr)
        return 1
    card = models.encoder.card
    listing = {
        "models_dir": str(root),
        "encoder": {
            "name": card.name,
            "version": card.version,
            "arch": card.arch,
            "img_size": card.img_size,
            "fingerprint": models.encoder.fingerprint,
        },
        "heads": models.describe(),
    }
    if as_json:
        print(json.dumps(listing, indent=2))
        return 0
    print(f"models: {root}")
    print(f"encoder: {card.name} {card.version} ({card.arch}, {card.img_size} px)")
    print(f"  fingerprint: {models.encoder.fingerprint}")
    for line in models.describe() or ["(no head installed)"]:
        print(f"  head: {line}")
    return 0


BUILT_IN = {"serve", "worker", "status", "echo", "send", "retry", "models", "migrate", "demo"}


def main(argv: Sequence[str] | None = None) -> int:
    extra = installed_commands(BUILT_IN)
    args = _parser(extra).parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level)
        if args.command in ("serve", "worker"):
            _share_metrics(settings, fresh=args.command == "serve")
        if args.command == "serve":
            from orthonode.service import serve

            return serve(settings, args.config)
        if args.command == "worker":
            return _worker(args, settings)
        if args.command == "status":
            if args.watch:
                return _watch(settings, args.interval, args.count)
            return _status(settings, args.json, args.limit)
        if args.command in ("echo", "send"):
            return _scu(args, settings)
        if args.command == "retry":
            return _retry(settings, args.job)
        if args.command == "models":
            return _models(settings, args.json)
        if args.command == "migrate":
            from orthonode.runtime import Runtime

            rt = Runtime(settings)
            try:
                rt.migrate()
            finally:
                rt.close()
            print("index schema is up to date")
            return 0
        if args.command == "demo":
            from orthonode.demo import run_demo

            return run_demo(images=args.images, keep=args.keep)
        for command in extra:
            if args.command == command.name:
                return command.run(args, settings)
    except OrthonodeError as exc:
        print(f"orthonode: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        from orthonode.index.db import unreachable  # sqlalchemy is loaded by then, or this is no DB error

        reason = unreachable(exc)
        if reason is None:
            raise
        # One line, not a stack: the operator (or `orthonode serve`, restarting its worker) retries.
        print(f"orthonode: the index database is unavailable ({reason})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
