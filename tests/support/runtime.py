"""Settings and index helpers for tests that run node code in-process (no ``orthonode serve``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from orthonode.index.db import transaction
from orthonode.index.models import Job
from orthonode.runtime import Runtime
from orthonode.settings import Settings, load_settings


def isolated_settings(**overrides: Any) -> Settings:
    """Settings from ``overrides`` and defaults only: no ORTHONODE_* variable of the caller (any case)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.upper().startswith("ORTHONODE_"):
                mp.delenv(key)
        return load_settings(**overrides)


def job_row(rt: Runtime, job_id: int) -> Job:
    """The job's row as the index has it now (detached)."""
    with transaction(rt.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None, f"job {job_id} is not in the index"
        return job
