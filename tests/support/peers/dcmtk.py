"""Wrappers around dcmtk's command-line tools (and dicom3tools' ``dciodvfy``) for integration tests.

Every dcmtk tool is started with ``TCP_NODELAY=1`` in its environment: without it dcmtk's many small
writes can stall on Nagle's algorithm and make associations take tens of milliseconds per message.

dcmtk 3.6.7 quirks these wrappers account for (see also ``storescu``):

- ``storescu`` proposes only uncompressed transfer syntaxes by default, also for compressed files, and
  it cannot decompress on the fly ("unable to convert dataset from 'JPEG Lossless ...' transfer syntax
  to 'Little Endian Explicit'"). ``-R`` does not change that. To send a compressed file as it is, the
  compressed syntax must be proposed: with one of the ``-x?`` flags (one syntax per run) or with an
  association configuration file (``-xf FILE PROFILE``), which is what ``propose="original"`` writes.
- ``storescp`` accepts only uncompressed syntaxes unless started with ``+xa``, and only the storage SOP
  classes it knows unless started with ``-pm``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from support.peers.ports import LOOPBACK, free_port, wait_for_port
from support.services import require_binary

DCMTK_PACKAGE = "dcmtk"
DICOM3TOOLS_PACKAGE = "dicom3tools"
MAX_PRESENTATION_CONTEXTS = 128
MAX_START_ATTEMPTS = 3

UNCOMPRESSED_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    }
)


def dcmtk_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for dcmtk tools: the current one plus ``TCP_NODELAY=1``."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    if extra:
        env.update(extra)
    return env


def _run(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dcmtk_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --------------------------------------------------------------------------------------------- storescu


def file_syntaxes(files: Iterable[Path]) -> list[tuple[str, str]]:
    """``(SOP Class UID, Transfer Syntax UID)`` of each file, read from its file meta information."""
    from pydicom import dcmread

    pairs: list[tuple[str, str]] = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if not sop_class or not syntax:
            raise ValueError(f"{path}: no SOP class or transfer syntax in the file meta information")
        pairs.append((sop_class, syntax))
    return pairs


def association_config(pairs: Iterable[tuple[str, str]], profile: str = "Original") -> str:
    """An dcmtk association configuration (``-xf``) proposing one context per (SOP class, syntax) pair."""
    unique = sorted(set(pairs))
    if not unique:
        raise ValueError("no files to propose presentation contexts for")
    if len(unique) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(f"{len(unique)} (SOP class, transfer syntax) pairs exceed 128 presentation contexts")
    syntaxes = sorted({syntax for _, syntax in unique})
    names = {syntax: f"TS{i}" for i, syntax in enumerate(syntaxes, start=1)}
    lines = ["[[TransferSyntaxes]]"]
    for syntax in syntaxes:
        lines += [f"[{names[syntax]}]", f"TransferSyntax1 = {syntax}"]
    lines += ["", "[[PresentationContexts]]", "[Contexts]"]
    for i, (sop_class, syntax) in enumerate(unique, start=1):
        lines.append(f"PresentationContext{i} = {sop_class}\\{names[syntax]}")
    lines += ["", "[[Profiles]]", f"[{profile}]", "PresentationContexts = Contexts", ""]
    return "\n".join(lines)


def storescu(
    host: str,
    port: int,
    files: Sequence[Path],
    *,
    calling_aet: str = "STORESCU",
    called_aet: str = "ORTHONODE",
    propose: Literal["original", "uncompressed"] = "original",
    extra_args: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with dcmtk's ``storescu`` in one association; never raises on a non-zero exit.

    ``propose="original"``: propose exactly each file's own transfer syntax, one presentation context
    per (SOP class, transfer syntax) pair of the files, via a generated ``-xf`` configuration; compressed
    files are sent as they are, and a receiver that rejects a syntax makes that store fail.
    ``propose="uncompressed"``: storescu's default proposal (``-x=``: Explicit VR Little Endian, then Big
    Endian and Implicit VR for its standard storage classes); storescu 3.6.7 cannot decompress, so
    compressed files are refused here with ValueError (decompress them first, e.g. ``dcmdjpeg``).

    storescu stops at the first failed store unless ``extra_args`` holds ``-nh``.
    """
    binary = require_binary("storescu", DCMTK_PACKAGE)
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    base = [binary, "-aet", calling_aet, "-aec", called_aet]
    tail = [*extra_args, host, str(port), *map(str, paths)]
    if propose == "uncompressed":
        compressed = [
            str(p)
            for p, (_, ts) in zip(paths, file_syntaxes(paths), strict=True)
            if ts not in UNCOMPRESSED_TRANSFER_SYNTAXES
        ]
        if compressed:
            raise ValueError(
                "storescu 3.6.7 cannot decompress on the fly; these files are compressed: "
                + ", ".join(compressed[:5])
            )
        return _run([*base, *tail], timeout)
    if propose != "original":
        raise ValueError(f"propose must be 'original' or 'uncompressed', not {propose!r}")
    config = association_config(file_syntaxes(paths))
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        config_path = Path(tmp) / "storescu.cfg"
        config_path.write_text(config)
        return _run([*base, "-xf", str(config_path), "Original", *tail], timeout)


