"""The throw-away Orthanc of the package (``orthonode.peers.orthanc``) with the REST calls only the
integration tests need: C-ECHO, jobs, listing and deleting resources, tags and metadata of an instance,
and waiting for instances to arrive (Orthanc REST API, Orthanc Book "REST API of the Orthanc server")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from orthonode.peers import orthanc
from orthonode.peers.orthanc import OrthancError

__all__ = ["Orthanc", "OrthancError"]


class Orthanc(orthanc.Orthanc):
    """``orthonode.peers.orthanc.Orthanc`` plus the test-only calls; started and used the same way."""

    def delete(self, path: str, timeout: float = 30.0) -> None:
        self.request("DELETE", path, timeout=timeout)

    def system(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/system")
        return result

    def modalities(self) -> list[str]:
        result: list[str] = self.get("/modalities")
        return result

    def echo(self, modality: str, timeout: float = 10) -> bool:
        """C-ECHO a registered modality; False when the echo fails."""
        try:
            self.request(
                "POST", f"/modalities/{modality}/echo", {"Timeout": int(timeout)}, timeout=timeout + 5
            )
        except OrthancError:
            return False
        return True

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/jobs/{job_id}")
        return result

    def wait_for_job(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/jobs/{id}`` until it is Success or Failure (bounded); return the last job state."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        for _ in range(int(timeout / 0.1) + 1):
            job = self.job(job_id)
            if job.get("State") in {"Success", "Failure"}:
                return job
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        raise TimeoutError(f"Orthanc job {job_id} not finished within {timeout:.0f} s: {job}")

    def patients(self) -> list[str]:
        result: list[str] = self.get("/patients")
        return result

    def studies(self) -> list[str]:
        result: list[str] = self.get("/studies")
        return result

    def series(self) -> list[str]:
        result: list[str] = self.get("/series")
        return result

    def instances(self) -> list[str]:
        result: list[str] = self.get("/instances")
        return result

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Simplified tags (keyword -> value) of an instance."""
        result: dict[str, Any] = self.get(f"/instances/{orthanc_id}/simplified-tags")
        return result

    def instance_metadata(self, orthanc_id: str) -> dict[str, Any]:
        """Orthanc metadata of an instance (TransferSyntax, RemoteAET, SopClassUid, ...)."""
        result: dict[str, Any] = self.get(f"/instances/{orthanc_id}/metadata?expand")
        return result

    def wait_for_instances(
        self,
        expected: int | Callable[[list[str]], bool],
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> list[str]:
        """Poll ``/instances`` until there are ``expected`` (or more) instances or the predicate holds.

        Returns the instance IDs; raises TimeoutError with the last list and Orthanc's log tail.
        """
        predicate: Callable[[list[str]], bool]
        if isinstance(expected, int):
            count = expected
            predicate = lambda ids: len(ids) >= count  # noqa: E731
        else:
            predicate = expected
        deadline = time.monotonic() + timeout
        ids: list[str] = []
        for _ in range(int(timeout / interval) + 1):
            ids = self.instances()
            if predicate(ids):
                return ids
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise TimeoutError(
            f"Orthanc instances did not reach {expected!r} within {timeout:.0f} s (have {len(ids)}); "
            f"log tail:\n{self.log_tail(1500)}"
        )

    def delete_all(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for patient in self.patients():
            self.delete(f"/patients/{patient}")
