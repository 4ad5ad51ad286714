"""orthonode.inference.device: the inference_device setting, and its CPU fallback where CUDA is absent."""

from __future__ import annotations

import logging

import pytest
import torch
from support.runtime import isolated_settings

from orthonode.inference.device import resolve_device
from orthonode.inference.layout import PACKAGED_MODELS
from orthonode.inference.pipeline import Models


def test_cpu_is_the_cpu_and_bad_values_are_refused() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_cuda_falls_back_to_the_cpu_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="orthonode.inference.device"):
        assert resolve_device("auto") == torch.device("cpu")
        assert not caplog.records  # auto without a GPU is the normal case: no noise
        assert resolve_device("cuda") == torch.device("cpu")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "no CUDA device" in record.getMessage()


def test_auto_takes_cuda_where_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_models_load_on_the_resolved_device(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="orthonode.inference.device"):
        models = Models.load(PACKAGED_MODELS, isolated_settings(inference_device="cuda"))
    assert models.encoder.device == torch.device("cpu")
    assert sum("no CUDA device" in r.getMessage() for r in caplog.records) == 1
