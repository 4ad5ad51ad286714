"""Fixtures of the ssl_train tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ssl_train.data import ScanConfig, scan_corpus, write_manifest

KNEE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "knee_kl224"


@pytest.fixture(scope="module")
def png_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train + 6 val knee PNGs from the shared data (copied to a temp folder, never into the repo)."""
    if not KNEE.is_dir():
        pytest.skip(f"shared knee data not found at {KNEE}")
    root = tmp_path_factory.mktemp("knee")
    for split, grades, per in (("train", "0234", 3), ("val", "04", 3)):
        for grade in grades:
            files = sorted((KNEE / split / grade).glob("*.png"))[:per]
            target = root / "data" / split / grade
            target.mkdir(parents=True)
            for f in files:
                shutil.copy(f, target / f.name)
    result = scan_corpus(root / "data", ScanConfig(folder_split=True))
    return write_manifest(result.rows, root / "manifest.csv")
