"""Rules 3, 4 and 7 of routing: adoption of a study's anatomy, grouping by (anatomy, kind) into the
pipelines of :data:`~orthonode.tasks.pipelines.PIPELINES`, and the reason that names what was seen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from orthonode.completion.selection.anatomy import find_anatomy, single_anatomy
from orthonode.completion.selection.facts import Route, RoutingDecision, SeriesFacts, SeriesRole, StudyFacts
from orthonode.completion.selection.kinds import INPUT_KINDS, KIND_LABEL, SeriesKind, series_kind
from orthonode.completion.selection.laterality import combine_sides, series_laterality
from orthonode.completion.selection.mri import is_localizer, mri_weighting, plane_from_orientation
from orthonode.tasks.pipelines import PIPELINES, Anatomy, ModalityKind, PipelineSpec, Plane


def _anatomy_list() -> str:
    names = [a.value for a in Anatomy]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


_WHERE_LOOKED = "Body Part Examined, series/study descriptions, protocol name or Anatomic Region Sequence"


def _distinct(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _uids(series: Sequence[SeriesFacts]) -> str:
    return ", ".join(s.series_uid for s in series)


def _modality(series: SeriesFacts) -> str:
    return series.modality.strip().upper() or "?"


def _unused_modality_notes(
    series: Sequence[SeriesFacts], kinds: dict[str, SeriesKind], study_description: str | None
) -> list[str]:
    """Notes for the CT series (accepted, no pipeline yet) and the series of any other modality."""
    notes: list[str] = []
    for kind in (SeriesKind.CT, SeriesKind.OTHER):
        by_modality: dict[str, list[SeriesFacts]] = {}
        for s in series:
            if kinds[s.series_uid] is kind:
                by_modality.setdefault(_modality(s), []).append(s)
        for modality, group in by_modality.items():
            found = {find_anatomy(s, study_description).anatomy for s in group}
            label = " ".join([*sorted(a.value for a in found if a is not None), modality])
            if kind is SeriesKind.CT:
                notes.append(
                    f"{label}: accepted by the node, but no task pipeline uses CT yet ({len(group)} series)"
                )
            else:
                notes.append(f"{label}: no task pipeline uses this modality ({len(group)} series)")
    return notes


def _assign_anatomies(
    inputs: Sequence[SeriesFacts], kinds: dict[str, SeriesKind], facts: StudyFacts, modalities: Sequence[str]
) -> tuple[dict[str, Anatomy], list[str]]:
    """Each input series' supported joint (rule 2), with adoption inside each modality kind (rule 3)."""
    findings = {s.series_uid: find_anatomy(s, facts.study_description) for s in inputs}
    anatomy_of: dict[str, Anatomy] = {}
    notes: list[str] = []
    nowhere: list[SeriesFacts] = []  # undetermined, in a kind where no series was decided
    for kind, modality_kind in INPUT_KINDS.items():
        label = KIND_LABEL[modality_kind]
        members = [s for s in inputs if kinds[s.series_uid] is kind]
        decided = [findings[s.series_uid] for s in members if findings[s.series_uid].source]
        undetermined = [s for s in members if not findings[s.series_uid].source]
        for s in members:
            anatomy = findings[s.series_uid].anatomy
            if anatomy is not None:
                anatomy_of[s.series_uid] = anatomy
        others = [f.value for f in decided if f.anatomy is None]
        for value in _distinct(others):
            notes.append(
                f"{value} {label}: Body Part Examined names no supported joint ({others.count(value)} series)"
            )
        if not undetermined:
            continue
        decided_anatomies = {f.anatomy for f in decided}
        adopted = None if None in decided_anatomies else single_anatomy({a for a in decided_anatomies if a})
        if adopted is not None:
            for s in undetermined:
                anatomy_of[s.series_uid] = adopted
            notes.append(
                f"{len(undetermined)} {label} series without a determinable anatomy adopted {adopted.value} "
                f"from the other {label} series ({_uids(undetermined)})"
            )
        elif decided:
            notes.append(
                f"ignored {len(undetermined)} {label} series without a determinable anatomy "
                f"({_uids(undetermined)}): the other {label} series do not share one supported joint"
            )
        else:
            nowhere.extend(undetermined)
    if nowhere:
        notes.append(
            f"no {_anatomy_list()} anatomy found in {_WHERE_LOOKED} for {len(nowhere)} radiograph/MRI "
            f"series (modalities: {', '.join(modalities)})"
        )
    return anatomy_of, notes


