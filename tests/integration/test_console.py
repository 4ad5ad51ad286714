"""The operator console of a real node (``orthonode serve``): API reads and the token rule over HTTP, the
pages in headless Chromium (screenshots kept as test artifacts and checked), a failed delivery re-sent
to a real Orthanc by a click in the browser, the Prometheus metrics after a study went through, and
``orthonode status --watch``.

The PACS here refuses the node's C-STORE at first (Orthanc with ``DicomAlwaysAllowStore`` off and the
node not yet registered as a modality), as a PACS that nobody configured for the node yet would; the
delivery fails; the PACS administrator registers the node; the operator clicks Retry.

Models: a tiny randomly initialised encoder and KL head (UNTRAINED). Radiographs: real Chen 2018 knee
crops (CC BY 4.0) wrapped as DX by the test (synthetic header, patient SYNTHETIC^KNEE).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from support.browser import artifacts_dir, chromium_page
from support.node import jobs_of
from support.services import require_binary

from orthonode.inference.untrained import write_untrained_models
from orthonode.peers.orthanc import Orthanc
from orthonode.peers.synthetic import knee_radiograph_from_png, new_study_uid, write_all

pytestmark = pytest.mark.integration

TOKEN = "console-test-token-7f3a"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_untrained_models(root, tasks=("kl_grade",), arch="vit_test_patch16_dinov3", img_size=64)


def _knee_study(shared_data: Path, out: Path) -> tuple[str, list[Path]]:
    pngs = sorted((shared_data / "knee_kl224" / "val" / "3").glob("*.png"))[:2]
    uid = new_study_uid()
    datasets = [
        knee_radiograph_from_png(png, uid, side, series_number=i + 1)  # type: ignore[arg-type]
        for i, (png, side) in enumerate(zip(pngs, ("L", "R"), strict=True))
    ]
    return uid, write_all(datasets, out)


def _delivery(status: dict[str, Any], uid: str) -> dict[str, Any] | None:
    jobs = jobs_of(status, uid)
    if not jobs:
        return None
    return next((d for d in status["deliveries"] if d["job_id"] == jobs[0]["id"]), None)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted(p for p in (match.group(2) or "").split(",") if p))
            if got == want:
                return float(match.group(3))
    return 0.0


def _not_blank(png: Path) -> None:
    """A screenshot that shows something: the page's colours vary and the header bar is drawn."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(float)
    assert pixels.shape[0] >= 600 and pixels.shape[1] == 1280
    assert pixels.std() > 20, f"{png.name} looks blank"
    header = pixels[:30].reshape(-1, 3).mean(0)
    assert header[2] > header[0] + 20, f"{png.name}: the dark-blue header bar is missing"


