"""The whole mission against a real PACS: Orthanc sends a knee radiograph study and a knee MRI study to the
node; the Structured Report and the Secondary Capture key images come back into Orthanc, in the right
study, referencing the right instances; a destination that is down gets them after it comes back, across
a node restart; a worker killed mid-job is replaced and the report still goes out once.

Models: a tiny randomly initialised encoder and heads (``write_untrained_models``), so every object says
UNTRAINED. The radiographs are real (Chen 2018 knee KL, CC BY 4.0, from ../shared); the MRI slices are
SYNTHETIC (orthonode/peers/synthetic.py).
"""

from __future__ import annotations

import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from support.node import WorkerProcess, jobs_of
from support.peers.dcmtk import StoreSCP, dsrdump
from support.peers.synthetic import (
    knee_radiograph_from_png,
    mr_series,
    new_study_uid,
    radiograph,
    write_all,
)
from support.services import redis_url

from orthonode.encode.sr import read_report
from orthonode.inference.untrained import write_untrained_models
from orthonode.peers.ports import free_port

pytestmark = pytest.mark.integration

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
TASKS = ("kl_grade", "acl_injury", "meniscus_injury")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_untrained_models(root, tasks=TASKS, arch="vit_test_patch16_dinov3", img_size=64)


def knee_radiographs(shared_data: Path, out: Path) -> tuple[str, list[Path], set[str]]:
    folder = shared_data / "knee_kl224" / "val" / "2"
    pngs = sorted(folder.glob("*.png"))[:2]
    uid = new_study_uid()
    datasets = [
        knee_radiograph_from_png(png, uid, side, series_number=i + 1)  # type: ignore[arg-type]
        for i, (png, side) in enumerate(zip(pngs, ("L", "R"), strict=True))
    ]
    return uid, write_all(datasets, out), {str(ds.SOPInstanceUID) for ds in datasets}


def knee_mri(out: Path) -> tuple[str, list[Path], set[str]]:
    uid = new_study_uid()
    datasets = mr_series(uid, n_slices=8, plane="sagittal", description="PD FS SAG", series_number=2, seed=3)
    return uid, write_all(datasets, out), {str(ds.SOPInstanceUID) for ds in datasets}


def pacs_objects(orthanc: Any, uid: str) -> tuple[list[Any], list[Any]]:
    datasets = [dcmread(BytesIO(orthanc.instance_file(i["ID"]))) for i in orthanc.find_instances(uid)]
    reports = [ds for ds in datasets if ds.Modality == "SR"]
    images = [ds for ds in datasets if str(ds.SOPClassUID) == SECONDARY_CAPTURE]
    return reports, images


def delivered(uids: list[str]) -> Any:
    def check(status: dict[str, Any]) -> bool:
        for uid in uids:
            jobs = jobs_of(status, uid)
            if len(jobs) != 1 or jobs[0]["state"] != "done":
                return False
            sent = [d for d in status["deliveries"] if d["job_id"] == jobs[0]["id"] and d["state"] == "sent"]
            if not sent:
                return False
        return True

    return check


def test_reports_and_key_images_arrive_back_in_orthanc(
    orthanc: Any, make_node: Any, models: Path, shared_data: Path, tmp_path: Path
) -> None:
    destination = {"name": "pacs", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    node = make_node(models_dir=models, destinations=[destination])
    orthanc.add_modality("node", node.ae_title, "127.0.0.1", node.port)
    xr_uid, xr_files, xr_sops = knee_radiographs(shared_data, tmp_path / "xr")
    mr_uid, mr_files, mr_sops = knee_mri(tmp_path / "mr")
    orthanc.upload_all([*xr_files, *mr_files])
    for uid in (xr_uid, mr_uid):
        (study_id,) = orthanc.find_studies(uid)
        orthanc.store_to_modality("node", [study_id])

    status = node.wait_for(delivered([xr_uid, mr_uid]), timeout=150, what="results delivered to Orthanc")
    assert "UNTRAINED" in jobs_of(status, xr_uid)[0]["detail"]

    # Radiographs: one KL finding per knee; the SR in the same study references both source images.
    reports, images = pacs_objects(orthanc, xr_uid)
    assert len(reports) == 1 and len(images) == 2
    report = reports[0]
    assert report.StudyInstanceUID == xr_uid and report.SeriesInstanceUID not in {
        ds.SeriesInstanceUID for ds in images
    }
    findings = read_report(report)
    assert sorted((f.task, f.laterality) for f in findings) == [("kl_grade", "L"), ("kl_grade", "R")]
    assert all(f.trained is False and "UNTRAINED" in f.model for f in findings)
    assert {uid for f in findings for uid in f.sources} == xr_sops
    assert {str(ds.get("ImageLaterality") or ds.get("Laterality")) for ds in images} == {"L", "R"}
    assert all(ds.BurnedInAnnotation == "YES" and ds.StudyInstanceUID == xr_uid for ds in images)
    sr_path = tmp_path / "sr.dcm"
    report.save_as(sr_path)
    dump = dsrdump(sr_path, "+Pl")  # print long values in full
    assert "Kellgren-Lawrence grade" in dump and "UNTRAINED MODEL - NOT A FINDING" in dump

    # MRI: the MRI knee tasks, referencing selected slices of that study only.
    reports, images = pacs_objects(orthanc, mr_uid)
    assert len(reports) == 1
    findings = read_report(reports[0])
    assert sorted(f.task for f in findings) == ["acl_injury", "meniscus_injury"]
    assert len(images) == len(findings)
    referenced = {uid for f in findings for uid in f.sources}
    assert referenced and referenced <= mr_sops

    # Every object the node emitted, as PACS holds it, passes `orthonode validate` (dciodvfy, dsrdump,
    # highdicom, pixel decoding).
    emitted = tmp_path / "emitted"
    emitted.mkdir()
    for uid in (xr_uid, mr_uid):
        reports, images = pacs_objects(orthanc, uid)
        for n, ds in enumerate([*reports, *images]):
            ds.save_as(emitted / f"{uid[-12:]}-{n}.dcm", enforce_file_format=True)
    checked = node.cli("validate", str(emitted), timeout=180)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(list(emitted.iterdir()))} file(s), 0 with errors" in checked.stdout


