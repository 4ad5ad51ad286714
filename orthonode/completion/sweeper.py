"""The loop that applies the completion policy, routes complete studies, and hands jobs to the broker.

One pass (:meth:`Sweeper.sweep_once`):

1. for each receiving study that could be decidable, lock it (``SKIP LOCKED``: several node processes
   may sweep the same index), apply :func:`~orthonode.completion.policy.decide`, and on completion route
   it (:func:`~orthonode.completion.selection.route_study`): routed -> a job row in the same transaction;
   not routed -> the study records why; discarded -> likewise;
2. hand PENDING jobs to the broker *after* their commit (a crash in between leaves them PENDING, and the
   next pass hands them over again: the task is idempotent);
3. expire the leases of jobs whose worker went silent, so they run again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from orthonode import metrics
from orthonode.completion.policy import Action, CompletionRules, SeriesTiming, StudyTiming, decide
from orthonode.completion.selection import RoutingDecision, SeriesFacts, StudyFacts, route_study
from orthonode.index import db, deliveries, studies
from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction
from orthonode.index.models import Series, Study, StudyState, utcnow
from orthonode.logging import job_context
from orthonode.runtime import Runtime

log = logging.getLogger(__name__)

Enqueue = Callable[[int], None]


def rules_from(settings: Any) -> CompletionRules:
    return CompletionRules(
        series_quiet=timedelta(seconds=settings.series_quiet_seconds),
        study_quiet=timedelta(seconds=settings.study_quiet_seconds),
        force_after=timedelta(seconds=settings.force_seconds),
        force_action=settings.force_action,
    )


def series_facts(session: Session, series: Series) -> SeriesFacts:
    return SeriesFacts(
        series_uid=series.series_uid,
        modality=series.modality or "",
        sop_class_uid=series.sop_class_uid or "",
        body_part=series.body_part,
        series_description=series.series_description,
        protocol_name=series.protocol_name,
        anatomic_region_codes=tuple(
            (str(c[0]), str(c[1]), str(c[2])) for c in (series.anatomic_region or [])
        ),
        laterality=series.laterality,
        image_lateralities=studies.image_lateralities(session, series.id),
        image_orientation=tuple(series.image_orientation) if series.image_orientation else None,
        scanning_sequence=series.scanning_sequence,
        sequence_name=series.sequence_name,
        instance_count=series.instance_count,
    )


def study_facts(session: Session, study: Study) -> StudyFacts:
    return StudyFacts(
        study_uid=study.study_uid,
        study_description=study.study_description,
        series=tuple(series_facts(session, s) for s in studies.study_series(session, study)),
    )


def study_timing(session: Session, study: Study) -> StudyTiming:
    """The completion policy's input: the arrival times of the study's current version."""
    return StudyTiming(
        study_uid=study.study_uid,
        version=study.version,
        version_started_at=study.version_started_at,
        last_received_at=study.last_received_at,
        series=tuple(
            SeriesTiming(t.series_uid, t.first_received_at, t.last_received_at)
            for t in studies.series_times(session, study)
        ),
    )


def routes_json(decision: RoutingDecision) -> list[dict[str, Any]]:
    return [route.as_json() for route in decision.routes]


def _summary(decision: RoutingDecision) -> tuple[str | None, str | None]:
    anatomies = sorted({str(r.anatomy) for r in decision.routes})
    sides = {r.laterality for r in decision.routes if r.laterality}
    laterality = sides.pop() if len(sides) == 1 else ("B" if sides else None)
    return (anatomies[0] if len(anatomies) == 1 else ",".join(anatomies) or None), laterality


class Sweeper:
    def __init__(
        self,
        rt: Runtime,
        enqueue: Enqueue,
        clock: Callable[[], datetime] = utcnow,
        *,
        enqueue_delivery: Enqueue | None = None,
        listening_since: datetime | None = None,
    ) -> None:
        """``listening_since``: when this node's receiver started listening (``orthonode serve`` passes its
        start); quiet time before it does not count (``completion.policy``: downtime is not quiet time)."""
        self.rt = rt
        self.listening_since = listening_since
        self.enqueue = enqueue
        self.enqueue_delivery = enqueue_delivery
        self._delivery_handed: dict[int, datetime] = {}  # job id -> last hand-over of its deliveries
        self.clock = clock
        self.rules = rules_from(rt.settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ---------------------------------------------------------------------------------
    def sweep_once(self) -> dict[str, int]:
        counts = {
            "completed": 0,
            "not_routed": 0,
            "discarded": 0,
            "enqueued": 0,
            "expired": 0,
            "deliveries": 0,
        }
        now = self.clock()
        with transaction(self.rt.sessions) as session:
            candidates = studies.studies_to_check(
                session,
                quiet_before=now - min(self.rules.series_quiet, self.rules.study_quiet),
                started_before=now - self.rules.force_after,
                limit=500,
            )
        for study_id in candidates:
            outcome = self._decide_study(study_id)
            if outcome:  # committed by now
                counts[outcome] += 1
                metrics.STUDIES_COMPLETED.labels(outcome=outcome).inc()
        counts["enqueued"] = self.hand_over_jobs()
        with transaction(self.rt.sessions) as session:
            expired = job_rows.expire_leases(
                session, now=self.clock(), max_attempts=self.rt.settings.job_max_attempts
            )
        for job_id in expired:
            log.warning("job %d: worker lease expired; it will run again", job_id)
        counts["expired"] = len(expired)
        counts["deliveries"] = self.hand_over_deliveries()
        return counts

    def _decide_study(self, study_id: int) -> str | None:
        now = self.clock()
        with transaction(self.rt.sessions) as session:
            study = studies.lock_study(session, study_id)
            if study is None or study.state != StudyState.RECEIVING:
                return None
            decision = decide(
                study_timing(session, study), now, self.rules, listening_since=self.listening_since
            )
            if decision.action is Action.WAIT:
                if decision.forced:
                    log.debug("study %s: %s", study.study_uid, decision.reason)
                return None
            if decision.action is Action.DISCARD:
                studies.close_study(session, study, StudyState.DISCARDED, decision.reason, now)
                log.warning(
                    "study %s version %d discarded: %s", study.study_uid, study.version, decision.reason
                )
                return "discarded"
            routing = route_study(study_facts(session, study))
            if not routing.routed:
                studies.close_study(session, study, StudyState.NOT_ROUTED, routing.reason, now)
                log.info(
                    "study %s version %d complete, %s",
                    study.study_uid,
                    study.version,
                    routing.reason,
                )
                return "not_routed"
            anatomy, laterality = _summary(routing)
            job = job_rows.create(
                session,
                study,
                routes=routes_json(routing),
                anatomy=anatomy,
                laterality=laterality,
                reason=routing.reason,
                forced=decision.forced,
                now=now,
            )
            job_id, uid, version = job.id, study.study_uid, study.version
        with job_context(job_id):
            log.info(
                "study %s version %d complete (%s); job created for %s",
                uid,
                version,
                decision.reason,
                ", ".join(r.pipeline for r in routing.routes),
            )
        return "completed"

    def hand_over_jobs(self) -> int:
        """PENDING jobs to the broker, and QUEUED ones no worker claimed within ``job_lease_seconds``
        (the broker lost them: ``orthonode.index.jobs.take_to_enqueue``)."""
        settings = self.rt.settings
        with transaction(self.rt.sessions) as session:
            job_ids = job_rows.take_to_enqueue(
                session,
                now=self.clock(),
                retry_after=timedelta(seconds=settings.enqueue_retry_seconds),
                requeue_after=timedelta(seconds=settings.job_lease_seconds),
            )
        handed = 0
        for job_id in job_ids:
            with job_context(job_id):
                try:
                    self.enqueue(job_id)
                except Exception as exc:  # broker down: the job stays PENDING and is retried next pass
                    log.warning("could not hand the job to the broker (%s); will retry", exc)
                    continue
                with transaction(self.rt.sessions) as session:
                    job_rows.mark_enqueued(session, job_id, self.clock())
                handed += 1
        return handed

    def hand_over_deliveries(self) -> int:
        """Hand the jobs with due deliveries (retries, expired sends) to a worker; at most once per job per
        ``enqueue_retry_seconds``, since a queued message may simply not have run yet. The claim in
        orthonode.send.delivery makes a duplicate hand-over harmless."""
        if self.enqueue_delivery is None:
            return 0
        now = self.clock()
        with transaction(self.rt.sessions) as session:
            due = deliveries.due(session, now=now, limit=500)
        recent = now - timedelta(seconds=self.rt.settings.enqueue_retry_seconds)
        self._delivery_handed = {j: t for j, t in self._delivery_handed.items() if t > recent}
        handed = 0
        for job_id in sorted({job for _, job in due}):
            if job_id in self._delivery_handed:
                continue
            try:
                self.enqueue_delivery(job_id)
            except Exception as exc:
                log.warning("job %d: could not hand its deliveries to the broker (%s)", job_id, exc)
                continue
            self._delivery_handed[job_id] = now
            handed += 1
        return handed

    # -- the loop ---------------------------------------------------------------------------------
    def run_forever(self) -> None:
        interval = self.rt.settings.sweep_interval_seconds
        outage: str | None = None  # the database's last "unreachable" reason, logged once per outage
        while not self._stop.is_set():
            try:
                self.sweep_once()
                if outage is not None:
                    log.info("index database reachable again; sweeping")
                    outage = None
            except Exception as exc:
                reason = db.unreachable(exc)
                if reason is None:
                    log.exception("sweep failed; retrying in %.1fs", interval)
                elif outage is None:
                    log.error("index database unavailable (%s); retrying every %.1fs", reason, interval)
                    outage = reason
            self._stop.wait(interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
