"""Debian's Chromium driven by Playwright (no browser download: ``executable_path``), and where the
screenshots of browser tests go (``TEST_ARTIFACTS_DIR``, default ``test-artifacts/`` in the checkout)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.services import require_binary

ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir(name: str) -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def chromium_page(viewport: tuple[int, int] = (1280, 900)) -> Iterator[Any]:
    """A fresh page in headless Chromium; skips (or fails under CI) without the Debian package."""
    binary = require_binary("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()
