"""Text normalisation and whole-word keyword matching for the header strings routing reads (Series
Description (0008,103E), Study Description (0008,1030), Protocol Name (0018,1030), Code Meanings)."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str | None) -> str:
    """Upper case, accents stripped, every run of characters other than A-Z, 0-9 and ``*`` one space."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return " ".join(re.sub(r"[^A-Z0-9*]+", " ", plain).split())


def words(*alternatives: str) -> re.Pattern[str]:
    """A pattern matching any alternative as whole words: no letter may touch either end."""
    return re.compile(r"(?<![A-Z])(?:" + "|".join(alternatives) + r")(?![A-Z])")
