"""Running one job: claim it, do the work, record the outcome. Safe under duplicate delivery.

A job is claimed with a lease in the index (``orthonode.index.jobs.claim``), renewed while the attempt
works (``orthonode.worker.heartbeat``); a second delivery of the
same message finds it running or done and returns. Transient failures go back to PENDING with
exponential backoff (the sweeper hands them to the broker again when due); permanent ones end FAILED
with the reason, which ``orthonode retry JOB`` can reset.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from pydicom import dcmread

from orthonode import metrics
from orthonode.completion.selection import Route
from orthonode.encode.outputs import build_outputs
from orthonode.errors import PermanentJobError, TransientError
from orthonode.index import jobs as job_rows
from orthonode.index.db import transaction
from orthonode.index.leases import Release
from orthonode.index.models import Job, utcnow
from orthonode.inference import pipeline
from orthonode.inference.findings import Finding, NotGraded
from orthonode.logging import job_context
from orthonode.retries import attempt_holder, backoff
from orthonode.runtime import Runtime
from orthonode.send import delivery
from orthonode.worker.heartbeat import LeaseKeeper

log = logging.getLogger(__name__)


class JobOutcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # another delivery holds or finished it
    RETRY = "retry"
    FAILED = "failed"


def run_job(rt: Runtime, job_id: int) -> JobOutcome:
    """One attempt at the job, then the first delivery attempt of its results. The job's wall time
    (without the delivery) is observed in ``orthonode_job_seconds`` by outcome."""
    start = time.perf_counter()
    outcome = _attempt(rt, job_id)
    if outcome is not JobOutcome.SKIPPED:
        metrics.JOB_SECONDS.labels(outcome=str(outcome)).observe(time.perf_counter() - start)
    if outcome is JobOutcome.DONE:
        _deliver_now(rt, job_id)
    return outcome


def _attempt(rt: Runtime, job_id: int) -> JobOutcome:
    settings = rt.settings
    holder = attempt_holder()
    with job_context(job_id):
        with transaction(rt.sessions) as session:
            job = job_rows.claim(
                session,
                job_id,
                holder=holder,
                now=utcnow(),
                lease=timedelta(seconds=settings.job_lease_seconds),
            )
            if job is None:
                log.info("job already taken or finished; nothing to do")
                return JobOutcome.SKIPPED
            attempt = job.attempts
        log.info("job started (attempt %d)", attempt)
        lease = timedelta(seconds=settings.job_lease_seconds)
        try:
            with LeaseKeeper(rt.sessions, job_id, holder, lease):  # a slow attempt keeps its job
                detail = _work(rt, job_id, holder)
        except TransientError as exc:
            return _record_failure(rt, job_id, holder, f"{exc}", backoff(attempt))
        except Exception as exc:
            if not isinstance(exc, PermanentJobError):
                log.exception("job failed with an unexpected error")
            return _record_failure(rt, job_id, holder, f"{type(exc).__name__}: {exc}", None)
        with transaction(rt.sessions) as session:
            finished = job_rows.finish(session, job_id, holder=holder, now=utcnow(), detail=detail)
        if not finished:
            log.warning("job finished after its lease had passed to another attempt; result discarded")
            return JobOutcome.SKIPPED
        log.info("job done: %s", detail)
        return JobOutcome.DONE


def _deliver_now(rt: Runtime, job_id: int) -> None:
    """First delivery attempt right after the job; retries are the sweeper's (orthonode.send.delivery)."""
    try:
        delivery.deliver_job(rt, job_id)
    except Exception:
        log.exception("delivery attempt failed; the sweeper retries it")


def _record_failure(
    rt: Runtime, job_id: int, holder: str, error: str, retry_after: timedelta | None
) -> JobOutcome:
    with transaction(rt.sessions) as session:
        released = job_rows.fail(
            session,
            job_id,
            holder=holder,
            error=error,
            now=utcnow(),
            retry_after=retry_after,
            max_attempts=rt.settings.job_max_attempts,
        )
    if released.outcome is Release.RETRY:
        log.warning(
            "job will be retried in %.0fs: %s", retry_after.total_seconds() if retry_after else 0, error
        )
        return JobOutcome.RETRY
    if released.outcome is Release.FAILED:
        log.error("job failed: %s", error)
        return JobOutcome.FAILED
    log.warning(
        "attempt failed after its lease had passed to another attempt (%s); job left %s",
        error,
        released.state or "missing",
    )
    return JobOutcome.SKIPPED


