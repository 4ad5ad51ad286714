"""``orthonode validate``: real validators on real objects, and errors that name the file and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from support.services import require_binary

from conformance import samples
from conformance.validate import validate_file, validate_paths


@pytest.fixture
def emitted(tmp_path: Path) -> Path:
    """The node's outputs (SR and key image) for a trained and an untrained finding."""
    require_binary("dciodvfy", "dicom3tools")
    require_binary("dsrdump", "dcmtk")
    out = tmp_path / "emitted"
    out.mkdir()
    for trained in (True, False):
        for output in samples.sample(0, trained).outputs:
            output.dataset.save_as(out / f"{output.kind}-{trained}.dcm", enforce_file_format=True)
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orthonode", "validate", *args], capture_output=True, text=True, timeout=300
    )


def test_the_nodes_outputs_pass_every_check(emitted: Path) -> None:
    reports = validate_paths([emitted])
    assert len(reports) == 4
    for report in reports:
        assert report.ok, report.lines()
        expected = {"parse", "dciodvfy", "dsrdump", "highdicom"} if "sr-" in report.path.name else {
            "parse", "dciodvfy", "pixels"}  # fmt: skip
        assert set(report.checks) == expected
        assert not report.warnings, report.warnings


def test_a_broken_report_fails_with_the_validators_words(emitted: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(emitted / "sr-True.dcm")
    del ds.Modality  # Type 1 in the SR Document Series Module
    del ds.ContentSequence[0].ConceptNameCodeSequence  # a content item without its concept name
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken, enforce_file_format=True)
    report = validate_file(broken)
    assert not report.ok
    assert any("dciodvfy" in e and "Modality" in e for e in report.errors), report.errors
    assert any(e.startswith("highdicom") or e.startswith("dsrdump") for e in report.errors), report.errors


def test_truncated_pixels_and_non_dicom_are_errors(emitted: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(emitted / "sc-True.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    short = tmp_path / "short.dcm"
    ds.save_as(short, enforce_file_format=True)
    assert any(e.startswith("pixel data") for e in validate_file(short).errors)
    text = tmp_path / "notes.txt"
    text.write_text("not dicom")
    assert validate_file(text).errors[0].startswith("not a readable DICOM file")


def test_the_command_exits_1_on_any_error_and_names_the_file(emitted: Path, tmp_path: Path) -> None:
    ok = _cli(str(emitted))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4 file(s), 0 with errors" in ok.stdout
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 200)
    failed = _cli(str(emitted), str(bad), "--quiet")
    assert failed.returncode == 1
    assert f"FAIL {bad}" in failed.stdout and "5 file(s), 1 with errors" in failed.stdout
    assert _cli(str(tmp_path / "missing")).returncode == 2


def test_a_full_size_film_report_and_key_image_pass(tmp_path: Path) -> None:
    """Issue 14: the SR with a TID 1410 joint region and a not-graded lateral, and the film key image."""
    require_binary("dciodvfy", "dicom3tools")
    require_binary("dsrdump", "dcmtk")
    for output in samples.film_sample().outputs:
        output.dataset.save_as(tmp_path / f"{output.kind}.dcm", enforce_file_format=True)
    reports = validate_paths([tmp_path])
    assert sorted(r.path.name for r in reports) == ["sc.dcm", "sr.dcm"]
    for report in reports:
        assert report.ok and not report.warnings, report.lines()
