"""The size rule of docs/architecture.md, checked on the source: no module of the four packages over 600
lines and no function over 80 (Alembic migrations' ``upgrade`` / ``downgrade`` excepted: a schema is
one list). A module or function that grows past them is split by job, as the rest were."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("orthonode", "heads", "ssl_train", "conformance")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sources() if (n := p.read_text().count("\n")) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules by job: {long}"


def test_no_function_over_80_lines() -> None:
    long = {}
    for path in _sources():
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert not long, f"split these functions: {long}"


def test_the_rule_sees_the_code() -> None:
    assert len(_sources()) > 100  # the packages were found: the checks above are not vacuous
