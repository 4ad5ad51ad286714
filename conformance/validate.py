"""Validation of DICOM objects, the node's outputs first: ``orthonode validate PATH...``.

Per file, each check that applies:

* **parse**: pydicom reads it as a DICOM Part 10 file with SOP Class and SOP Instance UIDs;
* **dciodvfy** (dicom3tools): the dataset against its IOD's modules (PS3.3). dciodvfy exits 0 even when
  it finds errors, so its output is read: lines with ``Error`` are errors, with ``Warning`` warnings;
  the warnings in :data:`ACCEPTED_WARNINGS` are known and justified, any other one is reported;
* for Structured Reports, **dsrdump** (dcmtk) renders the document (PS3.3 C.17) and a **highdicom round
  trip** reads it back as a TID 1500 Measurement Report (``orthonode.encode.sr.read_outcomes``: its
  findings, with their image regions, and its not-graded outcomes; one of them at least);
* for images, the **pixel data** decodes to the shape Rows x Columns (x samples) declares.

A missing tool is an error that names the Debian package, never a silent pass. ``validate_paths``
expands folders (recursively) and returns one :class:`FileReport` per file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from orthonode.encode.sr import read_outcomes
from orthonode.sop_classes import STORAGE_BY_UID

TOOL_TIMEOUT = 60.0
TOOLS = {"dciodvfy": "dicom3tools", "dsrdump": "dcmtk"}
SR_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.840.10008.5.1.4.1.1.88.33",
        "1.2.840.10008.5.1.4.1.1.88.34",
    }
)

#: dciodvfy warnings that are expected, each with its reason (a regular expression over the whole line).
ACCEPTED_WARNINGS: tuple[tuple[str, str], ...] = (
    (
        r"^Warning - Unrecognized defined term <99ORTHO> for value 1 of attribute "
        r"<Coding Scheme Designator>$",
        "our private coding scheme (PS3.16 section 8 allows designators that start with 99), declared in the "
        "Coding Scheme Identification Sequence; dciodvfy only knows the registered designators (PS3.16 "
        "Table 8-1), and SNOMED CT has no concepts for the task questions",
    ),
)


@dataclass
class FileReport:
    path: Path
    sop_class: str = ""
    checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # warnings matched by ACCEPTED_WARNINGS

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        head = f"{'OK  ' if self.ok else 'FAIL'} {self.path}"
        if self.sop_class:
            cls = STORAGE_BY_UID.get(self.sop_class)
            head += f" [{cls.name if cls else self.sop_class}; {', '.join(self.checks)}]"
        out = [head]
        out += [f"  error: {e}" for e in self.errors]
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _tool(name: str) -> str | None:
    return shutil.which(name)


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _missing(report: FileReport, name: str) -> None:
    report.errors.append(f"{name} is not installed (Debian package {TOOLS[name]}); cannot validate")


def dciodvfy_lines(path: Path) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` lines of dciodvfy on ``path`` (FileNotFoundError when it is missing)."""
    binary = _tool("dciodvfy")
    if binary is None:
        raise FileNotFoundError("dciodvfy")
    result = _run([binary, str(path)])
    errors, warnings = [], []
    for raw in (result.stdout + "\n" + result.stderr).splitlines():
        line = raw.strip()
        if line.startswith("Error") or " - Error - " in line:
            errors.append(line)
        elif line.startswith("Warning") or " - Warning - " in line:
            warnings.append(line)
    return errors, warnings


def _accepted(line: str) -> bool:
    return any(re.search(pattern, line) for pattern, _ in ACCEPTED_WARNINGS)


def _check_iod(path: Path, report: FileReport) -> None:
    try:
        errors, warnings = dciodvfy_lines(path)
    except FileNotFoundError:
        _missing(report, "dciodvfy")
        return
    report.checks.append("dciodvfy")
    report.errors += [f"dciodvfy: {e}" for e in errors]
    for line in warnings:
        (report.accepted if _accepted(line) else report.warnings).append(f"dciodvfy: {line}")


def _check_sr(path: Path, ds: pydicom.Dataset, report: FileReport) -> None:
    binary = _tool("dsrdump")
    if binary is None:
        _missing(report, "dsrdump")
    else:
        result = _run([binary, str(path)])
        report.checks.append("dsrdump")
        if result.returncode != 0:
            report.errors.append(f"dsrdump: exit {result.returncode}: {result.stderr.strip()[:300]}")
        else:
            for line in result.stderr.splitlines():
                if line.startswith("E:"):
                    report.errors.append(f"dsrdump: {line.strip()}")
                elif line.startswith("W:"):
                    report.warnings.append(f"dsrdump: {line.strip()}")
    try:
        outcomes = read_outcomes(ds)
    except Exception as exc:  # highdicom raises many kinds on a malformed tree; each is a finding here
        report.errors.append(f"highdicom: not a readable TID 1500 Measurement Report: {exc}")
        return
    report.checks.append("highdicom")
    if not outcomes.findings and not outcomes.not_graded:
        report.errors.append("highdicom: the report has no measurement group")


def _check_pixels(ds: pydicom.Dataset, report: FileReport) -> None:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise their own kinds
        report.errors.append(f"pixel data: cannot decode: {exc}")
        return
    report.checks.append("pixels")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    expected: tuple[int, ...] = (int(ds.Rows), int(ds.Columns))
    if samples > 1:
        expected = (*expected, samples)
    if frames > 1:
        expected = (frames, *expected)
    if tuple(pixels.shape) != expected:
        report.errors.append(f"pixel data: shape {tuple(pixels.shape)}, the header declares {expected}")


def validate_file(path: Path) -> FileReport:
    """Every check that applies to ``path`` (see the module docstring)."""
    report = FileReport(Path(path))
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        report.errors.append(f"not a readable DICOM file: {exc}")
        return report
    sop_class = str(ds.get("SOPClassUID", ""))
    if not sop_class or "SOPInstanceUID" not in ds:
        report.errors.append("no SOP Class UID or SOP Instance UID")
        return report
    report.sop_class = sop_class
    report.checks.append("parse")
    _check_iod(path, report)
    if sop_class in SR_CLASSES:
        _check_sr(path, ds, report)
    elif "PixelData" in ds:
        _check_pixels(ds, report)
    return report


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, and every file below each folder (sorted); a missing path is an error later."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file())
        else:
            out.append(path)
    return out


def validate_paths(paths: Iterable[Path]) -> list[FileReport]:
    return [validate_file(p) for p in expand(paths)]
