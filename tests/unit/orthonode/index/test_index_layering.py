"""The index serves, it does not reach up (DESIGN.md, the dependency rule): no module of
orthonode.index imports the stages above it (completion, dicom, worker, send, inference, encode)."""

from __future__ import annotations

import ast
from pathlib import Path

import orthonode.index

ABOVE = ("completion", "dicom", "worker", "send", "inference", "encode", "console", "service", "runtime")
INDEX = Path(orthonode.index.__file__).parent


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_index_module_imports_a_stage_above_it() -> None:
    modules = sorted(INDEX.rglob("*.py"))
    assert len(modules) > 5
    bad = [
        f"{path.relative_to(INDEX)} imports {name}"
        for path in modules
        for name in sorted(_imported(path))
        if name.split(".")[:2] in (["orthonode", stage] for stage in ABOVE)
    ]
    assert bad == []


def test_the_old_repository_module_is_gone() -> None:
    assert not (INDEX / "repository.py").exists()
