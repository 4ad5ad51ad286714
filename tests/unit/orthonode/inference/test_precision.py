"""orthonode.inference.precision: ``auto`` picks bf16 only where the device computes it natively."""

from __future__ import annotations

import pytest
import torch

from orthonode.inference import precision
from orthonode.inference.precision import bf16_native, resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_device_and_explicit_choices_pass_through(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    seen: list[torch.device] = []

    def detector(device: torch.device) -> bool:
        seen.append(device)
        return native

    monkeypatch.setattr(precision, "bf16_native", detector)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert seen == [torch.device("cpu")]
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert len(seen) == 1  # explicit choices never ask the hardware
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_auto_on_this_machine_matches_the_node_detector() -> None:
    expected = "bf16" if bf16_native(torch.device("cpu")) else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
