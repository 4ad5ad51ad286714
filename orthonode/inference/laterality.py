"""The side of each knee joint on a film: from the header and from the joint's position (issue 14).

The header's side is Image Laterality (0020,0062), else the series' Laterality (0020,0060) (PS3.3
C.7.6.1, C.7.3.1; :attr:`Radiograph.laterality`): ``L``, ``R``, ``B`` (both) or ``U`` (unpaired).

The position's side needs Patient Orientation (0020,0020) (PS3.3 C.7.6.1.1.1): its first value is the
patient direction of the rows, the direction in which the column index increases. ``L`` (the standard
display of a frontal film, the patient facing the viewer) puts the patient's right on the image's left;
``R`` is the mirror. A first value that is not L or R, or that starts with A, P, H or F (a rotated film),
says nothing about sides. Absent Patient Orientation, the standard orientation is assumed (the issue's
rule: on a frontal film read in the standard orientation the patient's right is on the image's left).

Position applies only to frontal films with two joints or more: on a film with one knee, where the joint
lies says nothing about which knee it is. With exactly two joints the one nearer the image's left edge
(smaller box centre column) is on the left, whatever the film's centre; with three or more (a false
detection among them), each joint is placed by the film's middle column.

Reconciliation (:func:`reconcile`): header L or R and the position agree, or there is no position:
the header's side. Header B, U or absent: the position's side. Header and position disagree: no side
(``None``) and a note for the report ("header says L, joint position says R"): the report says so rather
than guess. One joint on a film whose header says B: no side, and a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), SCOORD column/row (ImageRegion.box)

_STANDARD_ROW_DIRECTION = "L"


@dataclass(frozen=True)
class SideDecision:
    """The side to report for one joint, what each source said, and a note when they disagree."""

    side: str | None  # "L", "R" or None (unknown, or header and position disagree)
    header: str | None  # "L", "R", "B" or None
    position: str | None  # "L", "R" or None (not applied, or orientation says nothing)
    note: str | None = None  # for Finding.notes

    @property
    def notes(self) -> tuple[str, ...]:
        return (self.note,) if self.note else ()


def header_side(value: str | None) -> str | None:
    """A header laterality value as ``L``, ``R``, ``B`` or None (``U``, empty, anything else)."""
    side = (value or "").strip().upper()
    return side if side in ("L", "R", "B") else None


def row_direction(patient_orientation: str | None) -> str | None:
    """``L`` or ``R``: the patient direction in which columns increase; None when it is not left/right.

    ``patient_orientation`` is Patient Orientation as :class:`Radiograph` holds it (``L\\F``); absent or
    empty gives the standard ``L``.
    """
    if patient_orientation is None or not patient_orientation.strip("\\ "):
        return _STANDARD_ROW_DIRECTION
    first = patient_orientation.split("\\")[0].strip().upper()
    return first[0] if first[:1] in ("L", "R") else None


def _side_of_column(x: float, middle: float, direction: str) -> str | None:
    if x == middle:
        return None
    on_image_left = x < middle
    # Row direction L: columns run toward the patient's left, so the image's left is the patient's right.
    if direction == "L":
        return "R" if on_image_left else "L"
    return "L" if on_image_left else "R"


def position_sides(
    boxes: Sequence[Box], image_width: int, patient_orientation: str | None
) -> list[str | None]:
    """The side each joint's position implies (rules of the module docstring); None where none."""
    direction = row_direction(patient_orientation)
    if direction is None or len(boxes) < 2:
        return [None] * len(boxes)
    centres = [(b[0] + b[2]) / 2.0 for b in boxes]
    middle = (centres[0] + centres[1]) / 2.0 if len(boxes) == 2 else image_width / 2.0
    return [_side_of_column(c, middle, direction) for c in centres]


def reconcile(header: str | None, position: str | None, joints: int = 2) -> SideDecision:
    """The side to report from the header's and the position's (rules of the module docstring)."""
    said = header_side(header)
    if said in ("L", "R"):
        if position is None or position == said:
            return SideDecision(said, said, position)
        return SideDecision(
            None, said, position, f"header says {said}, joint position says {position}: side not reported"
        )
    if position is not None:
        return SideDecision(position, said, position)
    if said == "B" and joints == 1:
        return SideDecision(
            None, said, None, "header says B (both knees), one knee joint found: side unknown"
        )
    return SideDecision(None, said, None)


def joint_sides(
    header: str | None, boxes: Sequence[Box], image_width: int, patient_orientation: str | None
) -> list[SideDecision]:
    """One :class:`SideDecision` per joint box of one frontal film, in the order of ``boxes``.

    ``header`` is the film's laterality (:attr:`Radiograph.laterality`), ``image_width`` its Columns,
    ``patient_orientation`` :attr:`Radiograph.patient_orientation`.
    """
    positions = position_sides(boxes, image_width, patient_orientation)
    return [reconcile(header, p, len(boxes)) for p in positions]
