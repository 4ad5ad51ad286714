"""Dataset adapters on fixtures written in each dataset's exact layout, and Chen 2018 on real files."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heads.datasets import load_dataset, load_sample
from heads.datasets.base import (
    DatasetError,
    LabelledDataset,
    PatientLeakError,
    Sample,
    carve_validation,
    check_patient_splits,
    load_pickled_array,
    subsample_patients,
)
from heads.datasets.chen_kl import load_chen_kl, patient_key
from heads.datasets.csv_manifest import load_csv_manifest
from heads.datasets.kneemri import load_kneemri
from heads.datasets.mrnet import load_mrnet
from heads.datasets.mura import load_mura


def _sample(key: str, patient: str, split: str, label: int = 0) -> Sample:
    return Sample(key=key, paths=(), label=label, patient_id=patient, split=split)


def test_patient_crossing_splits_raises() -> None:
    check_patient_splits(
        [_sample("a", "p1", "train"), _sample("b", "p1", "train"), _sample("c", "p2", "val")]
    )
    with pytest.raises(PatientLeakError, match="1 patient"):
        check_patient_splits([_sample("a", "p1", "train"), _sample("b", "p1", "val")])
    with pytest.raises(PatientLeakError):
        LabelledDataset(
            "x", "kl_grade", Path("."), [_sample("a", "p1", "train"), _sample("b", "p1", "test")], 5
        )


def test_carve_and_subsample_are_by_patient() -> None:
    samples = [_sample(f"{p}{side}", f"p{p}", "train", label=p % 3) for p in range(60) for side in "LR"]
    train, val = carve_validation(samples, 0.2, seed=0)
    assert {s.patient_id for s in train}.isdisjoint({s.patient_id for s in val})
    assert len(train) + len(val) == len(samples)
    assert 8 <= len({s.patient_id for s in val}) <= 16
    assert {s.label for s in val} == {0, 1, 2}  # stratified
    assert carve_validation(samples, 0.2, seed=0) == (train, val)
    quarter = subsample_patients(samples, 0.25, seed=1)
    by_patient: dict[str, int] = {}
    for s in quarter:
        by_patient[s.patient_id] = by_patient.get(s.patient_id, 0) + 1
    assert set(by_patient.values()) == {2}  # both knees of each chosen patient
    assert 12 <= len(by_patient) <= 18
    assert subsample_patients(samples, 1.0, seed=1) == samples


def test_chen_kl_on_real_files(shared_data: Path) -> None:
    root = shared_data / "knee_kl224"
    if not root.is_dir():
        pytest.skip("knee_kl224 not present")
    dataset = load_chen_kl(root, limit_per_class=3)
    assert dataset.splits == ["train", "val"]
    assert dataset.label_counts("train") == [3, 3, 3, 3, 3]
    with open(root / "manifest.csv", newline="") as handle:
        manifest = {row["path"]: row for row in csv.DictReader(handle)}
    for sample in dataset.samples:
        row = manifest[sample.key]
        assert sample.patient_id == row["patient_id"]
        assert sample.side == row["side"]
        assert sample.label == int(row["kl_grade"]) and sample.split == row["split"]
    pixels = load_sample(dataset.samples[0])
    assert pixels.shape == (224, 224) and pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert patient_key("9003126R") == ("9003126", "R")
    assert patient_key("img_12") == ("img_12", None)


def test_chen_kl_leak_in_fixture_is_refused(tmp_path: Path) -> None:
    for split, name in [("train", "9000001L.png"), ("val", "9000001R.png")]:
        (tmp_path / split / "2").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / split / "2" / name)
    with pytest.raises(PatientLeakError):
        load_chen_kl(tmp_path)


def _write_mrnet(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, exams in [("train", ["0000", "0001", "0002"]), ("valid", ["1130", "1131"])]:
        for plane in ("axial", "coronal", "sagittal"):
            (root / split / plane).mkdir(parents=True)
            for exam in exams:
                np.save(
                    root / split / plane / f"{exam}.npy", rng.integers(0, 256, (20, 32, 32), dtype=np.uint8)
                )
        for label_name in ("abnormal", "acl", "meniscus"):
            lines = [f"{exam},{i % 2}" for i, exam in enumerate(exams)]
            (root / f"{split}-{label_name}.csv").write_text("\n".join(lines) + "\n")


def test_mrnet_layout(tmp_path: Path) -> None:
    _write_mrnet(tmp_path)
    dataset = load_mrnet(tmp_path, task="acl_injury", plane="coronal")
    assert dataset.splits == ["train", "valid"]
    assert [s.key for s in dataset.split("valid")] == ["valid/coronal/1130.npy", "valid/coronal/1131.npy"]
    assert [s.label for s in dataset.split("train")] == [0, 1, 0]
    volume = load_sample(dataset.samples[0])
    assert volume.shape == (20, 32, 32) and volume.min() >= 0.0 and volume.max() <= 1.0
    assert load_mrnet(tmp_path, task="meniscus_injury").samples[0].paths[0].parent.name == "sagittal"
    with pytest.raises(DatasetError):
        load_mrnet(tmp_path, task="pcl_injury")
    (tmp_path / "train-acl.csv").write_text("0000,yes\n")
    with pytest.raises(DatasetError, match="NNNN"):
        load_mrnet(tmp_path, task="acl_injury")


def _write_kneemri(root: Path, n: int = 10) -> None:
    rng = np.random.default_rng(1)
    (root / "vol01").mkdir(parents=True)
    header = "examId,seriesNo,aclDiagnosis,kneeLR,roiX,roiY,roiZ,roiHeight,roiWidth,roiDepth,volumeFilename"
    rows = [header]
    for i in range(n):
        exam, series = 400000 + i, 5 + i % 3
        name = f"{exam}-{series}.pck"
        with open(root / "vol01" / name, "wb") as handle:
            pickle.dump(rng.integers(0, 4096, (12, 40, 40)).astype(np.uint16), handle)
        rows.append(f"{exam},{series},{i % 3},{i % 2},10,12,3,20,20,5,{name}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


def test_kneemri_layout(tmp_path: Path) -> None:
    _write_kneemri(tmp_path)
    dataset = load_kneemri(tmp_path, test_fraction=0.3, seed=0)
    assert [s.meta["aclDiagnosis"] for s in dataset.samples] == [i % 3 for i in range(10)]
    assert [s.label for s in dataset.samples] == [int(i % 3 > 0) for i in range(10)]
    assert [s.side for s in dataset.samples[:2]] == ["L", "R"]
    assert set(dataset.splits) == {"train", "test"}
    tear = load_kneemri(tmp_path, threshold=1)
    assert [s.label for s in tear.samples] == [int(i % 3 == 2) for i in range(10)]
    volume = load_sample(dataset.samples[0])
    assert volume.shape == (12, 40, 40) and volume.dtype == np.float32


def test_kneemri_refuses_pickles_that_are_not_arrays(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pck"
    with open(evil, "wb") as handle:
        pickle.dump({"not": "an array"}, handle)
    with pytest.raises(DatasetError):
        load_pickled_array(evil)

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(DatasetError, match="refusing"):
        load_pickled_array(evil)


def _write_mura(parent: Path) -> Path:
    root = parent / "MURA-v1.1"
    studies = [
        ("train", "XR_SHOULDER", "patient00001", "study1_positive", 1, 2),
        ("train", "XR_SHOULDER", "patient00002", "study1_negative", 0, 1),
        ("train", "XR_WRIST", "patient00003", "study1_negative", 0, 1),
        ("valid", "XR_SHOULDER", "patient11185", "study1_positive", 1, 1),
    ]
    images: dict[str, list[str]] = {"train": [], "valid": []}
    labelled: dict[str, list[str]] = {"train": [], "valid": []}
    for split, part, patient, study, label, count in studies:
        rel = f"MURA-v1.1/{split}/{part}/{patient}/{study}/"
        (parent / rel).mkdir(parents=True)
        labelled[split].append(f"{rel},{label}")
        for k in range(1, count + 1):
            Image.fromarray(np.full((20, 16), 100, np.uint8)).save(parent / rel / f"image{k}.png")
            images[split].append(f"{rel}image{k}.png")
    for split in ("train", "valid"):
        (root / f"{split}_image_paths.csv").write_text("\n".join(images[split]) + "\n")
        (root / f"{split}_labeled_studies.csv").write_text("\n".join(labelled[split]) + "\n")
    return root


def test_mura_layout(tmp_path: Path) -> None:
    root = _write_mura(tmp_path)
    dataset = load_mura(root)
    assert len(dataset.samples) == 4  # the wrist study is filtered out
    assert [s.patient_id for s in dataset.split("train")] == ["mura-patient00001"] * 2 + ["mura-patient00002"]
    assert [s.label for s in dataset.samples] == [1, 1, 0, 1]
    assert load_sample(dataset.samples[0]).shape == (20, 16)
    assert len(load_mura(root, study_types=("XR_SHOULDER", "XR_WRIST")).samples) == 5


def test_csv_manifest(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "v.npy", np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "series").mkdir()
    (tmp_path / "m.csv").write_text(
        "path,label,patient_id,split,extra\n"
        "a.png,Present,P1,train,x\n"
        "v.npy,0,P2,test,y\n"
        "series,absent,P3,test,z\n"
    )
    dataset = load_csv_manifest(tmp_path / "m.csv", task="acl_injury", labels=("Absent", "Present"))
    assert [s.label for s in dataset.samples] == [1, 0, 0]
    assert [s.kind for s in dataset.samples] == ["image", "volume", "volume"]
    assert dataset.samples[0].paths[0] == tmp_path / "a.png"
    via_registry = load_dataset("csv", tmp_path / "m.csv", task="acl_injury")
    assert [s.label for s in via_registry.samples] == [1, 0, 0]
    (tmp_path / "bad.csv").write_text("path,label,split\na.png,1,train\n")
    with pytest.raises(DatasetError, match="patient_id"):
        load_csv_manifest(tmp_path / "bad.csv", task="acl_injury", labels=("Absent", "Present"))
    (tmp_path / "leak.csv").write_text("path,label,patient_id,split\na.png,1,P1,train\nv.npy,0,P1,test\n")
    with pytest.raises(PatientLeakError):
        load_csv_manifest(tmp_path / "leak.csv", task="acl_injury", labels=("Absent", "Present"))
