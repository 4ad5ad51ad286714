"""Fixtures of the ssl_train data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.corpus import Corpus, build_corpus


@pytest.fixture
def ssl_corpus(tmp_path: Path) -> Corpus:
    """A tiny mixed corpus in ``tmp_path / "corpus"`` (see ``support.corpus``)."""
    return build_corpus(tmp_path / "corpus")
