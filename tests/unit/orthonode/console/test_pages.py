"""orthonode.console.pages: what each page shows, the sign-in cookie, and the retry/discard forms."""

from __future__ import annotations

import re
from typing import Any

from support.console import TOKEN, Fixture

from orthonode.index.db import transaction
from orthonode.index.models import Job, JobState


def test_dashboard_shows_the_counts_and_the_warning(console: tuple[Fixture, Any]) -> None:
    _, client = console
    html = client.get("/").text
    assert re.search(r'id="failed"><div class="n bad">2</div>', html)  # one job + one delivery
    assert "1 failed job(s) and 1 failed delivery" in html
    assert "hostA" in html and "pacs" in html


def test_studies_page_filters_and_rejects_bad_dates_gently(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    html = client.get("/studies", params={"state": "not_routed"}).text
    assert fx.not_routed_uid in html and fx.reported_uid not in html
    warned = client.get("/studies", params={"received_from": "yesterday"})
    assert warned.status_code == 200 and "Not a date (YYYY-MM-DD), ignored: yesterday" in warned.text


def test_study_page_tells_the_whole_story(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    html = client.get(f"/studies/{fx.reported_uid}").text
    assert "knee radiograph (DX, BodyPartExamined KNEE)" in html  # the routing reason
    assert f'src="/api/v1/results/{fx.key_image_id}/image.png"' in html
    assert "association rejected by PACS" in html
    assert "Doe" not in html and "PID-0042" not in html
    missing = client.get("/studies/1.2.3.4")
    assert missing.status_code == 404 and "no such study" in missing.text


def test_actions_need_sign_in_and_redirect_back_with_a_notice(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    assert "sign in to retry or discard" in client.get("/failed").text
    form = f"/actions/jobs/{fx.failed_job}/retry"
    assert client.post(form, data={"next": "/failed"}).status_code == 401
    wrong = client.post("/signin", data={"token": "nope"})
    assert wrong.status_code == 403 and "Wrong token" in wrong.text
    signed = client.post("/signin", data={"token": TOKEN}, follow_redirects=False)
    assert signed.status_code == 303 and "httponly" in signed.headers["set-cookie"].lower()
    assert "samesite=strict" in signed.headers["set-cookie"].lower()
    html = client.get("/failed").text
    assert f'action="/actions/jobs/{fx.failed_job}/retry"' in html
    assert f'action="/actions/jobs/{fx.reported_job}/deliveries/pacs/discard"' in html
    done = client.post(form, data={"next": "https://evil.example/"}, follow_redirects=False)
    # an off-site "next" is never followed
    assert done.status_code == 303 and done.headers["location"].startswith("/failed?notice=")
    with transaction(fx.rt.sessions) as session:
        job = session.get(Job, fx.failed_job)
        assert job is not None and job.state == JobState.PENDING
    assert f"job {fx.failed_job} re-queued" in client.get(done.headers["location"]).text
    client.post("/signout")
    assert "sign in to retry or discard" in client.get("/failed").text


def test_read_only_console_says_so(make_console: Any) -> None:
    _, client = make_console(web_token=None)
    html = client.get("/failed").text
    assert "read-only console (no web_token configured)" in html
    assert "no <code>web_token</code>" in client.get("/signin").text


def test_models_and_config_pages(console: tuple[Fixture, Any]) -> None:
    _, client = console
    models = client.get("/models").text
    assert "tf_efficientnet_lite0" in models and "<h2>Model card</h2>" in models
    config = client.get("/config").text
    assert "web_token" in config and "(set, hidden)" in config and TOKEN not in config


def test_study_page_lists_not_graded_outcomes(console: tuple[Fixture, Any]) -> None:
    """An SR whose summary has not-graded outcomes (issue 14) shows each with its reason."""
    from datetime import UTC, datetime

    from orthonode.index.models import Result

    fx, client = console
    summary = {
        "findings": [],
        "not_graded": [
            {"task": "kl_grade", "title": "Kellgren-Lawrence grade", "laterality": "L",
             "not_graded": "not graded: lateral view", "code": ["NGLATERAL", "99ORTHO"],
             "model": "OrthoFoundation knee localiser", "model_version": "loc 1", "sources": ["2.25.1"]},
        ],
    }  # fmt: skip
    with transaction(fx.rt.sessions) as session:
        session.add(
            Result(
                job_id=fx.reported_job, task="report", kind="sr", sop_instance_uid="2.25.99",
                series_uid="2.25.98", rel_path=None, summary=summary, created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    html = client.get(f"/studies/{fx.reported_uid}").text
    assert "Kellgren-Lawrence grade (L)</b>: not graded: lateral view" in html
    assert "OrthoFoundation knee localiser" in html