def route_study(facts: StudyFacts) -> RoutingDecision:
    """Which pipelines the complete study feeds, by the rules of the module docstring."""
    if not facts.series:
        return RoutingDecision((), "not routed: the study has no series")

    modalities = _distinct(_modality(s) for s in facts.series)
    notes: list[str] = []

    empty = [s for s in facts.series if s.instance_count <= 0]
    present = [s for s in facts.series if s.instance_count > 0]
    if empty:
        notes.append(f"skipped {len(empty)} series without instances ({_uids(empty)})")

    kinds = {s.series_uid: series_kind(s) for s in present}
    results = [s for s in present if kinds[s.series_uid] is SeriesKind.RESULT]
    inputs = [s for s in present if kinds[s.series_uid] in INPUT_KINDS]
    if results:
        seen = ", ".join(_distinct(_modality(s) for s in results))
        if len(results) == len(present):
            return RoutingDecision(
                (),
                "not routed: the study holds only result or derived objects "
                f"({len(results)} series: {seen}); structured reports, secondary captures and other "
                "results (such as the node's own results sent back) are never pipeline inputs",
            )
        notes.append(f"ignored {len(results)} result/derived series ({seen}): never pipeline inputs")
    notes.extend(_unused_modality_notes(present, kinds, facts.study_description))

    anatomy_of, anatomy_notes = _assign_anatomies(inputs, kinds, facts, modalities)
    notes.extend(anatomy_notes)

    # Group by (anatomy, modality kind), in study order.
    groups: dict[tuple[Anatomy, ModalityKind], list[SeriesFacts]] = {}
    for s in inputs:
        anatomy = anatomy_of.get(s.series_uid)
        if anatomy is not None:
            groups.setdefault((anatomy, INPUT_KINDS[kinds[s.series_uid]]), []).append(s)

    routes: list[Route] = []
    route_notes: list[str] = []
    for spec in PIPELINES:
        spec_series = groups.get((spec.anatomy, spec.modality))
        if not spec_series:
            continue
        route, detail, excluded = _build_route(spec, spec_series)
        notes.extend(excluded)
        if route is None:
            notes.append(f"{spec.name}: {detail}")
        else:
            routes.append(route)
            route_notes.append(f"{spec.name} ({detail})")

    served = {(spec.anatomy, spec.modality) for spec in PIPELINES}
    for (anatomy, modality_kind), members in groups.items():
        if (anatomy, modality_kind) not in served:
            notes.append(
                f"{anatomy.value} {KIND_LABEL[modality_kind]}: no task pipeline for this anatomy and "
                f"modality ({len(members)} series)"
            )

    if routes:
        reason = "routed: " + ", ".join(route_notes)
        return RoutingDecision(tuple(routes), "; ".join([reason, *notes]))
    if not notes:  # defensive: every path above leaves a note when nothing is routed
        notes.append(f"nothing routable (modalities: {', '.join(modalities)})")
    return RoutingDecision((), "not routed: " + "; ".join(notes))


def _build_route(spec: PipelineSpec, members: Sequence[SeriesFacts]) -> tuple[Route | None, str, list[str]]:
    """The route of one pipeline over the series of its (anatomy, kind): (route or None, detail, notes)."""
    roles: list[SeriesRole] = []
    notes: list[str] = []
    if spec.modality is ModalityKind.RADIOGRAPH:
        roles = [SeriesRole(s.series_uid, None, None, False, series_laterality(s)) for s in members]
    else:
        localizers = [s for s in members if is_localizer(s)]
        localizer_uids = {s.series_uid for s in localizers}
        unusable: list[tuple[SeriesFacts, Plane]] = []
        for s in members:
            if s.series_uid in localizer_uids:
                continue
            plane = plane_from_orientation(s.image_orientation)
            if plane is not None and plane not in spec.planes:
                unusable.append((s, plane))
                continue
            weighting, fat_suppressed = mri_weighting(s)
            roles.append(SeriesRole(s.series_uid, plane, weighting, fat_suppressed, series_laterality(s)))
        if localizers:
            notes.append(f"{spec.name}: excluded {len(localizers)} localizer series ({_uids(localizers)})")
        if unusable:
            described = ", ".join(f"{s.series_uid} {plane.value}" for s, plane in unusable)
            notes.append(
                f"{spec.name}: excluded {len(unusable)} series in a plane it does not use ({described})"
            )
    if not roles:
        return None, f"no usable series among {len(members)} {KIND_LABEL[spec.modality]} series", notes

    laterality = combine_sides(r.laterality for r in roles)
    parts = [f"{len(roles)} series"]
    if spec.modality is ModalityKind.MRI:
        planes = _distinct(r.plane.value if r.plane is not None else "unknown plane" for r in roles)
        parts.append(", ".join(planes))
    parts.append(f"laterality {laterality or 'unknown'}")
    route = Route(spec.name, spec.anatomy, spec.modality, laterality, tuple(roles))
    return route, "; ".join(parts), notes
