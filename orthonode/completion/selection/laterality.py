"""Rule 6 of routing: a series' side from Laterality (0020,0060) or the Image Laterality (0020,0062)
values of its instances (PS3.3 C.7.3.1, C.8.11.5), and a route's side from its series'."""

from __future__ import annotations

from collections.abc import Iterable

from orthonode.completion.selection.facts import SeriesFacts


def _side(value: str | None) -> str | None:
    side = (value or "").strip().upper()
    return side if side in ("L", "R", "B") else None


def combine_sides(sides: Iterable[str | None]) -> str | None:
    known = {s for s in sides if s is not None}
    if not known:
        return None
    if "B" in known or {"L", "R"} <= known:
        return "B"
    return next(iter(known))


def series_laterality(series: SeriesFacts) -> str | None:
    """Laterality (0020,0060) if L or R, else from the Image Laterality (0020,0062) values: one side gives
    it, B or both L and R give B, U or nothing gives None."""
    side = _side(series.laterality)
    if side is not None:
        return side
    return combine_sides(_side(v) for v in series.image_lateralities)
