"""Each knee joint's side from the header and from its position on the film; disagreement is a note."""

from __future__ import annotations

import pytest

from orthonode.inference.laterality import (
    SideDecision,
    header_side,
    joint_sides,
    position_sides,
    reconcile,
    row_direction,
)

WIDTH = 2000
IMAGE_LEFT = (100.0, 400.0, 700.0, 1000.0)  # centre column 400
IMAGE_RIGHT = (1300.0, 400.0, 1900.0, 1000.0)  # centre column 1600


@pytest.mark.parametrize(
    ("orientation", "direction"),
    [(None, "L"), ("", "L"), ("\\", "L"), ("L\\F", "L"), ("R\\F", "R"), ("LP\\F", "L"), ("A\\F", None),
     ("F\\L", None), ("P", None)],
)  # fmt: skip
def test_row_direction(orientation: str | None, direction: str | None) -> None:
    assert row_direction(orientation) == direction


def test_header_side_values() -> None:
    assert [header_side(v) for v in ("L", " r ", "B", "U", "", None, "X")] == [
        "L",
        "R",
        "B",
        None,
        None,
        None,
        None,
    ]


def test_standard_orientation_puts_the_patients_right_on_the_images_left() -> None:
    assert position_sides([IMAGE_LEFT, IMAGE_RIGHT], WIDTH, "L\\F") == ["R", "L"]
    assert position_sides([IMAGE_RIGHT, IMAGE_LEFT], WIDTH, None) == ["L", "R"]


def test_row_direction_r_is_mirrored() -> None:
    assert position_sides([IMAGE_LEFT, IMAGE_RIGHT], WIDTH, "R\\F") == ["L", "R"]


def test_rotated_film_and_single_joint_give_no_position() -> None:
    assert position_sides([IMAGE_LEFT, IMAGE_RIGHT], WIDTH, "A\\F") == [None, None]
    assert position_sides([IMAGE_LEFT], WIDTH, "L\\F") == [None]
    assert position_sides([], WIDTH, "L\\F") == []


def test_two_joints_are_placed_relative_to_each_other_not_to_the_films_middle() -> None:
    both_left_half = [(100.0, 0.0, 300.0, 200.0), (600.0, 0.0, 900.0, 200.0)]
    assert position_sides(both_left_half, WIDTH, "L\\F") == ["R", "L"]
    same_column = [(100.0, 0.0, 300.0, 200.0), (100.0, 500.0, 300.0, 700.0)]
    assert position_sides(same_column, WIDTH, "L\\F") == [None, None]


def test_three_joints_are_placed_by_the_films_middle() -> None:
    boxes = [IMAGE_LEFT, (500.0, 0.0, 900.0, 100.0), IMAGE_RIGHT]
    assert position_sides(boxes, WIDTH, "L\\F") == ["R", "R", "L"]


def test_agreement_and_missing_sources() -> None:
    assert reconcile("L", "L") == SideDecision("L", "L", "L")
    assert reconcile("R", None) == SideDecision("R", "R", None)
    assert reconcile("B", "R") == SideDecision("R", "B", "R")
    assert reconcile(None, "L") == SideDecision("L", None, "L")
    assert reconcile("U", None) == SideDecision(None, None, None)
    assert reconcile(None, None).notes == ()


def test_disagreement_reports_no_side_and_says_why() -> None:
    decision = reconcile("L", "R")
    assert decision.side is None
    assert decision.note is not None and decision.note.startswith("header says L, joint position says R")
    assert decision.notes == (decision.note,)


def test_a_bilateral_header_with_one_joint_is_unknown_and_noted() -> None:
    decision = reconcile("B", None, joints=1)
    assert decision.side is None and decision.note is not None and "one knee joint" in decision.note


def test_joint_sides_of_a_film() -> None:
    both = joint_sides("B", [IMAGE_LEFT, IMAGE_RIGHT], WIDTH, "L\\F")
    assert [d.side for d in both] == ["R", "L"] and all(d.note is None for d in both)
    # A two-knee film labelled L: the joint on the image's left is the right knee; it says so.
    wrong = joint_sides("L", [IMAGE_LEFT, IMAGE_RIGHT], WIDTH, "L\\F")
    assert [d.side for d in wrong] == [None, "L"]
    assert wrong[0].note is not None and "header says L, joint position says R" in wrong[0].note
    # One knee: the header decides, the position is not applied.
    (single,) = joint_sides("R", [IMAGE_RIGHT], WIDTH, "L\\F")
    assert single == SideDecision("R", "R", None)
    (unknown,) = joint_sides(None, [IMAGE_RIGHT], WIDTH, "L\\F")
    assert unknown.side is None and unknown.note is None
