"""Deterministic UUID-derived UIDs (PS3.5 B.2) for idempotent delivery."""

from __future__ import annotations

import re
import uuid

import pytest
from pydicom.uid import UID

from orthonode.encode import uids

# PS3.5 9.1: components of digits, no leading zero unless the component is "0", dot-separated.
UID_GRAMMAR = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")
STUDY = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def _check(uid: str) -> None:
    assert len(uid) <= 64
    assert UID_GRAMMAR.match(uid), uid
    assert UID(uid).is_valid
    assert uid.startswith("2.25.")


def test_derived_uid_is_uuid5_of_joined_parts() -> None:
    # Independent computation: the namespace is the module's published constant, the rest is RFC 4122.
    namespace = uids.ORTHONODE_UID_NAMESPACE
    expected = "2.25." + str(int(uuid.uuid5(namespace, "a|b|c").hex, 16))
    assert uids.derived_uid("a", "b", "c") == expected


def test_namespace_is_fixed() -> None:
    # Changing the namespace changes every UID ever emitted; this pins it.
    assert str(uids.ORTHONODE_UID_NAMESPACE) == "5b0f1d0e-6a53-5c3f-9f0e-0f7a2c1e4d11"


@pytest.mark.parametrize(
    "uid",
    [
        uids.report_series_uid(STUDY, 1),
        uids.report_sop_uid(STUDY, 1),
        uids.key_image_series_uid(STUDY, 1),
        uids.key_image_sop_uid(STUDY, 1, "kl_grade", "L"),
        uids.key_image_sop_uid(STUDY, 1, "kl_grade", None),
        uids.device_observer_uid("OrthoFoundation KL grade", "1.0"),
        uids.tracking_uid("1.2.3", "acl_injury", "R"),
    ],
)
def test_helpers_give_valid_uids(uid: str) -> None:
    _check(uid)


def test_deterministic() -> None:
    assert uids.report_sop_uid(STUDY, 3) == uids.report_sop_uid(STUDY, "3")
    assert uids.key_image_sop_uid(STUDY, 2, "acl_injury", "R") == uids.key_image_sop_uid(
        STUDY, 2, "acl_injury", "R"
    )


def test_distinct_across_inputs() -> None:
    made = [
        uids.report_series_uid(STUDY, 1),
        uids.report_sop_uid(STUDY, 1),
        uids.key_image_series_uid(STUDY, 1),
        uids.report_sop_uid(STUDY, 2),
        uids.report_sop_uid(STUDY + "1", 1),
        uids.key_image_sop_uid(STUDY, 1, "kl_grade", "L"),
        uids.key_image_sop_uid(STUDY, 1, "kl_grade", "R"),
        uids.key_image_sop_uid(STUDY, 1, "kl_grade", None),
        uids.key_image_sop_uid(STUDY, 1, "acl_injury", "L"),
        uids.key_image_sop_uid(STUDY, 2, "kl_grade", "L"),
    ]
    assert len(set(made)) == len(made)


def test_many_uids_are_valid_and_short() -> None:
    for i in range(200):
        _check(uids.derived_uid("x", str(i)))


@pytest.mark.parametrize("parts", [(), ("",), ("a|b",), ("ok", "")])
def test_bad_parts_are_rejected(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        uids.derived_uid(*parts)


def test_separator_cannot_make_two_part_lists_collide() -> None:
    with pytest.raises(ValueError):
        uids.derived_uid("a|b", "c")
    assert uids.derived_uid("a", "b|c".replace("|", "-")) != uids.derived_uid("a", "b", "c")


def test_is_valid_uid_rejects_bad_grammar() -> None:
    assert uids.is_valid_uid("1.2.3")
    assert not uids.is_valid_uid("1.02.3")
    assert not uids.is_valid_uid("1..2")
    assert not uids.is_valid_uid("1." + "1" * 64)
