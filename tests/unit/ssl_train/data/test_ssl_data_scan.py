"""Corpus scanner: manifest rows and columns, hashed keys, patient-level splits, slice sampling, skipping."""

from __future__ import annotations

import csv
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from support.corpus import CR_PATIENT_ID, MR_PATIENT_ID, Corpus

from ssl_train.data.scan import (
    MANIFEST_COLUMNS,
    ManifestRow,
    ScanConfig,
    SliceSampling,
    SplitLeakError,
    assign_split,
    read_manifest,
    scan_corpus,
    verify_patient_split,
    write_manifest,
)


def _rows_under(rows: list[ManifestRow], folder: str) -> list[ManifestRow]:
    return [r for r in rows if f"/{folder}/" in r.path]


def test_scan_finds_every_image_and_skips_the_corrupt_file(
    ssl_corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ssl_train.data.scan"):
        result = scan_corpus(ssl_corpus.root)
    formats = sorted(r.format for r in result.rows)
    assert formats == ["dicom"] * 7 + ["nifti"] * 5 + ["png"] * 2
    assert [s.path for s in result.skipped] == ["xr/broken.dcm"]
    assert "skipping xr/broken.dcm" in caplog.text
    assert result.files_seen == 1 + 6 + 2 + 1 + 1  # README.txt is not a candidate
    assert not result.truncated
    summary = result.summary()
    assert summary["images"] == 14 and summary["skipped"] == 1


def test_manifest_columns_and_values(ssl_corpus: Corpus, tmp_path: Path) -> None:
    result = scan_corpus(ssl_corpus.root)
    manifest = write_manifest(result.rows, tmp_path / "out" / "manifest.csv")
    with manifest.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == MANIFEST_COLUMNS
    for required in ("path", "frame", "modality", "anatomy", "patient_key", "study_key", "series_key"):
        assert required in header
    rows = read_manifest(manifest)
    assert rows == result.rows  # round trip, floats included

    (cr,) = [r for r in rows if r.path.endswith("cr_knee.dcm")]
    assert (cr.modality, cr.family, cr.anatomy, cr.laterality) == ("CR", "radiograph", "knee", "L")
    assert (cr.rows, cr.cols, cr.frame, cr.n_slices, cr.photometric) == (24, 32, 0, 1, "MONOCHROME1")
    assert cr.norm_low is None and cr.norm_high is None

    mr = _rows_under(rows, "series1")
    assert len(mr) == 6
    assert {(r.modality, r.family, r.anatomy) for r in mr} == {
        ("MR", "mri", "knee")
    }  # from SeriesDescription
    assert sorted(r.slice_index for r in mr) == list(range(6))
    assert {r.n_slices for r in mr} == {6}
    assert len({r.series_key for r in mr}) == 1 and len({r.study_key for r in mr}) == 1
    assert len({(r.norm_low, r.norm_high) for r in mr}) == 1 and mr[0].norm_low is not None
    # Slice order follows the position along the slice normal (row x column direction = -x here), not
    # file names or write order: the slice written as i (x = -20 + 3 i mm) is slice 5 - i.
    by_name = {Path(r.path).name: r.slice_index for r in mr}
    assert by_name == {
        "img3.dcm": 0,
        "img1.dcm": 1,
        "img5.dcm": 2,
        "img0.dcm": 3,
        "img2.dcm": 4,
        "img4.dcm": 5,
    }

    pngs = _rows_under(rows, "knee_png")
    assert {(Path(r.path).name, r.laterality) for r in pngs} == {("9001695L.png", "L"), ("9001695R.png", "R")}
    assert len({r.patient_key for r in pngs}) == 1  # both knees: one patient
    assert {(r.format, r.anatomy, r.rows, r.cols) for r in pngs} == {("png", "knee", 20, 24)}

    nifti = _rows_under(rows, "nifti")
    assert [r.frame for r in nifti] == [0, 1, 2, 3, 4]
    assert {(r.modality, r.family, r.rows, r.cols, r.n_slices) for r in nifti} == {("MR", "mri", 12, 10, 5)}
    assert nifti[0].norm_low is not None and nifti[0].norm_low < nifti[0].norm_high  # type: ignore[operator]
    assert nifti[0].anatomy == "unknown"


def test_manifest_holds_no_patient_id_or_uid(ssl_corpus: Corpus, tmp_path: Path) -> None:
    result = scan_corpus(ssl_corpus.root)
    text = write_manifest(result.rows, tmp_path / "manifest.csv").read_text()
    for secret in (CR_PATIENT_ID, MR_PATIENT_ID, *ssl_corpus.mr_uids):
        assert secret not in text
    keys = {r.patient_key for r in result.rows}
    assert all(len(k) == 20 and int(k, 16) >= 0 for k in keys)
    # A different key salt gives different keys (keyed hash, not a bare digest).
    other = scan_corpus(ssl_corpus.root, ScanConfig(key_salt="site-secret"))
    assert not keys & {r.patient_key for r in other.rows}


def test_patient_level_split_holds(ssl_corpus: Corpus) -> None:
    for salt in ("a", "b", "c", "d"):
        result = scan_corpus(ssl_corpus.root, ScanConfig(val_fraction=0.5, split_salt=salt))
        mr = _rows_under(result.rows, "series1")
        assert len({r.split for r in mr}) == 1
        assert len({r.split for r in _rows_under(result.rows, "knee_png")}) == 1
        verify_patient_split(result.rows)


def test_split_is_deterministic_and_near_the_fraction() -> None:
    keys = [f"{i:06d}" for i in range(4000)]
    first = [assign_split(k, 0.2, "s") for k in keys]
    assert first == [assign_split(k, 0.2, "s") for k in keys]
    fraction = first.count("val") / len(keys)
    assert 0.17 < fraction < 0.23
    assert all(assign_split(k, 0.0, "s") == "train" for k in keys[:100])
    with pytest.raises(ValueError):
        assign_split("x", 1.0, "s")


def test_verify_patient_split_raises_on_leak(ssl_corpus: Corpus) -> None:
    rows = scan_corpus(ssl_corpus.root).rows
    mr = _rows_under(rows, "series1")
    leaked = [*rows, replace(mr[0], split="val" if mr[0].split == "train" else "train")]
    with pytest.raises(SplitLeakError, match="1 patient"):
        verify_patient_split(leaked)
    assert issubclass(SplitLeakError, ValueError)


def test_folder_split_uses_official_split_folders(ssl_corpus: Corpus) -> None:
    rows = scan_corpus(ssl_corpus.root, ScanConfig(folder_split=True, val_fraction=0.0)).rows
    assert {r.split for r in _rows_under(rows, "knee_png")} == {"train"}


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (SliceSampling(), [0, 1, 2, 3, 4, 5]),
        (SliceSampling(step=2), [0, 2, 4]),
        (SliceSampling(central_fraction=0.5), [1, 2, 3]),
        (SliceSampling(step=2, central_fraction=0.7), [1, 3]),
    ],
)
def test_slice_sampling(ssl_corpus: Corpus, sampling: SliceSampling, expected: list[int]) -> None:
    assert sampling.select(6) == expected
    rows = scan_corpus(ssl_corpus.root, ScanConfig(slices=sampling)).rows
    assert sorted(r.slice_index for r in _rows_under(rows, "series1")) == expected
    # the volume window is still computed over all six slices
    full = _rows_under(scan_corpus(ssl_corpus.root).rows, "series1")[0]
    assert _rows_under(rows, "series1")[0].norm_high == full.norm_high


def test_max_files_bounds_the_scan(ssl_corpus: Corpus) -> None:
    result = scan_corpus(ssl_corpus.root, ScanConfig(max_files=3))
    assert result.files_seen == 3 and result.truncated


def test_relative_paths(ssl_corpus: Corpus) -> None:
    rows = scan_corpus(ssl_corpus.root, ScanConfig(relative_paths=True)).rows
    assert all(not Path(r.path).is_absolute() for r in rows)
    assert (ssl_corpus.root / rows[0].path).is_file()


@pytest.mark.parametrize(
    "kwargs",
    [{"val_fraction": 1.0}, {"max_files": 0}, {"percentiles": (50.0, 10.0)}, {"patient_patterns": ("x",)}],
)
def test_bad_scan_config_raises_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScanConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"step": 0}, {"central_fraction": 0.0}, {"central_fraction": 1.5}])
def test_bad_slice_sampling_raises_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SliceSampling(**kwargs)  # type: ignore[arg-type]


def test_read_manifest_rejects_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("path,frame\nx.png,0\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_manifest(path)
