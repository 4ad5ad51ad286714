"""Tests of orthonode.completion.policy.decide with a fixed clock (no I/O, no real time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orthonode.completion.policy import (
    Action,
    CompletionRules,
    Decision,
    SeriesTiming,
    StudyTiming,
    decide,
)

T0 = datetime(2024, 1, 2, 10, 15, 0, tzinfo=UTC)
RULES = CompletionRules(
    series_quiet=timedelta(seconds=30),
    study_quiet=timedelta(seconds=60),
    force_after=timedelta(seconds=3600),
)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def at(seconds: float) -> datetime:
    return T0 + s(seconds)


def study(*series: tuple[float, float], started: float = 0.0, version: int = 1) -> StudyTiming:
    """A study version started at ``started``; each series given as (first, last) arrival second."""
    timings = tuple(SeriesTiming(f"1.2.3.{i}", at(first), at(last)) for i, (first, last) in enumerate(series))
    last = max((t.last_received_at for t in timings), default=at(started))
    return StudyTiming("1.2.3", version, at(started), last, timings)


def rules(force_action: str = "proceed", **seconds: float) -> CompletionRules:
    values = {"series_quiet": 30.0, "study_quiet": 60.0, "force_after": 3600.0} | seconds
    return CompletionRules(
        series_quiet=s(values["series_quiet"]),
        study_quiet=s(values["study_quiet"]),
        force_after=s(values["force_after"]),
        force_action=force_action,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------- waiting


def test_waits_while_a_series_is_arriving() -> None:
    timing = study((0, 100), (50, 200))  # second series: last instance at 200 s
    decision = decide(timing, at(210), RULES)
    assert decision == Decision(Action.WAIT, "1 series still arriving", forced=False)


def test_counts_every_arriving_series() -> None:
    decision = decide(study((0, 195), (0, 200), (0, 10)), at(210), RULES)
    assert decision == Decision(Action.WAIT, "2 series still arriving")


def test_waits_for_study_quiet_after_series_are_quiet() -> None:
    timing = study((0, 100), (0, 120))
    # Both series quiet for >= 30 s at 150 s, but the study only for 30 s of 60 s.
    decision = decide(timing, at(150), RULES)
    assert decision == Decision(Action.WAIT, "study quiet for 30s of 60s", forced=False)


def test_series_quiet_longer_than_study_quiet() -> None:
    r = rules(series_quiet=120, study_quiet=60)
    timing = study((0, 100))
    assert decide(timing, at(200), r).action is Action.WAIT  # study quiet 100 s, series not yet 120 s
    assert decide(timing, at(219.999), r).action is Action.WAIT
    assert decide(timing, at(220), r).action is Action.COMPLETE


def test_downtime_is_not_quiet_time() -> None:
    """The node was down from 110 s to 500 s: a sender could not reach it, so quiet time starts at 500 s."""
    timing = study((0, 100), (10, 110))
    assert decide(timing, at(505), RULES).action is Action.COMPLETE  # without the restart: quiet long since
    assert decide(timing, at(505), RULES, listening_since=at(500)) == Decision(
        Action.WAIT, "2 series still arriving"
    )
    assert decide(timing, at(545), RULES, listening_since=at(500)).reason == "study quiet for 45s of 60s"
    assert decide(timing, at(560), RULES, listening_since=at(500)).action is Action.COMPLETE
    # Arrivals after the restart count as they always did; a restart before them changes nothing.
    assert decide(timing, at(170), RULES, listening_since=at(50)).action is Action.COMPLETE


# --------------------------------------------------------------------------------------------- completing


def test_completes_when_all_quiet() -> None:
    timing = study((0, 100), (10, 120))
    decision = decide(timing, at(180), RULES)
    assert decision == Decision(
        Action.COMPLETE,
        "all 2 series quiet for >= 30s and the study quiet for 60s",
        forced=False,
    )


def test_boundaries_are_inclusive() -> None:
    timing = study((0, 100))
    assert decide(timing, at(159.999999), RULES).action is Action.WAIT
    assert decide(timing, at(160), RULES).action is Action.COMPLETE
    # A series is arriving while now - last < series_quiet, complete at exactly series_quiet.
    r = rules(series_quiet=90, study_quiet=10)
    assert decide(timing, at(189.5), r) == Decision(Action.WAIT, "1 series still arriving")
    assert decide(timing, at(190), r).action is Action.COMPLETE


def test_study_without_series_completes_after_study_quiet() -> None:
    timing = StudyTiming("1.2.3", 1, at(0), at(0), ())
    assert decide(timing, at(59), RULES).action is Action.WAIT
    assert decide(timing, at(60), RULES) == Decision(
        Action.COMPLETE, "all 0 series quiet for >= 30s and the study quiet for 60s"
    )


def test_new_version_measures_from_its_own_start() -> None:
    """A reopened study (version 2) is forced relative to the version's start, not the first version's."""
    timing = study((0, 900), (5000, 5010), started=5000, version=2)  # series 0 is from version 1
    assert decide(timing, at(5020), RULES) == Decision(Action.WAIT, "1 series still arriving")
    assert decide(timing, at(5070), RULES).action is Action.COMPLETE


def test_decision_does_not_depend_on_series_order() -> None:
    a = study((0, 100), (0, 200), (0, 50))
    b = StudyTiming(a.study_uid, a.version, a.version_started_at, a.last_received_at, a.series[::-1])
    for now in (150, 220, 260, 4000):
        assert decide(a, at(now), RULES) == decide(b, at(now), RULES)


# --------------------------------------------------------------------------------------------- forcing


def trickling() -> StudyTiming:
    """A study whose instances keep arriving every few seconds for more than an hour."""
    return study((0, 3595), (0, 3600))


def test_force_proceed() -> None:
    decision = decide(trickling(), at(3600), rules("proceed"))
    assert decision == Decision(
        Action.COMPLETE,
        "force timeout (3600s) reached with 2 series still arriving: proceeding",
        forced=True,
    )


def test_force_discard() -> None:
    decision = decide(trickling(), at(3601), rules("discard"))
    assert decision == Decision(
        Action.DISCARD,
        "force timeout (3600s) reached with 2 series still arriving: discarding",
        forced=True,
    )


def test_force_keep_waiting() -> None:
    decision = decide(trickling(), at(3601), rules("keep_waiting"))
    assert decision == Decision(
        Action.WAIT,
        "force timeout (3600s) reached with 2 series still arriving: keep waiting",
        forced=True,
    )


@pytest.mark.parametrize("action", ["proceed", "discard", "keep_waiting"])
def test_no_force_before_force_after(action: str) -> None:
    decision = decide(trickling(), at(3599.999), rules(action))
    assert decision == Decision(Action.WAIT, "2 series still arriving", forced=False)


def test_force_when_only_the_study_quiet_is_missing() -> None:
    r = rules("discard", study_quiet=600, force_after=300)
    timing = study((0, 100))
    assert decide(timing, at(299), r) == Decision(Action.WAIT, "study quiet for 199s of 600s")
    assert decide(timing, at(300), r) == Decision(
        Action.DISCARD, "force timeout (300s) reached with study quiet for 200s of 600s: discarding", True
    )


@pytest.mark.parametrize("action", ["proceed", "discard", "keep_waiting"])
def test_normal_completion_wins_over_force(action: str) -> None:
    """A study that is quiet completes normally (not forced) even long after force_after."""
    decision = decide(study((0, 100)), at(10_000), rules(action))
    assert decision.action is Action.COMPLETE
    assert decision.forced is False


def test_keep_waiting_still_completes_when_quiet() -> None:
    r = rules("keep_waiting")
    timing = trickling()
    assert decide(timing, at(3659), r).action is Action.WAIT
    assert decide(timing, at(3660), r) == Decision(
        Action.COMPLETE, "all 2 series quiet for >= 30s and the study quiet for 60s"
    )


# --------------------------------------------------------------------------------------------- rules


def test_no_unforced_completion_sooner_than_both_quiet_times() -> None:
    """Scan a clock over quiet studies: the first unforced completion comes exactly when both the series
    and the study quiet times have passed since the last instance."""
    for r in (RULES, rules(series_quiet=120, study_quiet=60), rules(study_quiet=10, force_after=2000)):
        timing = study((100, 100), started=100)
        first = next(
            t
            for t in range(100, 1000)
            if (d := decide(timing, at(t), r)).action is Action.COMPLETE and not d.forced
        )
        assert s(first - 100) == max(r.series_quiet, r.study_quiet)


def test_forced_proceed_completes_a_trickling_study_right_after_its_last_instance() -> None:
    timing = trickling()
    now = at(3600)
    decision = decide(timing, now, RULES)
    assert (decision.action, decision.forced) == (Action.COMPLETE, True)


@pytest.mark.parametrize(
    "field",
    ["series_quiet", "study_quiet", "force_after"],
)
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_durations_raise(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        rules(**{field: value})


def test_unknown_force_action_raises() -> None:
    with pytest.raises(ValueError, match="force_action must be one of proceed, discard, keep_waiting"):
        rules("maybe")


def test_rules_are_frozen() -> None:
    with pytest.raises(AttributeError):
        RULES.force_action = "discard"  # type: ignore[misc]


def test_decide_is_pure() -> None:
    timing = trickling()
    first = decide(timing, at(100), RULES)
    assert all(decide(timing, at(100), RULES) == first for _ in range(3))
    assert timing == trickling()
