"""``orthonode conformance`` and ``orthonode validate``: the commands this package adds to the node's CLI.

They reach ``orthonode``'s command line through the ``orthonode.commands`` entry points
(``pyproject.toml``), so the node never imports this package (the dependency rule of
``docs/architecture.md``); each is an :class:`orthonode.commands.Command`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orthonode.commands import Command
from orthonode.settings import Settings

STATEMENT_NAME = "conformance"


def _add_conformance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("markdown", "html"), default="markdown")
    p.add_argument(
        "--out", type=Path, help=f"write {STATEMENT_NAME}.md / .html into this folder (default: stdout)"
    )


def _conformance(args: argparse.Namespace, settings: Settings) -> int:
    from conformance.statement import statement, to_html

    text = statement(settings)
    suffix = "md"
    if args.format == "html":
        text, suffix = to_html(text), "html"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{STATEMENT_NAME}.{suffix}"
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (searched recursively)")
    p.add_argument("--quiet", action="store_true", help="print only the files that fail")


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from conformance.validate import validate_paths

    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"orthonode validate: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    reports = validate_paths(args.paths)
    for report in reports:
        if not (args.quiet and report.ok):
            print("\n".join(report.lines()))
    failed = sum(not r.ok for r in reports)
    print(f"{len(reports)} file(s), {failed} with errors")
    return 1 if failed or not reports else 0


CONFORMANCE = Command(
    "conformance", "print or write the DICOM Conformance Statement (PS3.2) generated from the code",
    _add_conformance, _conformance,
)  # fmt: skip
VALIDATE = Command(
    "validate", "check DICOM files with dciodvfy, dsrdump and a highdicom round trip (exit 1 on errors)",
    _add_validate, _validate,
)  # fmt: skip
