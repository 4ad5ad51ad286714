"""The dependency rule of DESIGN.md, checked on the source: ``orthonode`` is the runtime and owns every
format the node reads; ``heads`` and ``ssl_train`` build artifacts for it and import it, never the
reverse, and they do not import each other. Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("orthonode", "heads", "ssl_train", "conformance")
#: package -> the project packages it may import.
ALLOWED = {
    "orthonode": {"orthonode"},
    "conformance": {"conformance", "orthonode"},
    "heads": {"heads", "orthonode"},
    "ssl_train": {"ssl_train", "orthonode"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import statement in ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def package_imports() -> Counter[tuple[str, str]]:
    """(importing package, imported project package) -> number of import statements."""
    counts: Counter[tuple[str, str]] = Counter()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for _, name in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES:
                    counts[(package, top)] += 1
    return counts


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    sample = ROOT / "orthonode" / "inference" / "untrained.py"
    names = {name for _, name in _imports(sample)}
    assert "orthonode.tasks.bundle" in names  # imported inside a function there
    assert package_imports()[("heads", "orthonode")] > 0


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_dependency_rule(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in PACKAGES and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(bad)