def _work(rt: Runtime, job_id: int, holder: str) -> str:
    """Run the inference pipeline on the job's study version and record what it produced.

    The result files are written durably first, then recorded in the index with one PENDING delivery per
    destination (``orthonode.index.jobs.record_results``), in one transaction that only the lease holder
    can make.
    A re-run of a job whose results are already recorded (a worker died after recording) produces nothing
    new: the recorded objects are what gets delivered. A job whose only outcomes are not-graded ones (a
    lateral view, no knee joint found) still emits its SR, which says so.
    """
    with transaction(rt.sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise PermanentJobError(f"job {job_id} vanished from the index")
        inputs = job_rows.inputs(session, job)
        try:
            routes = [Route.from_json(route) for route in job.routes]
        except ValueError as exc:
            raise PermanentJobError(f"job {job_id}: its stored routes are malformed ({exc})") from exc
        study_uid, version, created = job.study.study_uid, job.study_version, job.created_at
        recorded = job_rows.results(session, job_id)
    if recorded:
        return f"results already recorded ({len(recorded)} objects); delivering those"
    missing = [i.sop_instance_uid for i in inputs if not rt.store.absolute(i.rel_path).is_file()]
    if missing:
        raise PermanentJobError(f"{len(missing)} stored instance file(s) missing, e.g. {missing[0]}")
    try:
        models = rt.models.models_for(rt.settings)
    except pipeline.NoModelInstalled as exc:
        return f"no report: {exc}"
    files_by_series: dict[str, list[Path]] = {}
    paths: dict[str, Path] = {}
    for item in inputs:
        path = rt.store.absolute(item.rel_path)
        files_by_series.setdefault(item.series_uid, []).append(path)
        paths[item.sop_instance_uid] = path
    output = pipeline.run_pipeline(
        models, routes, files_by_series, batch_size=rt.settings.inference_batch_size
    )
    for stage, seconds in output.times.seconds.items():
        metrics.STAGE_SECONDS.labels(stage=stage).observe(seconds)
    for failure in output.failures:
        log.warning("not reported: %s", failure)
    if not output.findings and not output.not_graded:
        return "no report: " + ("; ".join(output.failures) or "no finding")
    sources = {s.sop_instance_uid for f in output.findings for s in (*f.sources, f.key_source)}
    sources |= {f.region.source.sop_instance_uid for f in output.findings if f.region is not None}
    sources |= {o.source.sop_instance_uid for o in output.not_graded}
    evidence = {uid: dcmread(paths[uid], stop_before_pixels=True) for uid in sources}
    started = time.perf_counter()
    objects = build_outputs(
        output.findings,
        evidence,
        study_uid=study_uid,
        version=version,
        created=created,
        not_graded=output.not_graded,
    )
    metrics.STAGE_SECONDS.labels(stage="encode_outputs").observe(time.perf_counter() - started)
    records = []
    for o in objects:
        rel_path = rt.store.write_result(job_id, o.sop_uid, o.kind, o.to_bytes())
        records.append(job_rows.ResultRecord(o.task, o.kind, o.sop_uid, o.series_uid, rel_path, o.summary))
    with transaction(rt.sessions) as session:
        ok = job_rows.record_results(
            session,
            job_id,
            holder=holder,
            results=records,
            destinations=[d.name for d in rt.settings.destinations],
            now=utcnow(),
        )
    if not ok:
        raise TransientError("the job's lease passed to another attempt before its results were recorded")
    found = "; ".join([*(_summary(f) for f in output.findings), *(_not_graded(o) for o in output.not_graded)])
    untrained = "" if all(f.model.trained for f in output.findings) else " [UNTRAINED model: not findings]"
    skipped = f"; not reported: {'; '.join(output.failures)}" if output.failures else ""
    sent_to = f"{len(rt.settings.destinations)} destination(s)"
    return f"{len(objects)} objects for {sent_to}: {found}{untrained}{skipped}"


def _not_graded(outcome: NotGraded) -> str:
    where = f"{outcome.title} ({outcome.laterality})" if outcome.laterality else outcome.title
    return f"{where}: {outcome.reason}"


def _summary(finding: Finding) -> str:
    where = f"{finding.title} ({finding.laterality})" if finding.laterality else finding.title
    if not finding.model.trained:
        return f"{where}: untrained output"
    return f"{where}: {finding.value.meaning} (p={finding.probability:.2f})"
