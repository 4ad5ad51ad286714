"""A plain local Storage SCP (PS3.4 Annex B) that keeps what it receives in a folder.

The demo's destination when Orthanc is not installed: it accepts the SOP classes the node emits
(Comprehensive 3D SR, Secondary Capture) and every storage class the node receives, in the uncompressed
transfer syntaxes, and writes each instance as ``<SOP Instance UID>.dcm`` after checking the UID.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from orthonode.peers.ports import LOOPBACK, free_port
from orthonode.uid import validate_uid

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


class StoreSink:
    """``with StoreSink(folder) as sink:`` listens on ``sink.port`` (127.0.0.1) until the block ends."""

    def __init__(self, directory: Path, ae_title: str = "DEMO-PACS") -> None:
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = free_port()
        self._server: Any = None
        self._lock = threading.Lock()

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        try:
            name = validate_uid(str(ds.SOPInstanceUID), "SOP Instance UID")
        except Exception:
            return 0xA900  # dataset does not match SOP class: no usable SOP Instance UID
        with self._lock:
            ds.save_as(self.directory / f"{name}.dcm", enforce_file_format=True)
        return 0x0000

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.dcm"))

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        for sop_class in (COMPREHENSIVE_3D_SR, ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
