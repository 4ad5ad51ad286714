"""orthonode.console.api over a real index (SQLite, migrated): reads, filters, untrusted path input, the
token rule of the actions, key images as PNG, the configuration with secrets hidden."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from support.console import TOKEN, Fixture

from orthonode.index.db import transaction
from orthonode.index.models import Delivery, DeliveryState, Job, JobState
from orthonode.peers.synthetic import new_study_uid

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_dashboard_counts_what_the_index_holds(console: tuple[Fixture, Any], now: datetime) -> None:
    _fx, client = console
    board = client.get("/api/v1/dashboard").json()
    idx = board["index"]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    arrivals = [now, now - timedelta(minutes=5), now - timedelta(minutes=1)]  # the three stored instances
    assert idx["instances_today"] == sum(t >= midnight for t in arrivals)
    assert idx["jobs_by_state"] == {"done": 1, "failed": 1}
    assert idx["queue_depth"] == 0
    assert idx["failed_jobs"] == 1 and idx["failed_deliveries"] == 1
    assert idx["deliveries_by_destination"] == {"pacs": {"failed": 1}}
    assert idx["studies_by_state"] == {"complete": 2, "receiving": 1, "not_routed": 1}
    assert [(w["host"], w["pid"]) for w in idx["workers"]] == [("hostA", 4242)]
    assert board["destinations"] == ["pacs"] and board["free_disk_bytes"] > 0
    assert board["embedded_worker_alive"] is None


def test_studies_filter_by_state_anatomy_and_time(console: tuple[Fixture, Any], now: datetime) -> None:
    fx, client = console
    every = client.get("/api/v1/studies").json()
    assert every["total"] == 4
    assert next(r["study_uid"] for r in every["rows"]) == fx.reported_uid  # newest activity first
    complete = client.get("/api/v1/studies", params={"state": "complete"}).json()
    assert {r["study_uid"] for r in complete["rows"]} == {fx.reported_uid, fx.failed_uid}
    knees = client.get("/api/v1/studies", params={"anatomy": "knee", "state": "complete"}).json()
    assert knees["total"] == 2
    old = client.get("/api/v1/studies", params={"received_to": (now - timedelta(days=1)).isoformat()}).json()
    assert [r["study_uid"] for r in old["rows"]] == [fx.not_routed_uid]
    recent = client.get(
        "/api/v1/studies",
        params={"received_from": (now - timedelta(minutes=2)).replace(tzinfo=None).isoformat()},
    ).json()  # a time without a zone is UTC
    assert {r["study_uid"] for r in recent["rows"]} == {fx.reported_uid, fx.receiving_uid}
    page = client.get("/api/v1/studies", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 4 and len(page["rows"]) == 1 and page["offset"] == 1
    assert client.get("/api/v1/studies", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/studies", params={"limit": 10_000}).status_code == 422


def test_a_study_has_its_series_jobs_results_and_deliveries(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    out = client.get(f"/api/v1/studies/{fx.reported_uid}").json()
    detail = out["detail"]
    assert detail["study"]["route_reason"].startswith("knee radiograph")
    assert len(detail["series"]) == 1 and detail["series"][0]["modality"] == "DX"
    (job,) = detail["jobs"]
    assert job["id"] == fx.reported_job and job["state"] == "done"
    assert [(r["task"], r["kind"]) for r in job["results"]] == [("kl_grade:R", "sc")]
    (delivery,) = job["deliveries"]
    assert delivery["state"] == "failed" and delivery["last_error"] == "association rejected by PACS"
    assert out["patient"] is None  # no patient identity unless the operator turns it on
    assert "Doe" not in client.get(f"/api/v1/studies/{fx.reported_uid}").text


def test_patient_names_only_when_turned_on(make_console: Any) -> None:
    fx, client = make_console(web_show_patient_names=True)
    patient = client.get(f"/api/v1/studies/{fx.reported_uid}").json()["patient"]
    assert patient == {"name": "Doe^Jane", "id": "PID-0042"}
    assert "Doe^Jane" in client.get(f"/studies/{fx.reported_uid}").text


def test_untrusted_path_input_is_a_404_with_the_reason(console: tuple[Fixture, Any]) -> None:
    _, client = console
    for bad in ("..%2F..%2Fetc%2Fpasswd", "1.2.3.04", "not-a-uid", "1." * 40):
        response = client.get(f"/api/v1/studies/{bad}")
        assert response.status_code in (404, 422), bad
    missing = client.get(f"/api/v1/studies/{new_study_uid()}")
    assert missing.status_code == 404 and missing.json()["detail"] == "no such study in the index"
    assert client.get("/api/v1/jobs/999999").status_code == 404
    assert client.get("/api/v1/jobs/0").status_code == 422
    assert client.get("/api/v1/results/999999/image.png").status_code == 404


def test_actions_need_the_token(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    url = f"/api/v1/jobs/{fx.failed_job}/retry"
    assert client.post(url).status_code == 401
    assert client.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert _job_state(fx, fx.failed_job) == JobState.FAILED  # nothing changed
    done = client.post(url, headers=AUTH).json()
    assert done == {"job_id": fx.failed_job, "changed": True, "message": f"job {fx.failed_job} re-queued"}
    assert _job_state(fx, fx.failed_job) == JobState.PENDING
    again = client.post(url, headers=AUTH).json()
    assert again["changed"] is False and "nothing changed" in again["message"]
    assert client.post("/api/v1/jobs/999999/retry", headers=AUTH).status_code == 404


def test_without_a_configured_token_the_console_is_read_only(make_console: Any) -> None:
    fx, client = make_console(web_token=None)
    response = client.post(f"/api/v1/jobs/{fx.failed_job}/retry", headers=AUTH)
    assert response.status_code == 403 and "no web_token" in response.json()["detail"]
    assert _job_state(fx, fx.failed_job) == JobState.FAILED


def test_retry_and_discard_a_failed_delivery(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    base = f"/api/v1/jobs/{fx.reported_job}/deliveries"
    assert client.post(f"{base}/other/retry", headers=AUTH).json()["changed"] is False
    retried = client.post(f"{base}/pacs/retry", headers=AUTH).json()
    assert retried["changed"] and retried["message"] == "1 failed delivery re-queued"
    delivery = _delivery(fx, fx.reported_job)
    assert delivery.state == DeliveryState.PENDING and delivery.attempts == 0
    _set_delivery_state(fx, fx.reported_job, DeliveryState.FAILED)
    discarded = client.post(f"{base}/pacs/discard", headers=AUTH).json()
    assert discarded["message"] == "1 failed delivery discarded"
    assert _delivery(fx, fx.reported_job).state == DeliveryState.DISCARDED
    assert _job_state(fx, fx.reported_job) == JobState.DONE  # the job itself is untouched


def test_discarding_a_failed_job_is_final(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    out = client.post(f"/api/v1/jobs/{fx.failed_job}/discard", headers=AUTH).json()
    assert out["changed"] and _job_state(fx, fx.failed_job) == JobState.DISCARDED
    assert client.post(f"/api/v1/jobs/{fx.failed_job}/retry", headers=AUTH).json()["changed"] is False
    assert client.get("/api/v1/failed").json()["jobs"] == []


def test_the_key_image_is_served_as_png_of_the_stored_pixels(console: tuple[Fixture, Any]) -> None:
    fx, client = console
    response = client.get(f"/api/v1/results/{fx.key_image_id}/image.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    png = np.asarray(Image.open(io.BytesIO(response.content)))
    with transaction(fx.rt.sessions) as session:
        from orthonode.index import reads

        stored = reads.result_file(session, fx.key_image_id)
    assert stored is not None
    pixels = dcmread(fx.rt.store.absolute(stored.rel_path)).pixel_array
    assert png.shape[:2] == pixels.shape[:2]
    assert float(np.corrcoef(png.reshape(-1).astype(float), pixels.reshape(-1).astype(float))[0, 1]) > 0.99


def test_configuration_hides_secrets(make_console: Any) -> None:
    _, client = make_console()
    config = client.get("/api/v1/config").json()
    assert config["web_token"] == "(set, hidden)" and TOKEN not in client.get("/api/v1/config").text
    assert TOKEN not in client.get("/config").text
    assert config["destinations"][0]["name"] == "pacs"


def test_models_lists_the_packaged_default_without_loading_it(console: tuple[Fixture, Any]) -> None:
    _, client = console
    models = client.get("/api/v1/models").json()
    assert models["encoder"]["arch"] == "tf_efficientnet_lite0"
    assert [h["task"] for h in models["heads"]] == ["kl_grade"] and models["heads"][0]["usable"] is True
    assert "EfficientNet" in models["model_card"]


def test_health(console: tuple[Fixture, Any]) -> None:
    _, client = console
    assert client.get("/api/v1/health").json()["status"] == "ok"


# ---------------------------------------------------------------------------------------------- helpers


def _job_state(fx: Fixture, job_id: int) -> str:
    with transaction(fx.rt.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state


def _delivery(fx: Fixture, job_id: int) -> Delivery:
    with transaction(fx.rt.sessions) as session:
        row = session.query(Delivery).filter(Delivery.job_id == job_id).one()
        session.expunge(row)
        return row


def _set_delivery_state(fx: Fixture, job_id: int, state: str) -> None:
    with transaction(fx.rt.sessions) as session:
        session.query(Delivery).filter(Delivery.job_id == job_id).update({"state": state})
