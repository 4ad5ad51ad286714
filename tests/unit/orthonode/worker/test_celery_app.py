"""Tests of orthonode.worker.celery_app and tasks: each process's app holds that process's Runtime (no
module state), its tasks run with it, and a forked pool child makes the runtime drop what it inherited."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.signals import worker_process_init
from support.runtime import isolated_settings

from orthonode.runtime import Runtime
from orthonode.send import delivery
from orthonode.worker import celery_app, jobs
from orthonode.worker.celery_app import DELIVER_RESULTS, PROCESS_STUDY, NodeApp, make_app
from orthonode.worker.jobs import JobOutcome


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    return Runtime(isolated_settings(data_dir=tmp_path / "node"))


def test_no_runtime_in_module_state() -> None:
    assert not hasattr(celery_app, "_runtime") and not hasattr(celery_app, "runtime")
    assert not hasattr(celery_app, "app")


def test_the_app_holds_its_runtime_and_the_tasks(rt: Runtime, tmp_path: Path) -> None:
    app = make_app(rt)
    assert isinstance(app, NodeApp) and app.runtime is rt
    assert {PROCESS_STUDY, DELIVER_RESULTS} <= set(app.tasks)
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_default_queue == rt.settings.queue_name
    assert app.conf.broker_url == rt.settings.effective_broker_url
    assert (rt.settings.broker_dir / "queue").is_dir()  # the local broker's folders
    other = make_app(Runtime(isolated_settings(data_dir=tmp_path / "other")))
    assert other.runtime is not rt and app.tasks[PROCESS_STUDY] is not other.tasks[PROCESS_STUDY]


def test_tasks_run_with_their_apps_runtime(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Runtime, int]] = []

    def run_job(runtime: Runtime, job_id: int) -> JobOutcome:
        seen.append((runtime, job_id))
        return JobOutcome.DONE

    def deliver_job(runtime: Runtime, job_id: int) -> list[delivery.DeliveryOutcome]:
        seen.append((runtime, job_id))
        return [delivery.DeliveryOutcome(1, "pacs", "sent")]

    monkeypatch.setattr(jobs, "run_job", run_job)
    monkeypatch.setattr(delivery, "deliver_job", deliver_job)
    earlier = make_app(Runtime(isolated_settings(data_dir=tmp_path / "earlier")))
    app = make_app(rt)
    assert app.tasks[PROCESS_STUDY].run("7") == "done"
    assert app.tasks[DELIVER_RESULTS].run(8) == "pacs: sent"
    assert seen == [(rt, 7), (rt, 8)]  # not the runtime of an app made before it
    assert earlier.tasks[PROCESS_STUDY].run(9) == "done"
    assert seen[-1] == (earlier.runtime, 9)


def test_a_forked_pool_child_resets_the_runtime(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(rt, "after_fork", lambda: calls.append("after_fork"))
    app = make_app(rt)
    worker_process_init.send(sender=None)
    assert calls == ["after_fork"]
    del app
