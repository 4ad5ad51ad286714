"""DICOM UIDs (PS3.5 Section 9.1): the one definition of a valid one, for what the node receives and what
it writes.

A UID is at most 64 characters of digit components separated by dots, each component without a leading
zero (a lone "0" is allowed), with at least two components (a registered root and something under it:
"1" alone names nothing).
"""

from __future__ import annotations

import re

from orthonode.errors import InvalidUID

MAX_UID_LENGTH = 64
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a string that is a valid DICOM UID."""
    return (
        isinstance(value, str) and len(value) <= MAX_UID_LENGTH and UID_PATTERN.fullmatch(value) is not None
    )


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` if it is a valid DICOM UID, else raise :class:`~orthonode.errors.InvalidUID`
    (the message shows at most 80 characters of the value)."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{what} {shown} is not a valid DICOM UID (PS3.5 9.1)")
    return str(value)