def test_console_shows_the_node_and_a_click_resends_a_failed_delivery(
    make_node: Any, models: Path, shared_data: Path, tmp_path: Path
) -> None:
    require_binary("Orthanc", "orthanc")
    shots = artifacts_dir("console")
    with Orthanc(tmp_path / "pacs", extra_config={"DicomAlwaysAllowStore": False}) as pacs:
        destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
        node = make_node(
            models_dir=models,
            destinations=[destination],
            delivery_max_attempts=1,  # the refused send is FAILED at once: the operator's turn
            web_token=TOKEN,
            allowed_calling_aets=["ORTHONODE"],
        )
        base = node.web_url
        uid, files = _knee_study(shared_data, tmp_path / "xr")
        sent = node.cli("send", "127.0.0.1", str(node.port), "--aet", node.ae_title, *map(str, files))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        refused = node.cli(
            "echo", "127.0.0.1", str(node.port), "--aet", node.ae_title, "--calling-aet", "INTRUDER"
        )
        assert refused.returncode != 0

        def failed(status: dict[str, Any]) -> bool:
            d = _delivery(status, uid)
            return d is not None and d["state"] == "failed"

        node.wait_for(failed, timeout=120, what="the delivery refused by the PACS")

        # The API, over HTTP, as a script would use it.
        with httpx.Client(base_url=base, timeout=30) as api:
            board = api.get("/api/v1/dashboard").json()
            assert board["index"]["failed_deliveries"] == 1 and board["embedded_worker_alive"] is True
            detail = api.get(f"/api/v1/studies/{uid}").json()["detail"]
            (job,) = detail["jobs"]
            assert job["state"] == "done" and {r["kind"] for r in job["results"]} == {"sr", "sc"}
            assert job["deliveries"][0]["state"] == "failed" and job["deliveries"][0]["last_error"]
            assert api.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 401
            assert "SYNTHETIC" not in api.get(f"/api/v1/studies/{uid}").text  # no patient name by default
            key = next(r for r in job["results"] if r["kind"] == "sc")
            png = api.get(f"/api/v1/results/{key['id']}/image.png")
            assert (
                png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size[0] > 0
            )

        with chromium_page() as page:
            page.goto(base + "/")
            assert page.inner_text("#failed .n") == "1"
            assert page.inner_text("#received-today .n") == "2"
            assert "running" in page.inner_text("#workers")
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            _not_blank(shots / "dashboard.png")

            page.goto(f"{base}/studies/{uid}")
            assert "knee" in page.inner_text("#study") and "SYNTHETIC" not in page.content()
            image = page.locator("img.key").first
            image.wait_for()
            assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
            assert "failed" in page.inner_text(".deliveries")
            page.screenshot(path=str(shots / "study.png"), full_page=True)
            _not_blank(shots / "study.png")

            # The PACS administrator registers the node; the operator signs in and clicks Retry.
            pacs.add_modality("orthonode", node.ae_title, "127.0.0.1", node.port)
            page.goto(base + "/signin")
            page.fill("input[name=token]", TOKEN)
            page.click("#signin button")
            page.wait_for_url(re.compile(r".*/failed.*"))
            page.click("#failed-deliveries button[name=retry][data-destination=pacs]")
            page.wait_for_url(re.compile(r".*notice=.*"))
            assert "1 failed delivery re-queued" in page.inner_text(".notice")
            page.screenshot(path=str(shots / "failed-after-retry.png"), full_page=True)

        def sent_once(status: dict[str, Any]) -> bool:
            d = _delivery(status, uid)
            return d is not None and d["state"] == "sent"

        node.wait_for(sent_once, timeout=120, what="the re-sent delivery")
        assert len(pacs.find_instances(uid)) == 3  # one SR and two key images: nothing twice

        metrics = httpx.get(base + "/metrics", timeout=30).text
        (shots / "metrics.txt").write_text(metrics)
        assert _metric(metrics, "orthonode_instances_received_total", outcome="stored") == 2
        sent_bytes = sum(f.stat().st_size for f in files)  # the stored files differ by their File Meta only
        assert abs(_metric(metrics, "orthonode_received_bytes_total") - sent_bytes) < 0.01 * sent_bytes
        assert (
            _metric(metrics, "orthonode_association_rejects_total", reason="calling_ae_not_recognized") == 1
        )
        assert _metric(metrics, "orthonode_studies_completed_total", outcome="completed") == 1
        assert _metric(metrics, "orthonode_deliveries_total", destination="pacs", outcome="failed") == 1
        assert _metric(metrics, "orthonode_deliveries_total", destination="pacs", outcome="sent") == 1
        assert _metric(metrics, "orthonode_job_seconds_count", outcome="done") == 1
        assert _metric(metrics, "orthonode_job_stage_seconds_count", stage="encode") == 1
        assert _metric(metrics, "orthonode_model_load_seconds_count") == 1
        assert _metric(metrics, "orthonode_jobs", state="done") == 1
        assert _metric(metrics, "orthonode_deliveries_by_state", destination="pacs", state="sent") == 1
        assert _metric(metrics, "orthonode_queue_depth") == 0

        watch = node.cli("status", "--watch", "--count", "1")
        assert watch.returncode == 0, watch.stderr
        assert "2 instances, 1 studies" in watch.stdout and uid[:20] in watch.stdout
