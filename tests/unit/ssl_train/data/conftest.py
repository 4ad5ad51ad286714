"""Fixtures of the ssl_train data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from ssl_data_corpus import Corpus, build_corpus


@pytest.fixture
def ssl_corpus(tmp_path: Path) -> Corpus:
    """A tiny mixed corpus in ``tmp_path / "corpus"`` (see ``ssl_data_corpus``)."""
    return build_corpus(tmp_path / "corpus")
