"""A real PACS (Orthanc) routes studies to the node; each complete study version yields exactly one job.

Studies are SYNTHETIC (orthonode/peers/synthetic.py): a multi-series knee MRI with a localizer, and a
bilateral knee radiograph study.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.node import jobs_of, study_of
from support.peers.dcmtk import storescu
from support.peers.synthetic import mr_series, new_study_uid, radiograph, write_all

pytestmark = pytest.mark.integration


def knee_mri_study(tmp_path: Path) -> tuple[str, list[Path]]:
    uid = new_study_uid()
    datasets = [
        *mr_series(uid, n_slices=3, plane="sagittal", description="3-PLANE LOCALIZER", series_number=1),
        *mr_series(uid, n_slices=6, plane="sagittal", description="PD FS SAG", series_number=2, seed=1),
        *mr_series(uid, n_slices=6, plane="coronal", description="COR T1", series_number=3, seed=2),
        *mr_series(uid, n_slices=6, plane="axial", description="AX T2 FS", series_number=4, seed=3),
    ]
    return uid, write_all(datasets, tmp_path / "mri")


def bilateral_knee_radiographs(tmp_path: Path) -> tuple[str, list[Path]]:
    uid = new_study_uid()
    datasets = [radiograph(uid, laterality="L", seed=4), radiograph(uid, laterality="R", seed=5)]
    return uid, write_all(datasets, tmp_path / "xr")


def _one_done_job_each(uids: list[str]) -> Any:
    def check(status: dict[str, Any]) -> bool:
        return all(
            (jobs := jobs_of(status, uid)) and len(jobs) == 1 and jobs[0]["state"] == "done" for uid in uids
        )

    return check


def test_orthanc_routes_studies_to_the_node_one_job_per_study(
    orthanc: Any, make_node: Any, tmp_path: Path
) -> None:
    node = make_node()
    orthanc.add_modality("node", node.ae_title, "127.0.0.1", node.port)
    mri_uid, mri_files = knee_mri_study(tmp_path)
    xr_uid, xr_files = bilateral_knee_radiographs(tmp_path)
    orthanc.upload_all([*mri_files, *xr_files])
    for uid in (mri_uid, xr_uid):
        (study_id,) = orthanc.find_studies(uid)
        orthanc.store_to_modality("node", [study_id])

    status = node.wait_for(_one_done_job_each([mri_uid, xr_uid]), timeout=90, what="one done job per study")

    mri, xr = study_of(status, mri_uid), study_of(status, xr_uid)
    assert mri is not None and xr is not None
    assert (mri["instances"], mri["state"], mri["anatomy"]) == (21, "complete", "knee")
    assert (xr["instances"], xr["state"], xr["anatomy"], xr["laterality"]) == (2, "complete", "knee", "B")
    (mri_job,) = jobs_of(status, mri_uid)
    assert mri_job["detail"].startswith("no report: no encoder in")

    # Orthanc sends the same studies again: duplicates change nothing and make no new job.
    for uid in (mri_uid, xr_uid):
        (study_id,) = orthanc.find_studies(uid)
        orthanc.store_to_modality("node", [study_id])
    time.sleep(4)  # longer than the study quiet time (2 s) plus a sweep
    status = node.status()
    assert [len(jobs_of(status, u)) for u in (mri_uid, xr_uid)] == [1, 1]
    assert study_of(status, mri_uid)["version"] == 1  # type: ignore[index]

    # A late instance (one more slice, sent with dcmtk's storescu) opens version 2 and exactly one more job.
    late = write_all(
        mr_series(mri_uid, n_slices=1, plane="axial", description="AX T2 FS", series_number=5, seed=9),
        tmp_path / "late",
    )
    result = storescu("127.0.0.1", node.port, late, calling_aet="STORESCU", called_aet=node.ae_title)
    assert result.returncode == 0, result.stdout + result.stderr

    def two_versions(status: dict[str, Any]) -> bool:
        jobs = jobs_of(status, mri_uid)
        return len(jobs) == 2 and all(j["state"] == "done" for j in jobs)

    status = node.wait_for(two_versions, timeout=60, what="a second job for the late instance")
    assert sorted(j["study_version"] for j in jobs_of(status, mri_uid)) == [1, 2]
    assert study_of(status, mri_uid)["version"] == 2  # type: ignore[index]
    assert study_of(status, mri_uid)["instances"] == 22  # type: ignore[index]
    assert "late instance: version 2 begins" in node.log_text()


def test_storescu_push_and_sigterm_exits_cleanly(make_node: Any, tmp_path: Path) -> None:
    node = make_node()
    xr_uid, xr_files = bilateral_knee_radiographs(tmp_path)
    result = storescu("127.0.0.1", node.port, xr_files, calling_aet="MODALITY1", called_aet=node.ae_title)
    assert result.returncode == 0, result.stdout + result.stderr
    node.wait_for(_one_done_job_each([xr_uid]), timeout=60, what="the radiograph study's job")
    assert node.terminate(timeout=60) == 0
    assert "stopped" in node.log_text()
