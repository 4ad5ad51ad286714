"""Self-tests of the integration-test support library (tests/support) against the real tools:
Orthanc 1.10, dcmtk (storescu, echoscu, storescp), dciodvfy, PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from support import services
from support.peers.dcmtk import StoreSCP, association_config, dciodvfy, echoscu, storescu
from support.peers.orthanc import Orthanc, OrthancError
from support.peers.ports import free_port, wait_for_port
from support.peers.synthetic import (
    SYNTHETIC_COMMENT,
    SYNTHETIC_PATIENT_NAME,
    dataset_bytes,
    knee_radiograph_from_png,
    mr_series,
    new_study_uid,
    radiograph,
    write_all,
)

pytestmark = pytest.mark.integration

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


@pytest.fixture
def clean_orthanc(orthanc: Orthanc) -> Orthanc:
    orthanc.delete_all()
    return orthanc


def test_free_port_and_wait_for_port() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.2)


def test_missing_service_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        services.require_binary("no-such-binary-orthonode", "no-such-package")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        services.require_binary("no-such-binary-orthonode", "no-such-package")


def test_synthetic_objects_pass_dciodvfy(tmp_path: Path) -> None:
    services.require_binary("dciodvfy", "dicom3tools")
    uid = new_study_uid()
    datasets = [
        mr_series(uid, n_slices=2, plane="sagittal")[0],
        mr_series(uid, n_slices=2, plane="axial", description="AX T2 FS", series_number=2)[1],
        radiograph(uid, laterality="L"),
        radiograph(uid, laterality="R", modality="CR", seed=1),
    ]
    pngs = sorted((SHARED_DATA / "knee_kl224" / "val" / "2").glob("*.png"))[:1]
    if pngs:
        datasets.append(knee_radiograph_from_png(pngs[0], uid, "L"))
    for path, ds in zip(write_all(datasets, tmp_path), datasets, strict=True):
        errors, _warnings = dciodvfy(path)
        assert errors == [], f"{ds.SOPClassUID.name} ({path.name}): {errors}"
        assert path.name.startswith("img") and ds.SOPInstanceUID not in path.name
    synthetic = dcmread(tmp_path / "img00001.dcm")
    assert synthetic.PatientName == SYNTHETIC_PATIENT_NAME
    assert synthetic.ImageComments == SYNTHETIC_COMMENT


def test_orthanc_upload_and_store_to_storescp(clean_orthanc: Orthanc, tmp_path: Path) -> None:
    orthanc = clean_orthanc
    uid = new_study_uid()
    series = mr_series(uid, n_slices=3, plane="coronal", description="COR PD", seed=3)
    ids = [orthanc.upload(dataset_bytes(ds)) for ds in series]
    assert len(set(ids)) == 3
    assert orthanc.wait_for_instances(3, timeout=5) and len(orthanc.studies()) == 1
    found = orthanc.find_instances(uid)
    assert sorted(item["ID"] for item in found) == sorted(ids)
    tags = orthanc.instance_tags(ids[0])
    assert tags["PatientName"] == SYNTHETIC_PATIENT_NAME and tags["StudyInstanceUID"] == uid
    assert dcmread(io.BytesIO(orthanc.instance_file(ids[0]))).StudyInstanceUID == uid

    with StoreSCP(tmp_path / "received", aet="REFSCP") as scp:
        orthanc.add_modality("ref", scp.aet, scp.host, scp.port)
        assert orthanc.echo("ref")
        (study_id,) = orthanc.find_studies(uid)
        answer = orthanc.store_to_modality("ref", [study_id])
        assert answer["FailedInstancesCount"] == 0 and answer["InstancesCount"] == 3, answer
        received = scp.wait_for_files(3, timeout=10)
    assert {dcmread(p).SOPInstanceUID for p in received} == {ds.SOPInstanceUID for ds in series}

    orthanc.add_modality("nobody", "NOBODY", "127.0.0.1", free_port())
    assert not orthanc.echo("nobody", timeout=2)
    with pytest.raises(OrthancError, match="HTTP"):
        orthanc.store_to_modality("nobody", [study_id], timeout=2)


def test_storescu_and_echoscu_to_orthanc(clean_orthanc: Orthanc, tmp_path: Path) -> None:
    orthanc = clean_orthanc
    echo = echoscu("127.0.0.1", orthanc.dicom_port, called_aet=orthanc.aet, timeout=10)
    assert echo.returncode == 0, echo.stderr
    uid = new_study_uid()
    files = write_all([*mr_series(uid, n_slices=2), radiograph(uid, laterality="R")], tmp_path / "study")
    compressed = SHARED_DATA / "dicom_msk" / "wg04" / "MR3_knee_JPLL.dcm"
    sources = [*files, compressed] if compressed.exists() else files
    result = storescu("127.0.0.1", orthanc.dicom_port, sources, called_aet=orthanc.aet, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = orthanc.wait_for_instances(len(sources), timeout=10)
    assert len(orthanc.find_instances(uid)) == 3
    if compressed.exists():
        syntaxes = {orthanc.instance_metadata(i).get("TransferSyntax") for i in ids}
        assert JPEG_LOSSLESS_SV1 in syntaxes, "storescu did not send the compressed file in its own syntax"
        with pytest.raises(ValueError, match="cannot decompress"):
            storescu("127.0.0.1", orthanc.dicom_port, [compressed], propose="uncompressed")


def test_association_config_proposes_each_pair_once() -> None:
    config = association_config([("1.2.3", "1.2.840.10008.1.2.1"), ("1.2.3", "1.2.840.10008.1.2.1")])
    assert "PresentationContext1 = 1.2.3\\TS1" in config
    assert "PresentationContext2" not in config


def test_postgres_fresh_database() -> None:
    import psycopg

    base = services.postgres_url()
    with services.fresh_postgres_database(base) as url:
        assert url != base and url.startswith("postgresql+psycopg://")
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("CREATE TABLE t (x int)")
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(
        base.replace("postgresql+psycopg://", "postgresql://", 1), connect_timeout=3
    ) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert gone == (0,)


def test_redis_and_rabbitmq_urls() -> None:
    assert services.redis_url().startswith("redis://")
    assert services.rabbitmq_url().startswith("amqp://")


def test_the_log_scan_finds_the_test_datas_identifiers_and_nothing_else() -> None:
    from support import phi

    assert phi.leaks([("a.log", f"study from {SYNTHETIC_PATIENT_NAME} received")]) == [
        "a.log: PatientName found"
    ]
    assert phi.leaks([("b.log", "stored 1.2.826.0.1.3680043.8.498.1 (512 bytes) on port 11112")]) == []
    assert phi.leaks([("c.log", "patient SYNTHETIC KNEE")]) == ["c.log: PatientName found"]
