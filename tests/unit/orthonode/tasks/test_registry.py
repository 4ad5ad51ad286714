"""The task registry: every paper task registered, labels and codes from orthonode.encode.codes."""

from __future__ import annotations

import pytest
from support.paper import PAPER_TASKS

from heads.cli import main
from orthonode.encode.codes import TASK_CONCEPTS
from orthonode.tasks.registry import (
    InputSpec,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
    tasks_for,
)


def test_every_paper_task_is_registered_with_its_codes() -> None:
    names = [t.name for t in list_tasks()]
    assert sorted(names) == sorted(PAPER_TASKS)
    for name in PAPER_TASKS:
        spec = get_task(name)
        codes = TASK_CONCEPTS[name]
        assert spec.labels == tuple(v.meaning for v in codes.values)
        assert spec.codes.concept == codes.concept
        assert spec.anatomy in ("knee", "hip", "shoulder", "ankle")
        assert spec.modality in ("radiograph", "mri")


def test_kl_grade_is_ordinal_with_accuracy_and_qwk() -> None:
    kl = get_task("kl_grade")
    assert kl.ordinal and kl.num_classes == 5 and not kl.binary
    assert kl.metrics == ("accuracy", "qwk")
    assert kl.input.kind == "radiograph" and kl.modality == "radiograph"
    assert kl.paper is not None and "2601.18250" in kl.paper.reference


def test_binary_tasks_use_auroc_and_mri_slice_inputs() -> None:
    for spec in list_tasks():
        if spec.name == "kl_grade":
            continue
        assert spec.binary and spec.metrics == ("auroc",) and spec.positive_index == 1
        if spec.modality == "mri":
            assert spec.input.kind == "mri_slices"
            assert spec.input.slices and spec.input.slices > 0
            assert spec.input.strategy in ("central", "uniform")
        else:
            assert spec.input.kind == "radiograph" and spec.input.slices is None


def test_pipeline_selection() -> None:
    assert {t.name for t in tasks_for("knee_radiograph")} == {
        "kl_grade",
        "kl_progression_4y",
        "kl_progression_8y",
        "tkr",
    }
    knee_mri = {t.name for t in tasks_for("knee_mri")}
    assert "acl_injury" in knee_mri and "kl_grade" not in knee_mri and len(knee_mri) == 9
    assert [t.name for t in tasks_for("hip_mri")] == ["hip_labral_tear"]
    assert [t.name for t in tasks_for("shoulder_mri")] == ["supraspinatus_injury"]
    assert {t.name for t in tasks_for("ankle_mri")} == {"atfl_injury", "cfl_injury"}
    with pytest.raises(KeyError):
        tasks_for("spine_ct")


def test_duplicate_registration_and_bad_specs_are_errors() -> None:
    with pytest.raises(ValueError, match="twice"):
        register_task(lambda: get_task("tkr"))
    with pytest.raises(ValueError):
        InputSpec("mri_slices")  # no slice count / strategy
    with pytest.raises(ValueError):
        InputSpec("radiograph", slices=4, strategy="uniform")
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")
    ghost = TaskSpec("ghost", "Ghost", "knee", "radiograph", InputSpec("radiograph"), False, ("auroc",))
    with pytest.raises(KeyError, match="TASK_CONCEPTS"):
        _ = ghost.labels


def test_heads_list_prints_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_TASKS:
        assert name in out
