"""The projection a radiograph's header names (orthonode.completion.selection.views): codes of CID 4010,
View Position, comments and descriptions, in that order; two-view plates; silence."""

from __future__ import annotations

import pytest
from pydicom.sr import _snomed_dict
from pydicom.sr.codedict import codes

from orthonode.completion.selection import (
    SOURCE_IMAGE_COMMENTS,
    SOURCE_PROCESSING_DESCRIPTION,
    SOURCE_PROTOCOL_NAME,
    SOURCE_SERIES_DESCRIPTION,
    SOURCE_STUDY_DESCRIPTION,
    SOURCE_VIEW_CODE,
    SOURCE_VIEW_POSITION,
    ViewFacts,
    ViewKind,
    decide_view,
)
from orthonode.completion.selection.views import _VIEW_CODES, kinds_in_text


def _sct(name: str) -> tuple[str, str, str]:
    code = getattr(codes.SCT, name)
    return (code.value, code.scheme_designator, code.meaning)


def test_every_view_code_is_a_cid_4010_code_or_its_snomed_rt_equivalent() -> None:
    cid_4010 = {c.value for c in codes.cid4010.concepts.values()}  # type: ignore[attr-defined]
    legacy = set(_snomed_dict.mapping["SCT"].values())
    for (scheme, value), _kind in _VIEW_CODES.items():
        if scheme == "SCT":
            assert value in cid_4010, value
        elif value != "R-10214":  # postero-anterior in older editions, not in pydicom's mapping
            assert value in legacy, value
    for (scheme, value), kind in _VIEW_CODES.items():
        if scheme == "SCT" and value in _snomed_dict.mapping["SCT"]:
            assert _VIEW_CODES.get(("SRT", _snomed_dict.mapping["SCT"][value])) in (kind, None)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("AnteroPosterior", ViewKind.FRONTAL),
        ("PosteroAnterior", ViewKind.FRONTAL),
        ("LateralProjection", ViewKind.LATERAL),
        ("RightLateral", ViewKind.LATERAL),
        ("LeftLateral", ViewKind.LATERAL),
        ("MedioLateralProjection", ViewKind.LATERAL),
        ("AxialProjection", ViewKind.AXIAL_PATELLA),
        ("Tangential", ViewKind.AXIAL_PATELLA),
        ("MedialOblique", ViewKind.OBLIQUE),
    ],
)
def test_view_code_sequence_decides_by_code(name: str, kind: ViewKind) -> None:
    decision = decide_view(ViewFacts(view_codes=(_sct(name),), view_position="AP"))
    assert (decision.kind, decision.source) == (kind, SOURCE_VIEW_CODE)
    assert decision.from_header


def test_legacy_and_unknown_codes() -> None:
    lateral_srt = ("R-10232", "SRT", "right lateral")
    assert decide_view(ViewFacts(view_codes=(lateral_srt,))).kind is ViewKind.LATERAL
    assert decide_view(ViewFacts(view_codes=(("R-10206", "SNM3", "x"),))).kind is ViewKind.FRONTAL
    by_meaning = decide_view(ViewFacts(view_codes=(("V1", "99VENDOR", "Knee lateral"),)))
    assert by_meaning.kind is ViewKind.LATERAL
    unknown = decide_view(ViewFacts(view_codes=(("V2", "99VENDOR", "Knee standing"),), view_position="PA"))
    assert (unknown.kind, unknown.source) == (ViewKind.FRONTAL, SOURCE_VIEW_POSITION)


def test_two_different_view_codes_are_a_two_view_plate() -> None:
    decision = decide_view(ViewFacts(view_codes=(_sct("AnteroPosterior"), _sct("LateralProjection"))))
    assert decision.kind is ViewKind.TWO_VIEW and decision.source == SOURCE_VIEW_CODE
    assert "frontal and lateral" in decision.reason
    assert not decision.gradeable


