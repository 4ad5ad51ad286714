"""Tests of orthonode.runtime.Runtime: it owns what a process holds (the index engine, the file store
and its fsync threads, the loaded models), nothing of it is module state, and a forked child drops
what it inherited."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runtime import isolated_settings

from orthonode.dicom import storage
from orthonode.runtime import Runtime


@pytest.fixture
def rt(tmp_path: Path) -> Runtime:
    runtime = Runtime(isolated_settings(data_dir=tmp_path / "node"))
    yield runtime  # type: ignore[misc]
    runtime.close()


def test_no_module_state_for_the_fsync_pool_or_the_models() -> None:
    from orthonode.inference import pipeline

    assert not hasattr(storage, "_sync_pool") and not hasattr(storage, "sync_async")
    assert not hasattr(pipeline, "_models_cache") and not hasattr(pipeline, "models_for")


def test_the_runtime_owns_one_model_cache(rt: Runtime, tmp_path: Path) -> None:
    from orthonode.inference.pipeline import ModelCache

    assert isinstance(rt.models, ModelCache) and rt.models is rt.models
    other = Runtime(isolated_settings(data_dir=tmp_path / "other"))
    assert other.models is not rt.models


def test_the_store_owns_its_fsync_threads(rt: Runtime, tmp_path: Path) -> None:
    path = rt.store.write_incoming(b"bytes")
    rt.store.sync_async(path).result()
    assert rt.store.fsync.hash_and_sync(path)[1] == 5
    other = Runtime(isolated_settings(data_dir=tmp_path / "other"))
    assert other.store.fsync is not rt.store.fsync


def test_after_fork_drops_the_parents_engine_and_fsync_threads(rt: Runtime) -> None:
    path = rt.store.write_incoming(b"bytes")
    rt.store.sync_async(path).result()
    pool, threads = rt.engine.pool, rt.store.fsync._pool
    assert threads is not None
    rt.after_fork()  # same process: nothing to drop
    assert rt.engine.pool is pool and rt.store.fsync._pool is threads
    rt._pid = -1  # as in a child forked from this process
    rt.after_fork()
    assert rt.engine.pool is not pool
    assert rt.store.fsync._pool is None
    rt.store.sync_async(path).result()  # the child starts its own threads
    assert rt.store.fsync._pool is not None and rt.store.fsync._pool is not threads


def test_close_stops_the_fsync_threads(rt: Runtime) -> None:
    path = rt.store.write_incoming(b"bytes")
    rt.store.sync_async(path).result()
    threads = rt.store.fsync._pool
    rt.close()
    assert rt.store.fsync._pool is None
    assert threads is not None and threads._shutdown
