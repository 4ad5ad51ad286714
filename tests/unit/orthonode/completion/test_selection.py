"""Tests of orthonode.completion.selection: which task pipelines a complete study feeds.

All facts are synthetic (UIDs under 2.25, no patient data).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from orthonode.completion.selection import (
    PIPELINES,
    SOURCE_ANATOMIC_REGION,
    SOURCE_BODY_PART,
    SOURCE_PROTOCOL_NAME,
    SOURCE_SERIES_DESCRIPTION,
    SOURCE_STUDY_DESCRIPTION,
    Anatomy,
    ModalityKind,
    Plane,
    Route,
    RoutingDecision,
    SeriesFacts,
    StudyFacts,
    detect_anatomy,
    is_localizer,
    mri_weighting,
    plane_from_orientation,
    route_study,
    series_laterality,
)

CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
US = "1.2.840.10008.5.1.4.1.1.6.1"

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_C45 = math.cos(math.radians(45))
OBLIQUE = (_C45, _C45, 0.0, 0.0, 0.0, -1.0)  # a coronal plane turned 45 degrees about the z axis


def mr(uid: str, **overrides: Any) -> SeriesFacts:
    """A single-frame MR series with nothing anatomical set."""
    values: dict[str, Any] = {
        "series_uid": uid,
        "modality": "MR",
        "sop_class_uid": MR,
        "body_part": None,
        "series_description": None,
        "protocol_name": None,
        "anatomic_region_codes": (),
        "laterality": None,
        "image_lateralities": (),
        "image_orientation": None,
        "scanning_sequence": None,
        "sequence_name": None,
        "instance_count": 24,
    }
    values.update(overrides)
    return SeriesFacts(**values)


def cr(uid: str, **overrides: Any) -> SeriesFacts:
    """A one-image CR series."""
    values: dict[str, Any] = {"modality": "CR", "sop_class_uid": CR, "instance_count": 1}
    values.update(overrides)
    return mr(uid, **values)


def study(*series: SeriesFacts, description: str | None = None) -> StudyFacts:
    return StudyFacts(study_uid="2.25.1000", study_description=description, series=tuple(series))


def only_route(decision: RoutingDecision) -> Route:
    assert decision.routed, decision.reason
    assert len(decision.routes) == 1, decision.reason
    return decision.routes[0]


# --- detect_anatomy: sources in priority order ---------------------------------------------------------


def test_body_part_decides_first() -> None:
    series = mr(
        "2.25.1",
        body_part="KNEE",
        series_description="HIP",
        protocol_name="SHOULDER",
        anatomic_region_codes=(("70258002", "SCT", "Ankle joint"),),
    )
    assert detect_anatomy(series, "MR ANKLE") == (Anatomy.KNEE, SOURCE_BODY_PART)


@pytest.mark.parametrize(
    ("body_part", "expected"),
    [
        ("KNEE", Anatomy.KNEE),
        ("knee", Anatomy.KNEE),
        ("PATELLA", Anatomy.KNEE),
        ("KNEE_JOINT", Anatomy.KNEE),
        ("L KNEE", Anatomy.KNEE),
        ("HIP", Anatomy.HIP),
        ("SHOULDER", Anatomy.SHOULDER),
        ("ANKLE", Anatomy.ANKLE),
        (" ANKLE ", Anatomy.ANKLE),
    ],
)
def test_body_part_terms(body_part: str, expected: Anatomy) -> None:
    assert detect_anatomy(mr("2.25.1", body_part=body_part), None) == (expected, SOURCE_BODY_PART)


@pytest.mark.parametrize(
    "generic", ["LEG", "EXTREMITY", "LOWEREXTREMITY", "LOWER LIMB", "PELVIS", "LOW_EXM", ""]
)
def test_generic_body_part_does_not_decide(generic: str) -> None:
    series = mr("2.25.1", body_part=generic, series_description="Sag PD knee")
    assert detect_anatomy(series, None) == (Anatomy.KNEE, SOURCE_SERIES_DESCRIPTION)


@pytest.mark.parametrize("other", ["FOOT", "HAND", "ELBOW", "CHEST", "LSPINE", "FEMUR"])
def test_other_specific_body_part_decides_unsupported(other: str) -> None:
    series = mr("2.25.1", body_part=other, series_description="ankle")
    assert detect_anatomy(series, "MR ANKLE") == (None, SOURCE_BODY_PART)


def test_series_description_before_study_description() -> None:
    series = mr("2.25.1", series_description="Sag PD shoulder", protocol_name="knee_routine")
    assert detect_anatomy(series, "MR HIP") == (Anatomy.SHOULDER, SOURCE_SERIES_DESCRIPTION)


def test_study_description_before_protocol_name() -> None:
    series = mr("2.25.1", series_description="sag pd fs", protocol_name="knee_routine")
    assert detect_anatomy(series, "MR HIP LEFT") == (Anatomy.HIP, SOURCE_STUDY_DESCRIPTION)


def test_protocol_name_before_codes() -> None:
    series = mr(
        "2.25.1",
        series_description="cor t1",
        protocol_name="ANKLE^routine",
        anatomic_region_codes=(("72696002", "SCT", "Knee"),),
    )
    assert detect_anatomy(series, "MRI") == (Anatomy.ANKLE, SOURCE_PROTOCOL_NAME)


def test_codes_decide_last() -> None:
    series = mr("2.25.1", body_part="LEG", anatomic_region_codes=(("72696002", "SCT", "Knee"),))
    assert detect_anatomy(series, None) == (Anatomy.KNEE, SOURCE_ANATOMIC_REGION)


def test_nothing_decides() -> None:
    assert detect_anatomy(mr("2.25.1", series_description="sag pd fs"), "MRI") == (None, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MR GENOU DROIT", Anatomy.KNEE),
        ("Knees standing AP", Anatomy.KNEE),
        ("meniscal tear", Anatomy.KNEE),
        ("ACL reconstruction", Anatomy.KNEE),
        ("patellofemoral", Anatomy.KNEE),
        ("t2_tse_knee_sag", Anatomy.KNEE),
        ("acetabular labrum", Anatomy.HIP),
        ("femoral head AVN", Anatomy.HIP),
        ("HIPS AP", Anatomy.HIP),
        ("rotator cuff", Anatomy.SHOULDER),
        ("IRM ÉPAULE", Anatomy.SHOULDER),
        ("glenohumeral arthrogram", Anatomy.SHOULDER),
        ("supraspinatus", Anatomy.SHOULDER),
        ("ATFL", Anatomy.ANKLE),
        ("talocrural joint", Anatomy.ANKLE),
        ("Talus OCD", Anatomy.ANKLE),
        ("cheville gauche", Anatomy.ANKLE),
    ],
)
def test_description_keywords(text: str, expected: Anatomy) -> None:
    assert detect_anatomy(mr("2.25.1", series_description=text), None) == (
        expected,
        SOURCE_SERIES_DESCRIPTION,
    )


@pytest.mark.parametrize(
    "text",
    ["SHIP", "WHIPLASH", "ANKLET", "CHIPS", "HIPAA", "SHOULDERING", "KNEEL", "FACL", "Cervical spine"],
)
def test_keywords_respect_word_boundaries(text: str) -> None:
    assert detect_anatomy(mr("2.25.1", series_description=text), None) == (None, "")


def test_text_naming_two_joints_does_not_decide() -> None:
    series = mr("2.25.1", series_description="standing hip to ankle", protocol_name="LONG LEG KNEE")
    assert detect_anatomy(series, None) == (Anatomy.KNEE, SOURCE_PROTOCOL_NAME)
    assert detect_anatomy(mr("2.25.1", series_description="hip to ankle"), None) == (None, "")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (("72696002", "SCT", "Knee"), Anatomy.KNEE),
        (("24136001", "SCT", "Hip joint"), Anatomy.HIP),
        (("16982005", "SCT", "Shoulder"), Anatomy.SHOULDER),
        (("70258002", "SCT", "Ankle joint"), Anatomy.ANKLE),
        (("T-15720", "SRT", "Knee joint"), Anatomy.KNEE),
        (("T-15710", "SRT", "Hip joint"), Anatomy.HIP),
        (("T-15420", "SRT", "Shoulder joint"), Anatomy.SHOULDER),
        (("T-15750", "SRT", "Ankle joint"), Anatomy.ANKLE),
        (("T-15720", "SNM3", "Knee joint"), Anatomy.KNEE),
        (("L-7", "99LOCAL", "Left knee"), Anatomy.KNEE),  # unknown code: the meaning decides
    ],
)
def test_anatomic_region_codes(code: tuple[str, str, str], expected: Anatomy) -> None:
    series = mr("2.25.1", anatomic_region_codes=(code,))
    assert detect_anatomy(series, None) == (expected, SOURCE_ANATOMIC_REGION)


def test_code_value_needs_its_scheme() -> None:
    series = mr("2.25.1", anatomic_region_codes=(("72696002", "LN", "Something else"),))
    assert detect_anatomy(series, None) == (None, "")


def test_codes_for_two_joints_do_not_decide() -> None:
    codes = (("72696002", "SCT", "Knee"), ("24136001", "SCT", "Hip joint"))
    assert detect_anatomy(mr("2.25.1", anatomic_region_codes=codes), None) == (None, "")


# --- plane_from_orientation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        (SAGITTAL, Plane.SAGITTAL),
        (CORONAL, Plane.CORONAL),
        (AXIAL, Plane.AXIAL),
        (OBLIQUE, Plane.OBLIQUE),
        # a knee sagittal angled 15 degrees (along the ACL) is still sagittal
        ((0.2588, 0.9659, 0.0, 0.0, 0.0, -1.0), Plane.SAGITTAL),
        ((0.0, 0.9659, 0.2588, 0.0, -0.2588, 0.9659), Plane.SAGITTAL),
        ((0.9848, 0.1736, 0.0, 0.0, 0.0, -1.0), Plane.CORONAL),
        ((1.0, 0.0, 0.0, 0.0, 0.8660, -0.5), Plane.AXIAL),
        ([1, 0, 0, 0, 1, 0], Plane.AXIAL),
    ],
)
def test_plane_from_orientation(iop: tuple[float, ...], expected: Plane) -> None:
    assert plane_from_orientation(iop) is expected


@pytest.mark.parametrize(
    "iop",
    [None, (), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0), (0.0,) * 6, (math.nan, 0, 0, 0, 1, 0)],
)
def test_plane_from_orientation_unusable(iop: tuple[float, ...] | None) -> None:
    assert plane_from_orientation(iop) is None


# --- mri_weighting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("PD FS SAG", ("PD", True)),
        ("COR T1", ("T1", False)),
        ("sag t2 fse fat sat", ("T2", True)),
        ("STIR", ("STIR", True)),
        ("COR STIR", ("STIR", True)),
        ("T2 STIR cor", ("STIR", True)),
        ("tirm_cor", ("STIR", True)),
        ("pd_tse_fs_sag", ("PD", True)),
        ("PDFS ax", ("PD", True)),
        ("T2FSE sag", ("T2", False)),
        ("T1W_TSE cor", ("T1", False)),
        ("PDW_SPAIR sag", ("PD", True)),
        ("T2W SPIR", ("T2", True)),
        ("T1 FATSAT post", ("T1", True)),
        ("Ax T1 fat-suppressed", ("T1", True)),
        ("mDIXON W", (None, True)),
        ("T2* GRE", ("T2*", False)),
        ("PD/T2 dual echo", (None, False)),
        ("FSE", (None, False)),
        ("STP1 T12", (None, False)),
        ("", (None, False)),
    ],
)
def test_mri_weighting(description: str, expected: tuple[str | None, bool]) -> None:
    assert mri_weighting(mr("2.25.1", series_description=description)) == expected


def test_mri_weighting_falls_back_to_protocol_and_sequence_name() -> None:
    assert mri_weighting(mr("2.25.1", series_description="sag", protocol_name="t1_se_sag")) == ("T1", False)
    assert mri_weighting(mr("2.25.1", sequence_name="T2_FS")) == ("T2", True)


def test_mri_weighting_first_source_wins_fat_sat_from_any() -> None:
    series = mr("2.25.1", series_description="PD sag", protocol_name="t2_tse_fs_sag")
    assert mri_weighting(series) == ("PD", True)


# --- localizers and laterality -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "description",
    ["3-plane loc", "3 PLANE", "Localizer", "LOCALISER", "scout", "SURVEY", "AAKnee_Scout", "loc_1"],
)
def test_localizer_by_description(description: str) -> None:
    assert is_localizer(mr("2.25.1", series_description=description))


def test_localizer_by_protocol_name() -> None:
    assert is_localizer(mr("2.25.1", series_description="sag", protocol_name="tri-plane"))


@pytest.mark.parametrize("description", ["Sag PD FS", "BLOCK", "localized lesion", "ACL"])
def test_not_localizer(description: str) -> None:
    assert not is_localizer(mr("2.25.1", series_description=description))


def test_localizer_by_image_count_only_for_single_frame_mr() -> None:
    assert is_localizer(mr("2.25.1", series_description="sag pd", instance_count=2))
    assert not is_localizer(
        mr("2.25.1", sop_class_uid=ENHANCED_MR, series_description="sag pd", instance_count=1)
    )


@pytest.mark.parametrize(
    ("laterality", "images", "expected"),
    [
        ("L", (), "L"),
        ("r", ("L",), "R"),  # series Laterality first
        (None, ("L",), "L"),
        (None, ("B",), "B"),
        (None, ("L", "R"), "B"),
        (None, ("L", "U"), "L"),
        (None, ("U",), None),
        (None, (), None),
        ("", (" R ",), "R"),
    ],
)
def test_series_laterality(laterality: str | None, images: tuple[str, ...], expected: str | None) -> None:
    assert series_laterality(cr("2.25.1", laterality=laterality, image_lateralities=images)) == expected


# --- the pipeline table ---------------------------------------------------------------------------------


def test_pipeline_table() -> None:
    names = [spec.name for spec in PIPELINES]
    assert len(names) == len(set(names))
    assert set(names) == {"knee_radiograph", "knee_mri", "hip_mri", "shoulder_mri", "ankle_mri"}
    for spec in PIPELINES:
        assert spec.name == f"{spec.anatomy.value}_{spec.modality.value}"
        assert bool(spec.planes) == (spec.modality is ModalityKind.MRI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PIPELINES[0].name = "x"  # type: ignore[misc]


# --- route_study ------------------------------------------------------------------------------------------


def knee_mri_study() -> StudyFacts:
    return study(
        mr("2.25.11", series_description="3-plane loc", body_part="KNEE", instance_count=9),
        mr(
            "2.25.12",
            series_description="Sag PD FS",
            body_part="KNEE",
            image_orientation=SAGITTAL,
            laterality="R",
        ),
        mr(
            "2.25.13",
            series_description="Cor T1",
            body_part="KNEE",
            image_orientation=CORONAL,
            laterality="R",
        ),
        mr(
            "2.25.14",
            series_description="Ax T2 fat sat",
            body_part="KNEE",
            image_orientation=AXIAL,
            laterality="R",
        ),
        description="MRI KNEE RIGHT",
    )


def test_knee_mri_with_localizer() -> None:
    decision = route_study(knee_mri_study())
    route = only_route(decision)
    assert route.pipeline == "knee_mri"
    assert (route.anatomy, route.modality, route.laterality) == (Anatomy.KNEE, ModalityKind.MRI, "R")
    assert [r.series_uid for r in route.series] == ["2.25.12", "2.25.13", "2.25.14"]
    assert [r.plane for r in route.series] == [Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL]
    assert [(r.weighting, r.fat_suppressed) for r in route.series] == [
        ("PD", True),
        ("T1", False),
        ("T2", True),
    ]
    assert decision.reason.startswith("routed: knee_mri")
    assert "localizer" in decision.reason and "2.25.11" in decision.reason


def test_bilateral_knee_radiographs() -> None:
    decision = route_study(
        study(
            cr("2.25.21", body_part="KNEE", laterality="L", series_description="Knee AP L"),
            cr("2.25.22", body_part="KNEE", laterality="R", series_description="Knee AP R"),
        )
    )
    route = only_route(decision)
    assert (route.pipeline, route.modality, route.laterality) == (
        "knee_radiograph",
        ModalityKind.RADIOGRAPH,
        "B",
    )
    assert [(r.series_uid, r.laterality) for r in route.series] == [("2.25.21", "L"), ("2.25.22", "R")]
    assert all(r.plane is None and r.weighting is None and not r.fat_suppressed for r in route.series)


def test_single_bilateral_image() -> None:
    route = only_route(route_study(study(cr("2.25.31", body_part="KNEE", image_lateralities=("B",)))))
    assert route.laterality == "B"
    assert route.series[0].laterality == "B"


@pytest.mark.parametrize(
    ("lateralities", "expected"),
    [(("L", "L"), "L"), (("R", None), "R"), ((None, None), None)],
)
def test_radiograph_route_laterality(
    lateralities: tuple[str | None, str | None], expected: str | None
) -> None:
    series = [
        cr(f"2.25.4{i}", modality="DX", sop_class_uid=DX, body_part="KNEE", laterality=lat)
        for i, lat in enumerate(lateralities)
    ]
    assert only_route(route_study(study(*series))).laterality == expected


def test_mixed_knee_mri_and_radiographs_give_two_routes() -> None:
    decision = route_study(
        study(
            mr("2.25.51", body_part="KNEE", series_description="sag pd", image_orientation=SAGITTAL),
            mr("2.25.52", body_part="KNEE", series_description="cor pd", image_orientation=CORONAL),
            cr("2.25.53", body_part="KNEE", laterality="L"),
        )
    )
    assert decision.routed
    assert sorted(r.pipeline for r in decision.routes) == ["knee_mri", "knee_radiograph"]
    by_name = {r.pipeline: r for r in decision.routes}
    assert [r.series_uid for r in by_name["knee_mri"].series] == ["2.25.51", "2.25.52"]
    assert [r.series_uid for r in by_name["knee_radiograph"].series] == ["2.25.53"]
    assert by_name["knee_radiograph"].laterality == "L"
    assert "knee_mri" in decision.reason and "knee_radiograph" in decision.reason


def test_only_results_are_not_routed() -> None:
    decision = route_study(
        study(
            mr("2.25.61", modality="SR", sop_class_uid=COMPREHENSIVE_SR, body_part="KNEE"),
            mr("2.25.62", modality="OT", sop_class_uid=SC, series_description="knee findings"),
            mr("2.25.63", modality="KO", sop_class_uid=KOS),
        )
    )
    assert not decision.routed
    assert decision.routes == ()
    assert "result" in decision.reason
    assert "SR" in decision.reason and "OT" in decision.reason


def test_secondary_capture_is_never_an_input_even_with_modality_mr() -> None:
    decision = route_study(
        study(mr("2.25.64", sop_class_uid=SC, body_part="KNEE", image_orientation=SAGITTAL))
    )
    assert not decision.routed
    assert "result" in decision.reason


def test_results_beside_images_are_ignored_and_mentioned() -> None:
    decision = route_study(
        study(
            cr("2.25.65", body_part="KNEE"),
            mr("2.25.66", modality="SR", sop_class_uid=COMPREHENSIVE_SR, body_part="KNEE"),
        )
    )
    route = only_route(decision)
    assert [r.series_uid for r in route.series] == ["2.25.65"]
    assert "ignored 1 result/derived series (SR)" in decision.reason


def test_hip_radiograph_is_not_routed() -> None:
    decision = route_study(study(cr("2.25.71", modality="DX", sop_class_uid=DX, body_part="HIP")))
    assert not decision.routed
    assert "hip radiograph: no task pipeline for this anatomy and modality" in decision.reason


@pytest.mark.parametrize(
    ("anatomy", "pipeline"), [("HIP", "hip_mri"), ("SHOULDER", "shoulder_mri"), ("ANKLE", "ankle_mri")]
)
def test_other_mri_pipelines(anatomy: str, pipeline: str) -> None:
    route = only_route(route_study(study(mr("2.25.72", body_part=anatomy, image_orientation=CORONAL))))
    assert (route.pipeline, route.anatomy.value) == (pipeline, anatomy.lower())


def test_ct_only_is_not_routed() -> None:
    decision = route_study(study(mr("2.25.81", modality="CT", sop_class_uid=CT, body_part="KNEE")))
    assert not decision.routed
    assert "knee CT" in decision.reason
    assert "no task pipeline uses CT" in decision.reason


def test_other_modality_is_not_routed() -> None:
    decision = route_study(study(mr("2.25.82", modality="US", sop_class_uid=US, series_description="knee")))
    assert not decision.routed
    assert "knee US: no task pipeline uses this modality" in decision.reason


def test_no_anatomy_anywhere() -> None:
    decision = route_study(
        study(
            mr("2.25.91", series_description="sag pd fs", image_orientation=SAGITTAL),
            mr("2.25.92", series_description="cor t1", image_orientation=CORONAL),
            mr("2.25.93", modality="CT", sop_class_uid=CT),
            description="MRI",
        )
    )
    assert not decision.routed
    reason = decision.reason
    assert reason.startswith("not routed:")
    assert "no knee, hip, shoulder or ankle anatomy found" in reason
    for place in ("Body Part Examined", "descriptions", "protocol name", "Anatomic Region Sequence"):
        assert place in reason
    assert "modalities: MR, CT" in reason


def test_series_without_body_part_adopts_the_study_anatomy() -> None:
    decision = route_study(
        study(
            mr("2.25.101", body_part="KNEE", series_description="sag pd fs", image_orientation=SAGITTAL),
            mr("2.25.102", body_part="KNEE", series_description="cor pd", image_orientation=CORONAL),
            mr("2.25.103", series_description="ax t2", image_orientation=AXIAL),
        )
    )
    route = only_route(decision)
    assert [r.series_uid for r in route.series] == ["2.25.101", "2.25.102", "2.25.103"]
    assert "adopted knee" in decision.reason and "2.25.103" in decision.reason


def test_no_adoption_when_the_other_series_disagree() -> None:
    decision = route_study(
        study(
            mr("2.25.111", body_part="KNEE", image_orientation=SAGITTAL),
            mr("2.25.112", body_part="HIP", image_orientation=CORONAL),
            mr("2.25.113", series_description="ax t2", image_orientation=AXIAL),
        )
    )
    assert sorted(r.pipeline for r in decision.routes) == ["hip_mri", "knee_mri"]
    assert all("2.25.113" not in [s.series_uid for s in r.series] for r in decision.routes)
    assert "ignored 1 MRI series without a determinable anatomy (2.25.113)" in decision.reason


def test_no_adoption_across_modality_kinds() -> None:
    decision = route_study(study(mr("2.25.114", body_part="KNEE"), cr("2.25.115")))
    route = only_route(decision)
    assert route.pipeline == "knee_mri"
    assert "no knee, hip, shoulder or ankle anatomy found" in decision.reason


def test_no_adoption_beside_an_unsupported_body_part() -> None:
    decision = route_study(study(cr("2.25.116", body_part="FOOT"), cr("2.25.117", series_description="AP")))
    assert not decision.routed
    assert "FOOT radiograph: Body Part Examined names no supported joint" in decision.reason


def test_minority_anatomy_is_routed_by_its_own_anatomy() -> None:
    decision = route_study(
        study(
            mr("2.25.121", body_part="KNEE", image_orientation=SAGITTAL),
            mr("2.25.122", body_part="KNEE", image_orientation=CORONAL),
            mr("2.25.123", body_part="KNEE", image_orientation=AXIAL),
            mr("2.25.124", body_part="HIP", image_orientation=CORONAL),
        )
    )
    by_name = {r.pipeline: r for r in decision.routes}
    assert set(by_name) == {"knee_mri", "hip_mri"}
    assert [r.series_uid for r in by_name["hip_mri"].series] == ["2.25.124"]
    assert len(by_name["knee_mri"].series) == 3


def test_mri_without_orientation_is_kept_with_plane_none() -> None:
    route = only_route(route_study(study(mr("2.25.131", body_part="KNEE", series_description="sag pd"))))
    assert route.series[0].plane is None
    assert "unknown plane" in route_study(study(mr("2.25.131", body_part="KNEE"))).reason


def test_oblique_series_excluded_from_knee_but_kept_for_shoulder() -> None:
    knee = route_study(
        study(
            mr("2.25.141", body_part="KNEE", image_orientation=SAGITTAL),
            mr("2.25.142", body_part="KNEE", image_orientation=OBLIQUE),
        )
    )
    assert [r.series_uid for r in only_route(knee).series] == ["2.25.141"]
    assert "2.25.142 oblique" in knee.reason
    shoulder = only_route(route_study(study(mr("2.25.143", body_part="SHOULDER", image_orientation=OBLIQUE))))
    assert shoulder.series[0].plane is Plane.OBLIQUE


def test_only_localizers_are_not_routed() -> None:
    decision = route_study(
        study(mr("2.25.151", body_part="KNEE", series_description="localizer", instance_count=3))
    )
    assert not decision.routed
    assert "knee_mri: no usable series" in decision.reason
    assert "localizer" in decision.reason


def test_enhanced_mr_single_instance_is_an_input() -> None:
    series = mr(
        "2.25.161", sop_class_uid=ENHANCED_MR, body_part="ANKLE", image_orientation=AXIAL, instance_count=1
    )
    route = only_route(route_study(study(series)))
    assert route.pipeline == "ankle_mri"


def test_kind_from_modality_when_sop_class_unknown() -> None:
    route = only_route(route_study(study(cr("2.25.171", modality="DX", sop_class_uid="", body_part="KNEE"))))
    assert route.modality is ModalityKind.RADIOGRAPH
    route = only_route(route_study(study(mr("2.25.172", sop_class_uid="", body_part="KNEE"))))
    assert route.modality is ModalityKind.MRI


def test_dx_for_processing_is_a_radiograph() -> None:
    route = only_route(
        route_study(study(cr("2.25.173", modality="DX", sop_class_uid=DX_PROCESSING, body_part="KNEE")))
    )
    assert route.pipeline == "knee_radiograph"


def test_anatomy_from_study_description() -> None:
    route = only_route(route_study(study(cr("2.25.181"), cr("2.25.182"), description="XR KNEE 2 VIEWS")))
    assert len(route.series) == 2


def test_empty_study_and_empty_series() -> None:
    assert route_study(study()) == RoutingDecision((), "not routed: the study has no series")
    decision = route_study(study(cr("2.25.191", body_part="KNEE", instance_count=0)))
    assert not decision.routed
    assert "without instances" in decision.reason


def test_routes_follow_the_pipeline_table_order() -> None:
    decision = route_study(
        study(
            mr("2.25.201", body_part="ANKLE", image_orientation=SAGITTAL),
            mr("2.25.202", body_part="KNEE", image_orientation=SAGITTAL),
            cr("2.25.203", body_part="KNEE"),
        )
    )
    order = [spec.name for spec in PIPELINES]
    names = [r.pipeline for r in decision.routes]
    assert names == sorted(names, key=order.index)
    assert route_study(knee_mri_study()) == route_study(knee_mri_study())  # deterministic


def test_route_round_trips_through_json_typed() -> None:
    """The hand-off to the worker: ``Route.as_json`` (stored on the job) and ``Route.from_json`` (read by
    the worker) give back the same typed route; malformed stored routes are refused by name."""
    import json

    from orthonode.completion.selection import SeriesRole

    route = Route(
        "knee_mri", Anatomy.KNEE, ModalityKind.MRI, "B",
        (SeriesRole("1.2.3", Plane.SAGITTAL, "PD", True, "L"), SeriesRole("1.2.4", None, None, False, None)),
    )  # fmt: skip
    stored = json.loads(json.dumps(route.as_json()))
    assert stored["series"][0]["plane"] == "sagittal" and stored["anatomy"] == "knee"
    assert Route.from_json(stored) == route
    with pytest.raises(ValueError, match="route lacks series"):
        Route.from_json({k: v for k, v in stored.items() if k != "series"})
    with pytest.raises(ValueError, match="laterality must be"):
        Route.from_json({**stored, "laterality": "left"})
    with pytest.raises(ValueError, match="'elbow' is not a valid Anatomy"):
        Route.from_json({**stored, "anatomy": "elbow"})
