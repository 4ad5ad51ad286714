"""The typed hand-offs of routing: the header facts that go in (:class:`StudyFacts`, read from the
PS3.3 General Series and Image modules by the index) and the decision that comes out (:class:`RoutingDecision`
of :class:`Route`, stored on the job as JSON and read back by the worker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from orthonode.tasks.pipelines import Anatomy, ModalityKind, Plane


@dataclass(frozen=True)
class SeriesFacts:
    """What the index knows about one series (PS3.3 General Series and Image modules)."""

    series_uid: str
    modality: str  # (0008,0060) e.g. "CR", "DX", "MR", "CT", "SR", "OT"
    sop_class_uid: str
    body_part: str | None  # (0018,0015) Body Part Examined
    series_description: str | None  # (0008,103E)
    protocol_name: str | None  # (0018,1030)
    anatomic_region_codes: tuple[tuple[str, str, str], ...]  # (0008,2218): (value, scheme, meaning)
    laterality: str | None  # (0020,0060) "L"/"R" or None
    image_lateralities: tuple[str, ...]  # distinct (0020,0062) values: "L", "R", "B", "U"
    image_orientation: tuple[float, ...] | None  # (0020,0037) of the first instance
    scanning_sequence: str | None  # (0018,0020) e.g. "SE", "GR", "SE\\IR"
    sequence_name: str | None  # (0018,0024)
    instance_count: int


@dataclass(frozen=True)
class StudyFacts:
    study_uid: str
    study_description: str | None  # (0008,1030)
    series: tuple[SeriesFacts, ...]


@dataclass(frozen=True)
class SeriesRole:
    """One input series of a route."""

    series_uid: str
    plane: Plane | None  # MRI only
    weighting: str | None  # MRI only: "PD", "T1", "T2", "T2*", "STIR" or None if unknown
    fat_suppressed: bool  # MRI only
    laterality: str | None  # "L", "R", "B" or None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesRole:
        """The role as :meth:`Route.as_json` wrote it; a missing key or a bad value is a ValueError."""
        _require(data, ("series_uid", "plane", "weighting", "fat_suppressed", "laterality"), "series role")
        plane = data["plane"]
        return cls(
            series_uid=str(data["series_uid"]),
            plane=Plane(plane) if plane is not None else None,
            weighting=None if data["weighting"] is None else str(data["weighting"]),
            fat_suppressed=bool(data["fat_suppressed"]),
            laterality=_laterality(data["laterality"]),
        )


@dataclass(frozen=True)
class Route:
    """One pipeline's share of a complete study: the hand-off from routing to the worker's inference.

    Stored on the job as JSON (:meth:`as_json`) and read back typed (:meth:`from_json`), so both ends of
    the hand-off see the same object.
    """

    pipeline: str
    anatomy: Anatomy
    modality: ModalityKind
    laterality: str | None  # "L", "R", "B" (both sides present in the route) or None (unknown)
    series: tuple[SeriesRole, ...]

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types only (the enums are strings)."""
        data = asdict(self)
        data["anatomy"], data["modality"] = str(self.anatomy), str(self.modality)
        data["series"] = [
            {**role, "plane": None if role["plane"] is None else str(role["plane"])}
            for role in data["series"]
        ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Route:
        """The route :meth:`as_json` wrote; a missing key or a bad value is a ValueError naming it."""
        _require(data, ("pipeline", "anatomy", "modality", "laterality", "series"), "route")
        return cls(
            pipeline=str(data["pipeline"]),
            anatomy=Anatomy(data["anatomy"]),
            modality=ModalityKind(data["modality"]),
            laterality=_laterality(data["laterality"]),
            series=tuple(SeriesRole.from_json(role) for role in data["series"]),
        )


def _require(data: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} must be a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")


def _laterality(value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("L", "R", "B", "U"):
        raise ValueError(f"laterality must be L, R, B, U or null, not {value!r}")
    return str(value)


@dataclass(frozen=True)
class RoutingDecision:
    routes: tuple[Route, ...]
    reason: str  # why these routes, or why nothing was routed (names what was missing)

    @property
    def routed(self) -> bool:
        return bool(self.routes)