def echoscu(
    host: str,
    port: int,
    *,
    calling_aet: str = "ECHOSCU",
    called_aet: str = "ORTHONODE",
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with dcmtk's ``echoscu``; never raises on a non-zero exit (check ``returncode``)."""
    binary = require_binary("echoscu", DCMTK_PACKAGE)
    acse = str(max(1, int(timeout)))
    args = [binary, "-aet", calling_aet, "-aec", called_aet, "-to", acse, "-ta", acse, host, str(port)]
    return _run(args, timeout)


# --------------------------------------------------------------------------------------------- validators


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dicom3tools' ``dciodvfy`` on ``path``, as ``orthonode validate`` reads them
    (:func:`conformance.validate.dciodvfy_lines`); skips (or fails in CI) when dciodvfy is missing."""
    from conformance.validate import dciodvfy_lines

    require_binary("dciodvfy", DICOM3TOOLS_PACKAGE)
    return dciodvfy_lines(path)


def dsrdump(path: Path, *extra_args: str, timeout: float = 60) -> str:
    """The text rendering of a DICOM Structured Report by dcmtk's ``dsrdump``; raise on failure."""
    binary = require_binary("dsrdump", DCMTK_PACKAGE)
    result = _run([binary, *extra_args, str(path)], timeout)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout


# --------------------------------------------------------------------------------------------- storescp


class StoreSCP:
    """dcmtk's ``storescp`` on a free loopback port, writing what it receives into ``directory``.

    Accepts every transfer syntax dcmtk knows (``+xa``) and unknown SOP classes (``-pm``), so it is a
    plain destination for anything Orthanc or the node sends (SR included), and the reference receiver
    for ingest benchmarks (``ignore=True`` receives without writing files). With ``unique_filenames``
    (``+uf``) a repeated SOP Instance UID gives a second file instead of overwriting the first.

    storescp 3.6.7 has no option to bind one address: it listens on all interfaces.
    """

    def __init__(
        self,
        directory: Path,
        aet: str = "STORESCP",
        *,
        unique_filenames: bool = True,
        ignore: bool = False,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
        port: int | None = None,
    ) -> None:
        """``port``: listen there (e.g. to come back on the port a destination is configured with);
        default a free one."""
        self.directory = Path(directory)
        self.aet = aet
        self.host = LOOPBACK
        self.port = 0
        self._fixed_port = port
        self._unique_filenames = unique_filenames
        self._ignore = ignore
        self._extra_args = tuple(extra_args)
        self._start_timeout = start_timeout
        self.log_path = self.directory.parent / f"storescp-{self.directory.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self, port: int) -> list[str]:
        binary = require_binary("storescp", DCMTK_PACKAGE)
        args = [binary, "--output-directory", str(self.directory), "-aet", self.aet, "+xa", "-pm", "-dhl"]
        if self._unique_filenames:
            args.append("+uf")
        if self._ignore:
            args.append("--ignore")
        return [*args, *self._extra_args, str(port)]

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("storescp is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(MAX_START_ATTEMPTS):
            port = self._fixed_port or free_port()
            with open(self.log_path, "ab") as log:
                process = subprocess.Popen(
                    self.command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dcmtk_env(),
                )
            try:
                self._wait_listening(process, port)
            except (TimeoutError, RuntimeError) as exc:
                last_error = str(exc)
                _terminate(process)
                continue
            self._process, self.port = process, port
            return self
        raise RuntimeError(f"storescp did not start after {MAX_START_ATTEMPTS} attempts: {last_error}")

    def _wait_listening(self, process: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        for _ in range(int(self._start_timeout / 0.05) + 1):
            if process.poll() is not None:
                raise RuntimeError(f"storescp exited with {process.returncode}: {self.log_tail()}")
            try:
                wait_for_port(LOOPBACK, port, timeout=0.2)
                return
            except TimeoutError:
                pass
            if time.monotonic() >= deadline:
                break
        raise TimeoutError(f"storescp did not listen on {LOOPBACK}:{port} within {self._start_timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: a destination that hangs. The kernel still accepts connections (the listen backlog),
        but nothing answers them until :meth:`resume`."""
        assert self._process is not None, "storescp is not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`: the connections waiting in the backlog are served in turn."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """Received files (storescp writes each one completely before the next C-STORE response)."""
        return sorted(p for p in self.directory.iterdir() if p.is_file() and not p.name.startswith("."))

    def wait_for_files(self, count: int, timeout: float = 30.0, interval: float = 0.1) -> list[Path]:
        """Wait until at least ``count`` files are there and their sizes stopped changing (bounded)."""
        deadline = time.monotonic() + timeout
        previous: dict[Path, int] = {}
        files: list[Path] = []
        for _ in range(int(timeout / interval) + 2):
            files = self.files()
            sizes = {p: p.stat().st_size for p in files}
            if len(files) >= count and sizes == previous:
                return files
            previous = sizes
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise TimeoutError(
            f"storescp received {len(files)} of {count} files within {timeout:.0f} s; log: {self.log_tail()}"
        )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"


def _terminate(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