def test_destination_down_results_arrive_after_it_comes_back_across_a_restart(
    make_node: Any, models: Path, shared_data: Path, tmp_path: Path
) -> None:
    port = free_port()
    destination = {"name": "archive", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}
    settings = {
        "models_dir": models,
        "destinations": [destination],
        "delivery_backoff_seconds": 1,
        "delivery_backoff_cap_seconds": 2,
        "delivery_max_attempts": 100,
    }
    node = make_node(**settings)
    uid, files, _ = knee_radiographs(shared_data, tmp_path / "xr")
    out = node.cli("send", "127.0.0.1", str(node.port), "--aet", node.ae_title, *map(str, files))
    assert out.returncode == 0, out.stdout + out.stderr

    def retried(status: dict[str, Any]) -> bool:
        jobs = jobs_of(status, uid)
        return bool(jobs) and any(
            d["job_id"] == jobs[0]["id"] and d["state"] == "pending" and d["attempts"] >= 2
            for d in status["deliveries"]
        )

    status = node.wait_for(retried, timeout=120, what="a delivery retried while the destination is down")
    (delivery,) = [d for d in status["deliveries"] if d["job_id"] == jobs_of(status, uid)[0]["id"]]
    assert delivery["error"]

    assert node.terminate() == 0  # the node goes down with the delivery still pending
    with StoreSCP(tmp_path / "archive", port=port) as archive:
        node.start()  # same data directory, same index: the retry survives the restart
        node.wait_for(delivered([uid]), timeout=120, what="delivery after the destination came back")
        received = archive.wait_for_files(3, timeout=30)
    kinds = sorted(str(dcmread(f, stop_before_pixels=True).Modality) for f in received)
    assert kinds.count("SR") == 1 and len(received) == 3  # one report, two key images: nothing twice


def test_worker_killed_mid_job_reruns_and_reports_once(tmp_path: Path, make_node: Any) -> None:
    """SIGKILL the only worker while it holds the job; after the lease expires another worker runs the job
    again and the destination receives one report, once (storescp keeps a second file for a repeated
    SOP Instance UID, so a duplicate send would show)."""
    # A ViT-S encoder and 24 images make the job run for seconds, so the kill lands while it runs.
    models = write_untrained_models(tmp_path / "models", tasks=("kl_grade",), arch="vit_small_patch16_dinov3")
    with StoreSCP(tmp_path / "archive") as archive:
        destination = {"name": "archive", "ae_title": archive.aet, "host": "127.0.0.1", "port": archive.port}
        node = make_node(
            models_dir=models,
            destinations=[destination],
            broker_url=redis_url(),
            queue_name=f"orthonode.test.{uuid.uuid4().hex[:12]}",
            job_lease_seconds=20,
        )
        uid = new_study_uid()
        datasets = [
            radiograph(uid, laterality=side, seed=i, series_number=1 if side == "L" else 2)
            for i, side in enumerate(["L", "R"] * 12)
        ]
        files = write_all(datasets, tmp_path / "xr")
        first = WorkerProcess(tmp_path / "worker1", node.env).start()
        try:
            out = node.cli("send", "127.0.0.1", str(node.port), "--aet", node.ae_title, *map(str, files))
            assert out.returncode == 0, out.stdout + out.stderr

            def running(status: dict[str, Any]) -> bool:
                jobs = jobs_of(status, uid)
                return bool(jobs) and jobs[0]["state"] == "running"

            node.wait_for(running, timeout=120, what="the job to run")
            first.kill()
        finally:
            first.__exit__(None, None, None)
        killed = jobs_of(node.status(), uid)[0]
        assert killed["state"] == "running" and killed["attempts"] == 1  # it died holding the job
        with WorkerProcess(tmp_path / "worker2", node.env):
            status = node.wait_for(delivered([uid]), timeout=240, what="the re-run job's delivery")
            received = archive.wait_for_files(3, timeout=30)
        (job,) = jobs_of(status, uid)
        assert job["attempts"] == 2
    kinds = sorted(str(dcmread(f, stop_before_pixels=True).Modality) for f in archive.files())
    assert kinds.count("SR") == 1 and len(received) == 3 and len(archive.files()) == 3
