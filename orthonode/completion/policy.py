"""When is a study complete? A pure function of the study's arrival times and the clock.

DICOM has no "end of study" message, so a receiver decides by quiet periods, as mercure (series, study
and force timeouts) and Orthanc (StableAge) do:

* a **series** is complete when no instance of it arrived for ``series_quiet``;
* the **study** is complete when every series is complete *and* no instance of the study arrived for
  ``study_quiet`` (so a study waits while any of its series is still arriving);
* if the study version is still incomplete ``force_after`` after its first instance (instances keep
  trickling in), the **force action** applies: ``proceed`` (complete it now), ``discard`` (give up on
  it, no job), or ``keep_waiting``.

**Downtime is not quiet time.** While the node is down it cannot see what a sender tries to store, so quiet
periods are measured from the later of the last arrival and ``listening_since`` (when the receiver that
decides started listening): a PACS that resends after a crash is not overtaken by a report on the part
that arrived before it. (A resent identical instance also counts as an arrival: see
``orthonode.index.studies.record_instance``.)

No I/O and no clock of its own: the sweeper passes ``now``; tests pass a fixed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, get_args

ForceAction = Literal["proceed", "discard", "keep_waiting"]
FORCE_ACTIONS: tuple[str, ...] = get_args(ForceAction)


@dataclass(frozen=True)
class SeriesTiming:
    series_uid: str
    first_received_at: datetime
    last_received_at: datetime


@dataclass(frozen=True)
class StudyTiming:
    """Arrival times of the current version of a study."""

    study_uid: str
    version: int
    version_started_at: datetime
    last_received_at: datetime
    series: tuple[SeriesTiming, ...]


@dataclass(frozen=True)
class CompletionRules:
    series_quiet: timedelta
    study_quiet: timedelta
    force_after: timedelta
    force_action: ForceAction = "proceed"

    def __post_init__(self) -> None:
        for name in ("series_quiet", "study_quiet", "force_after"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.force_action not in FORCE_ACTIONS:
            choices = ", ".join(FORCE_ACTIONS)
            raise ValueError(f"force_action must be one of {choices}, not {self.force_action!r}")


class Action(StrEnum):
    WAIT = "wait"
    COMPLETE = "complete"
    DISCARD = "discard"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    forced: bool = False


def decide(
    study: StudyTiming, now: datetime, rules: CompletionRules, *, listening_since: datetime | None = None
) -> Decision:
    """Apply the completion policy to one study version at time ``now``; quiet time counts only from
    ``listening_since`` on (see the module docstring)."""

    def heard(at: datetime) -> datetime:
        return at if listening_since is None else max(at, listening_since)

    study_quiet_for = now - heard(study.last_received_at)
    arriving = [s.series_uid for s in study.series if now - heard(s.last_received_at) < rules.series_quiet]
    if not arriving and study_quiet_for >= rules.study_quiet:
        return Decision(
            Action.COMPLETE,
            f"all {len(study.series)} series quiet for >= {rules.series_quiet.total_seconds():g}s and the "
            f"study quiet for {study_quiet_for.total_seconds():.0f}s",
        )

    waiting = (
        f"{len(arriving)} series still arriving"
        if arriving
        else f"study quiet for {study_quiet_for.total_seconds():.0f}s"
        f" of {rules.study_quiet.total_seconds():g}s"
    )
    age = now - study.version_started_at
    if age < rules.force_after:
        return Decision(Action.WAIT, waiting)

    forced = f"force timeout ({rules.force_after.total_seconds():g}s) reached with {waiting}"
    if rules.force_action == "proceed":
        return Decision(Action.COMPLETE, f"{forced}: proceeding", forced=True)
    if rules.force_action == "discard":
        return Decision(Action.DISCARD, f"{forced}: discarding", forced=True)
    return Decision(Action.WAIT, f"{forced}: keep waiting", forced=True)
