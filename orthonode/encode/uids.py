"""Deterministic UIDs for what the node emits, so that re-running a job re-uses the same UIDs.

A job for one study version must produce the same SOP Instance UIDs every time it runs (a retried Celery
task, a re-send after a crash): PACS then replaces or ignores a duplicate instead of filing a second report.
The UIDs are UUID-derived (PS3.5 B.2, "UUID Derived UID"): ``2.25.`` followed by the decimal value of a
name-based (SHA-1, RFC 4122 version 5) UUID of the inputs under a fixed project namespace. Such a UID is
at most 4 + 39 = 43 characters, within the 64 of the UI value representation (PS3.5 6.2, 9.1).
"""

from __future__ import annotations

import uuid

from orthonode.uid import is_valid_uid

# Fixed for all time: changing it changes every UID the node has ever emitted for a given input.
ORTHONODE_UID_NAMESPACE = uuid.UUID("5b0f1d0e-6a53-5c3f-9f0e-0f7a2c1e4d11")

UUID_DERIVED_ROOT = "2.25."
SEPARATOR = "|"


def derived_uid(*parts: str) -> str:
    """``2.25.<int(uuid5(namespace, "|".join(parts)))>`` (PS3.5 B.2).

    ``parts`` must be non-empty strings without the separator ``|`` so that different part lists can
    never join to the same name.
    """
    if not parts:
        raise ValueError("derived_uid needs at least one part")
    for part in parts:
        if not isinstance(part, str) or not part:
            raise ValueError(f"UID parts must be non-empty strings, got {part!r}")
        if SEPARATOR in part:
            raise ValueError(f"UID part {part!r} contains the separator {SEPARATOR!r}")
    value = uuid.uuid5(ORTHONODE_UID_NAMESPACE, SEPARATOR.join(parts)).int
    uid = f"{UUID_DERIVED_ROOT}{value}"
    if not is_valid_uid(uid):  # cannot happen for a 128-bit integer; kept as a guard for edits
        raise RuntimeError(f"derived an invalid UID {uid!r}")
    return uid


def _version(version: int | str) -> str:
    text = str(version)
    if not text:
        raise ValueError("study version must not be empty")
    return text


def report_series_uid(study_uid: str, version: int | str) -> str:
    """Series Instance UID of the SR of one study version."""
    return derived_uid("sr-series", study_uid, _version(version))


def report_sop_uid(study_uid: str, version: int | str) -> str:
    """SOP Instance UID of the SR of one study version."""
    return derived_uid("sr-instance", study_uid, _version(version))


def key_image_series_uid(study_uid: str, version: int | str) -> str:
    """Series Instance UID of the key images (Secondary Capture) of one study version."""
    return derived_uid("sc-series", study_uid, _version(version))


def key_image_sop_uid(
    study_uid: str, version: int | str, task: str, laterality: str | None, *qualifiers: str
) -> str:
    """SOP Instance UID of the key image of one task and side of one study version; ``qualifiers``
    tell apart the joints of one film that share a task and a side (``encode.sr_groups``)."""
    return derived_uid("sc-instance", study_uid, _version(version), task, laterality or "-", *qualifiers)


def device_observer_uid(model_name: str, model_version: str) -> str:
    """Device Observer UID (TID 1004) of one algorithm name and version."""
    return derived_uid("device-observer", model_name, model_version)


def tracking_uid(sop_uid: str, task: str, laterality: str | None, *qualifiers: str) -> str:
    """Tracking Unique Identifier (TID 1501, TID 1410) of one group in one SR; ``qualifiers`` tell apart
    groups that share a task and a side (``encode.sr_groups``); without them the UID is as before."""
    return derived_uid("tracking", sop_uid, task, laterality or "-", *qualifiers)