@pytest.mark.parametrize(
    ("position", "kind"),
    [
        ("AP", ViewKind.FRONTAL),
        ("PA", ViewKind.FRONTAL),
        ("LL", ViewKind.LATERAL),
        ("RL", ViewKind.LATERAL),
        ("LAT", ViewKind.LATERAL),
        ("lateral", ViewKind.LATERAL),
        ("RLO", ViewKind.OBLIQUE),
    ],
)
def test_view_position(position: str, kind: ViewKind) -> None:
    decision = decide_view(ViewFacts(view_position=position, series_description="KNEE SKYLINE"))
    assert (decision.kind, decision.source) == (kind, SOURCE_VIEW_POSITION)
    assert decision.gradeable is (kind is ViewKind.FRONTAL)


def test_decubitus_position_does_not_decide_and_the_reason_says_so() -> None:
    decision = decide_view(ViewFacts(view_position="RLD"))
    assert decision.kind is ViewKind.UNKNOWN and not decision.from_header
    assert "RLD" in decision.reason and decision.source == ""


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("KNEE LAT", {ViewKind.LATERAL}),
        ("Knie lateral links", {ViewKind.LATERAL}),
        ("GENOU PROFIL", {ViewKind.LATERAL}),
        ("KNEES BILATERAL STANDING", set()),
        ("Knee AP weight-bearing", {ViewKind.FRONTAL}),
        ("PA Rosenberg", {ViewKind.FRONTAL}),
        ("ROSENBERG", {ViewKind.FRONTAL}),
        ("Skyline patella", {ViewKind.AXIAL_PATELLA}),
        ("sunrise", {ViewKind.AXIAL_PATELLA}),
        ("MERCHANT VIEW", {ViewKind.AXIAL_PATELLA}),
        ("axial patella", {ViewKind.AXIAL_PATELLA}),
        ("knee oblique", {ViewKind.OBLIQUE}),
        ("tunnel view", {ViewKind.OTHER}),
        ("AP + LAT", {ViewKind.FRONTAL, ViewKind.LATERAL}),
        ("2 views on 1", {ViewKind.TWO_VIEW}),
        ("LATERALITY CHECK", set()),
        ("", set()),
    ],
)
def test_keywords(text: str, kinds: set[ViewKind]) -> None:
    assert kinds_in_text(text) == kinds


def test_per_image_text_naming_two_views_is_a_plate_but_a_description_does_not_decide() -> None:
    plate = decide_view(ViewFacts(image_comments="AP + LAT", series_description="KNEE LAT"))
    assert (plate.kind, plate.source) == (ViewKind.TWO_VIEW, SOURCE_IMAGE_COMMENTS)
    series = decide_view(ViewFacts(series_description="KNEE AP/LAT", study_description="XR KNEE LATERAL"))
    assert (series.kind, series.source) == (ViewKind.LATERAL, SOURCE_STUDY_DESCRIPTION)
    silent = decide_view(ViewFacts(series_description="KNEE AP/LAT"))
    assert silent.kind is ViewKind.UNKNOWN
    assert "Series Description (0008,103E) names frontal and lateral views" in silent.reason
    explicit = decide_view(ViewFacts(series_description="knee 2 views on one plate"))
    assert explicit.kind is ViewKind.TWO_VIEW


def test_text_sources_in_order() -> None:
    facts = ViewFacts(
        processing_description="KNEE LAT",
        series_description="KNEE AP",
        protocol_name="SKYLINE",
        study_description="XR KNEE OBL",
    )
    assert decide_view(facts).source == SOURCE_PROCESSING_DESCRIPTION
    facts = ViewFacts(series_description="KNEE AP", protocol_name="SKYLINE", study_description="OBL")
    assert (decide_view(facts).kind, decide_view(facts).source) == (
        ViewKind.FRONTAL,
        SOURCE_SERIES_DESCRIPTION,
    )
    facts = ViewFacts(series_description="KNEE", protocol_name="SKYLINE", study_description="OBL")
    decision = decide_view(facts)
    assert (decision.kind, decision.source, decision.value) == (
        ViewKind.AXIAL_PATELLA,
        SOURCE_PROTOCOL_NAME,
        "SKYLINE",
    )
    assert decision.reason == "axial patellar view from Protocol Name (0018,1030) 'SKYLINE'"


def test_a_silent_header_is_unknown() -> None:
    decision = decide_view(ViewFacts(series_description="KNEE", study_description="XR KNEE"))
    assert decision.kind is ViewKind.UNKNOWN and not decision.from_header and not decision.gradeable
    assert decision.reason.startswith("no view in the header")
