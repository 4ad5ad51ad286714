"""A real Orthanc (Debian's ``orthanc`` package, 1.10.x) run as a subprocess on free loopback ports.

Orthanc plays the PACS in ``orthonode demo``: it sends a study to the node by C-STORE
(``store_to_modality``) and receives the node's results. The integration tests use it through
``tests/support/peers/orthanc.py``, which adds the query, wait and clean-up calls only they need.
Everything here uses the standard library only (``urllib``), so no HTTP client dependency.

Known behaviour of Orthanc 1.10 that matters to the demo and the tests:

- Orthanc 1.10 has no configuration key for the listen address: the HTTP and DICOM servers bind to all
  interfaces. ``RemoteAccessAllowed: false`` makes the HTTP server refuse non-loopback clients; the
  DICOM port is only protected by being a random free port for a short-lived test process.
- The configuration written here is our own file, so Debian's ``/etc/orthanc/orthanc.json`` (which loads
  the plugins in ``/usr/share/orthanc/plugins``) is not used and no plugin is loaded.
- As a C-STORE SCU Orthanc proposes, per SOP class, the file's own transfer syntax alone, Explicit VR
  Little Endian alone, and Implicit VR LE + Big Endian, plus uncompressed contexts for ~60 other storage
  classes. When the next instance needs a (SOP class, syntax) it has not proposed yet, it releases the
  association and opens a new one: a study in several syntaxes arrives over several associations.
- If the receiver refuses the file's compressed syntax, Orthanc transcodes to Explicit VR LE with its
  built-in DCMTK codecs (JPEG, JPEG-LS, RLE). It cannot decode JPEG 2000 without the GDCM plugin: the
  store then fails with HTTP 500 "Cannot transcode from 1.2.840.10008.1.2.4.90 ..." and the instances
  after it are not sent.
- ``DicomAssociationCloseDelay`` (default 5 s) keeps the SCU association open after a store; it is 0 here
  so the receiver sees the release at once. Stopping Orthanc takes about 3 s (the HTTP server's shutdown).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from orthonode.errors import OrthonodeError
from orthonode.peers.ports import LOOPBACK, free_port

ORTHANC_BINARY = "Orthanc"
ORTHANC_PACKAGE = "orthanc"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000
MAX_FREE_PORT_TRIES = 20
MAX_START_ATTEMPTS = 3


class OrthancError(OrthonodeError, RuntimeError):
    """Orthanc failed to start or answered a REST call with an HTTP error."""


class _ExitedDuringStartup(OrthancError):
    """The Orthanc process exited before its REST API answered."""


def _log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return text[-chars:]


class Orthanc:
    """A throw-away Orthanc on 127.0.0.1 with its own storage in ``workdir``.

    Use as a context manager (``with Orthanc(tmp_path) as pacs: ...``) or call ``start()``/``stop()``.
    ``modalities`` maps a modality name to ``(aet, host, port)``; more can be added at run time with
    ``add_modality``.
    """

    def __init__(
        self,
        workdir: Path,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        *,
        name: str = "orthonode-test-pacs",
        stable_age_s: int = 1,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self._aet = aet
        self._modalities = dict(modalities or {})
        self._name = name
        self._stable_age_s = stable_age_s
        self._extra_config = dict(extra_config or {})
        self.http_port = 0
        self._dicom_port = 0
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.config: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicom_port(self) -> int:
        return self._dicom_port

    @property
    def aet(self) -> str:
        return self._aet

    @property
    def host(self) -> str:
        return LOOPBACK

    def build_config(self) -> dict[str, Any]:
        """The JSON configuration Orthanc is started with (only keys that exist in Orthanc 1.10)."""
        storage = self.workdir / "storage"
        config: dict[str, Any] = {
            "Name": self._name,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomPort": self._dicom_port,
            "DicomAet": self._aet,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {
                name: [aet, host, port] for name, (aet, host, port) in self._modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "UnknownSopClassAccepted": True,
            "StableAge": self._stable_age_s,
            "DicomScpTimeout": 30,
            "DicomScuTimeout": 30,
            "HttpTimeout": 60,
            "LogExportedResources": False,
            "SaveJobs": False,
            "DicomAssociationCloseDelay": 0,
        }
        config.update(self._extra_config)
        return config

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        """Write the configuration, start Orthanc and wait until ``GET /system`` answers.

        Free ports are picked just before the start; if Orthanc exits during start-up (e.g. another
        process took a port meanwhile) it is retried on new ports, at most ``MAX_START_ATTEMPTS`` times.
        """
        if self._process is not None:
            raise OrthancError("Orthanc is already running")
        binary = shutil.which(ORTHANC_BINARY)
        if binary is None:
            raise OrthancError(f"{ORTHANC_BINARY} not found: install the Debian package `{ORTHANC_PACKAGE}`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        error: OrthancError | None = None
        for _ in range(MAX_START_ATTEMPTS):
            self.http_port, self._dicom_port = _two_free_ports()
            self.config = self.build_config()
            self.config_path.write_text(json.dumps(self.config, indent=2))
            with contextlib.suppress(FileNotFoundError):
                self.log_path.unlink()
            self._process = subprocess.Popen(
                [binary, f"--logfile={self.log_path}", "--no-jobs", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            try:
                self._wait_until_up(max(1.0, deadline - time.monotonic()))
                return self
            except _ExitedDuringStartup as exc:
                error = exc
                self._process = None
            except BaseException:
                self.stop()
                raise
            if time.monotonic() >= deadline:
                break
        assert error is not None
        raise error

    def _wait_until_up(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        last_error = ""
        for _ in range(int(timeout / 0.1) + 1):
            code = self._process.poll()
            if code is not None:
                raise _ExitedDuringStartup(
                    f"Orthanc exited with code {code} during start-up; log tail:\n{_log_tail(self.log_path)}"
                )
            try:
                self.get("/system", timeout=1.0)
                return
            except (OSError, OrthancError) as exc:
                last_error = str(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise OrthancError(
            f"Orthanc did not answer GET /system on {self.url} within {timeout:.0f} s ({last_error}); "
            f"log tail:\n{_log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of Orthanc's log file, for assertion messages."""
        return _log_tail(self.log_path, chars)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------- HTTP

    def request(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | list[Any] | None = None,
        *,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> bytes:
        """Send one REST request and return the raw response body; raise OrthancError on HTTP errors."""
        data: bytes | None
        headers: dict[str, str] = {}
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        else:
            data = body
        if content_type is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc

    def get(self, path: str, timeout: float = 30.0) -> Any:
        return json.loads(self.request("GET", path, timeout=timeout))

    def post(self, path: str, body: bytes | dict[str, Any] | list[Any], timeout: float = 30.0) -> Any:
        raw = self.request("POST", path, body, timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def put(self, path: str, body: dict[str, Any], timeout: float = 30.0) -> Any:
        raw = self.request("PUT", path, body, timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    # ----------------------------------------------------------------------------------- REST helpers

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register (or replace) a remote modality at run time: ``PUT /modalities/{name}``."""
        self.put(f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})
        self._modalities[name] = (aet, host, port)

    def upload(self, dicom: Path | str | bytes) -> str:
        """Store one DICOM file in Orthanc (``POST /instances``) and return its Orthanc instance ID."""
        data = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        result = self.post("/instances", data)
        if not isinstance(result, dict) or "ID" not in result:
            raise OrthancError(f"unexpected answer to POST /instances: {result!r}")
        return str(result["ID"])

    def upload_all(self, files: Iterable[Path]) -> list[str]:
        return [self.upload(path) for path in files]

    def store_to_modality(
        self,
        modality: str,
        resources: list[str],
        synchronous: bool = True,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """C-STORE resources (Orthanc IDs of patients/studies/series/instances) to a registered modality.

        With ``synchronous`` the call returns after the C-STORE finished (Orthanc's answer lists
        ``FailedInstancesCount``/``InstancesCount``); otherwise it returns the job (``ID``, ``Path``).
        Raises OrthancError carrying Orthanc's error body on HTTP errors (e.g. association rejected).
        """
        body = {"Resources": list(resources), "Synchronous": synchronous, "Timeout": int(timeout)}
        result = self.post(f"/modalities/{modality}/store", body, timeout=timeout + 10)
        return dict(result or {})

    def find_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Instances of the study with StudyInstanceUID ``study_uid`` (``POST /tools/find``, expanded)."""
        body = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        result: list[dict[str, Any]] = self.post("/tools/find", body)
        return result

    def find_studies(self, study_uid: str) -> list[str]:
        """Orthanc IDs of studies with StudyInstanceUID ``study_uid``."""
        body = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        result: list[str] = self.post("/tools/find", body)
        return result

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, byte for byte (``GET /instances/{id}/file``)."""
        return self.request("GET", f"/instances/{orthanc_id}/file")


def _two_free_ports() -> tuple[int, int]:
    """Two distinct free loopback ports (bounded number of tries)."""
    first = free_port()
    for _ in range(MAX_FREE_PORT_TRIES):
        second = free_port()
        if second != first:
            return first, second
    raise OSError("could not find two distinct free ports")
