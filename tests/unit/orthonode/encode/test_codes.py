"""Every code of ``orthonode.encode.codes``: standard ones are in DICOM's dictionary, private ones ours."""

from __future__ import annotations

import re

import pytest
from pydicom.sr._concepts_dict import concepts as dicom_concepts  # the tables behind pydicom's codedict
from pydicom.sr.coding import Code
from support.paper import PAPER_TASKS

from orthonode.encode import codes as oc

EXPECTED_TASKS = set(PAPER_TASKS)
BINARY_TASKS = EXPECTED_TASKS - {"kl_grade"}
# Anatomy by joint, written out here (SCT values from PS3.16 CID 4 / the codedict), not taken from the module.
EXPECTED_SITE_VALUES = {
    "hip_labral_tear": "24136001",
    "supraspinatus_injury": "16982005",
    "atfl_injury": "70258002",
    "cfl_injury": "70258002",
}
KNEE_JOINT_VALUE = "49076000"
# UCUM: a curly-brace annotation alone is a valid unit meaning "1" (UCUM section 2.6 "annotations").
UCUM_ANNOTATION = re.compile(r"^\{[\x21-\x7a\x7c\x7e]+\}$")


def _dictionary_meanings(scheme: str, value: str) -> set[str]:
    meanings: set[str] = set()
    for by_code in dicom_concepts.get(scheme, {}).values():
        if value in by_code:
            meanings.add(by_code[value][0])
    return meanings


def _key(code: Code) -> tuple[str, str]:
    return (code.value, code.scheme_designator)


def test_scheme_declaration_follows_ps3_16_private_scheme_rules() -> None:
    assert oc.CODING_SCHEME_DESIGNATOR == "99ORTHO"
    assert oc.CODING_SCHEME_DESIGNATOR.startswith("99")
    item = oc.coding_scheme_identification()
    assert item.CodingSchemeDesignator == "99ORTHO"
    assert item.CodingSchemeName == "OrthoFoundation node codes"
    assert item.CodingSchemeVersion == oc.CODING_SCHEME_VERSION
    assert item.CodingSchemeResponsibleOrganization


@pytest.mark.parametrize("code", oc.all_codes(), ids=lambda c: f"{c.scheme_designator}-{c.value}")
def test_every_code_is_verified_or_ours(code: Code) -> None:
    assert code.meaning.strip(), "every code needs a meaning"
    if code.scheme_designator in {"SCT", "DCM", "RADLEX"}:
        meanings = _dictionary_meanings(code.scheme_designator, code.value)
        assert meanings, f"{code} is not in DICOM's dictionary: do not invent standard codes"
        assert code.meaning in meanings, f"{code}: meaning not one of {sorted(meanings)}"
    elif code.scheme_designator == "UCUM":
        assert code.value == "1" or UCUM_ANNOTATION.match(code.value), code
    else:
        assert code.scheme_designator == "99ORTHO", f"unexpected scheme in {code}"
        assert 1 <= len(code.value) <= 16, "Code Value is SH"
        assert len(code.meaning) <= 64, "Code Meaning is LO"


def test_private_codes_do_not_collide_with_each_other() -> None:
    private = [c for c in oc.all_codes() if c.scheme_designator == "99ORTHO"]
    by_value: dict[str, str] = {}
    for code in private:
        assert by_value.setdefault(code.value, code.meaning) == code.meaning, code.value
    assert len(private) >= len(EXPECTED_TASKS)  # one concept per task at least


def test_task_table_covers_every_task_of_the_paper() -> None:
    assert set(oc.TASK_CONCEPTS) == EXPECTED_TASKS
    concepts = [_key(t.concept) for t in oc.TASK_CONCEPTS.values()]
    assert len(set(concepts)) == len(concepts), "each task needs its own concept"


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_task_values_unique_and_in_label_order(task: str) -> None:
    codes = oc.TASK_CONCEPTS[task]
    keys = [_key(v) for v in codes.values]
    assert len(set(keys)) == len(keys)
    assert _key(codes.concept) not in keys
    if task in BINARY_TASKS:
        assert len(codes.values) == 2
        negative, positive = codes.values
        # label 0 is the negative answer, label 1 the positive one
        assert _key(negative) in {("272519000", "SCT"), ("373067005", "SCT"), ("NOPROG", "99ORTHO")}
        assert _key(positive) in {("52101004", "SCT"), ("373066001", "SCT"), ("PROG", "99ORTHO")}
    else:
        assert [v.meaning for v in codes.values] == [f"Kellgren-Lawrence grade {g}" for g in range(5)]
    assert codes.labels == tuple(v.meaning for v in codes.values)
    assert codes.value_for_label(len(codes.values) - 1) == codes.values[-1]
    with pytest.raises(IndexError):
        codes.value_for_label(len(codes.values))


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_finding_site_matches_joint(task: str) -> None:
    site = oc.TASK_CONCEPTS[task].finding_site
    assert site.scheme_designator == "SCT"
    assert site.value == EXPECTED_SITE_VALUES.get(task, KNEE_JOINT_VALUE)


def test_injury_answers_are_snomed_present_absent() -> None:
    acl = oc.TASK_CONCEPTS["acl_injury"]
    assert [_key(v) for v in acl.values] == [("272519000", "SCT"), ("52101004", "SCT")]


@pytest.mark.parametrize(
    ("letter", "value"), [("R", "24028007"), ("L", "7771000"), ("B", "51440002"), ("r", "24028007")]
)
def test_laterality_codes_round_trip(letter: str, value: str) -> None:
    code = oc.laterality_code(letter)
    assert code is not None and (code.value, code.scheme_designator) == (value, "SCT")
    assert oc.laterality_from_code(code) == letter.upper()


def test_laterality_unpaired_and_invalid() -> None:
    assert oc.laterality_code(None) is None
    assert oc.laterality_code("") is None
    assert oc.laterality_from_code(None) is None
    with pytest.raises(ValueError):
        oc.laterality_code("X")
    with pytest.raises(ValueError):
        oc.laterality_from_code(Code("1", "SCT", "not a side"))


def test_private_code_rejects_too_long_values() -> None:
    with pytest.raises(ValueError):
        oc.private_code("X" * 17, "too long")
    assert oc.private_code("X" * 16, "fits").scheme_designator == "99ORTHO"


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="kl_grade"):
        oc.task_codes("elbow")
    assert oc.task_codes("tkr") is oc.TASK_CONCEPTS["tkr"]


def test_not_graded_reasons_cover_every_view_that_is_not_graded() -> None:
    from orthonode.completion.selection import ViewKind

    not_graded = {kind.value for kind in ViewKind if kind is not ViewKind.FRONTAL}
    assert set(oc.NOT_GRADED_FOR_VIEW) == not_graded
    reasons = [*oc.NOT_GRADED_FOR_VIEW.values(), oc.NO_KNEE_JOINT]
    assert all(c.scheme_designator == oc.CODING_SCHEME_DESIGNATOR for c in reasons)
    assert len({c.value for c in reasons}) == len(reasons)
    assert {_key(c) for c in reasons} <= {_key(c) for c in oc.all_codes()}
