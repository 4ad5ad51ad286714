"""orthonode.inference.pipeline on SYNTHETIC DICOM with tiny UNTRAINED models (vit_test_patch16_dinov3).

Every probability is checked against an independent computation written here: the preprocessed image is
normalised by hand ((x - 0.5) / 0.25, grey repeated to 3 channels), run through the backbone's
``forward_features``, the features composed (CLS + mean patch token) and given to the head bundle loaded
separately from disk. Key images are compared with a PS3.3 C.11.2.1.2.1 linear window computed here from
the stored pixel values.
"""

from __future__ import annotations

import datetime
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from support.peers import synthetic
from support.runtime import isolated_settings

from orthonode.completion.selection import Route, SeriesRole
from orthonode.encode.outputs import Output, build_outputs
from orthonode.inference.findings import Finding
from orthonode.inference.heads import InstalledHead, load_head
from orthonode.inference.loading import load_radiograph, load_volume
from orthonode.inference.pipeline import (
    ModelCache,
    Models,
    NoModelInstalled,
    PipelineOutput,
    run_pipeline,
)
from orthonode.inference.preprocess import fit_to_square
from orthonode.inference.untrained import write_untrained_models
from orthonode.settings import Settings
from orthonode.tasks.pipelines import Anatomy

ARCH = "vit_test_patch16_dinov3"
SIZE = 64
RADIOGRAPH_TASKS = ("kl_grade", "tkr")
MRI_TASKS = ("acl_injury", "meniscus_injury")
MR_SLICES = 8
# The order in which the MR slices are written (and handed to the pipeline): not the slice order.
MR_WRITE_ORDER = (5, 2, 7, 0, 3, 6, 1, 4)


# --------------------------------------------------------------------------------------------- fixtures


def _settings(**overrides: Any) -> Settings:
    return isolated_settings(**overrides)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_untrained_models(root, arch=ARCH, img_size=SIZE, tasks=RADIOGRAPH_TASKS + MRI_TASKS)


@pytest.fixture(scope="module")
def settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(models_dir=models_dir, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def models(models_dir: Path, settings: Settings) -> Models:
    return Models.load(models_dir, settings)


def _head(models_dir: Path, task: str) -> InstalledHead:
    """The task's bundle loaded straight from disk (not through the registry the pipeline uses)."""
    return load_head(models_dir / "heads" / f"{task}-untrained")


@dataclass
class Study:
    uid: str
    left: pydicom.Dataset
    right: pydicom.Dataset
    left_path: Path
    right_path: Path
    mr: list[pydicom.Dataset]
    mr_paths: list[Path]  # in MR_WRITE_ORDER

    @property
    def files_by_series(self) -> dict[str, list[Path]]:
        return {
            str(self.left.SeriesInstanceUID): [self.left_path],
            str(self.right.SeriesInstanceUID): [self.right_path],
            str(self.mr[0].SeriesInstanceUID): list(self.mr_paths),
        }


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    directory = tmp_path_factory.mktemp("study")
    uid = synthetic.new_study_uid()
    left = synthetic.radiograph(uid, laterality="L", rows=80, cols=64, seed=1, series_number=1)
    right = synthetic.radiograph(uid, laterality="R", rows=72, cols=96, seed=2, series_number=2)
    (left_path,) = synthetic.write_all([left], directory / "left", prefix="dx")
    (right_path,) = synthetic.write_all([right], directory / "right", prefix="dx")
    mr = synthetic.mr_series(uid, n_slices=MR_SLICES, rows=SIZE, cols=SIZE, laterality="R", series_number=3)
    mr_paths = synthetic.write_all([mr[i] for i in MR_WRITE_ORDER], directory / "mr", prefix="mr")
    return Study(uid, left, right, left_path, right_path, mr, mr_paths)


def radiograph_route(*series: tuple[pydicom.Dataset, str | None], laterality: str | None) -> Route:
    """A route as the sweeper stores it (``Route.as_json``), read back as the worker does."""
    return Route.from_json(
        {
            "pipeline": "knee_radiograph",
            "anatomy": "knee",
            "modality": "radiograph",
            "laterality": laterality,
            "series": [
                {
                    "series_uid": str(ds.SeriesInstanceUID),
                    "plane": None,
                    "weighting": None,
                    "fat_suppressed": False,
                    "laterality": side,
                }
                for ds, side in series
            ],
        }
    )


def mri_route(series_uid: str, laterality: str | None = "R", pipeline: str = "knee_mri") -> Route:
    return Route.from_json(
        {
            "pipeline": pipeline,
            "anatomy": "knee",
            "modality": "mri",
            "laterality": laterality,
            "series": [
                {
                    "series_uid": series_uid,
                    "plane": "sagittal",
                    "weighting": "PD",
                    "fat_suppressed": True,
                    "laterality": laterality,
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def knee_output(models: Models, study: Study) -> PipelineOutput:
    route = radiograph_route((study.left, "L"), (study.right, "R"), laterality="B")
    return run_pipeline(models, [route], study.files_by_series)


# --------------------------------------------------------------------------------------------- helpers


def windowed(ds: pydicom.Dataset) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window of the stored values (Rescale is identity), to [0, 1]."""
    x = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    y = (x - (c - 0.5)) / (w - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0)


def reference_features(models: Models, images: Sequence[np.ndarray]) -> torch.Tensor:
    """CLS + mean patch token of ``images`` ([S, S] in [0, 1]), computed without ``Encoder.embed``."""
    card = models.encoder.card
    assert (card.mean, card.std) == (0.5, 0.25)
    x = torch.from_numpy(np.stack(images).astype(np.float32))[:, None]
    x = ((x - 0.5) / 0.25).repeat(1, card.in_chans, 1, 1)
    with torch.no_grad():
        tokens = models.encoder.model.forward_features(x)
    prefix = 1 + card.num_reg_tokens
    return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=-1)


def label_vector(finding: Finding, head: InstalledHead) -> np.ndarray:
    """``finding.probabilities`` in the head's label order (keys are the codes' meanings)."""
    meanings = [triple[2] for triple in head.card.codes.values]
    assert list(finding.probabilities) == meanings
    return np.array([finding.probabilities[m] for m in meanings])


def by_key(findings: Sequence[Finding]) -> dict[tuple[str, str | None], Finding]:
    keyed = {(f.task, f.laterality): f for f in findings}
    assert len(keyed) == len(findings), "one finding per (task, side)"
    return keyed


def check_common(finding: Finding, head: InstalledHead, expected: np.ndarray) -> None:
    probs = label_vector(finding, head)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    best = int(np.argmax(expected))
    assert finding.value.meaning == head.card.codes.values[best][2]
    assert finding.probability == pytest.approx(expected[best], abs=1e-5)
    assert finding.concept.value == head.card.codes.concept[0]
    assert finding.model.trained is False
    assert "UNTRAINED" in finding.model.name
    assert finding.key_image.dtype == np.float32
    assert finding.heatmap is not None and finding.heatmap.shape == finding.key_image.shape
    for array in (finding.key_image, finding.heatmap):
        assert np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0
    assert finding.heatmap.max() > finding.heatmap.min()  # a real map, not a constant


# --------------------------------------------------------------------------------------------- radiographs


def test_knee_radiographs_one_finding_per_task_and_side(
    knee_output: PipelineOutput, models: Models, models_dir: Path, study: Study
) -> None:
    assert knee_output.failures == []
    found = by_key(knee_output.findings)
    assert sorted(found) == [(t, s) for t in sorted(RADIOGRAPH_TASKS) for s in ("L", "R")]

    images = {"L": (study.left, study.left_path), "R": (study.right, study.right_path)}
    squares = {s: fit_to_square(load_radiograph(p).pixels, SIZE, patch=16)[0] for s, (_, p) in images.items()}
    features = reference_features(models, [squares["L"], squares["R"]])
    for task in RADIOGRAPH_TASKS:
        head = _head(models_dir, task)
        expected = head.predict_array(features)
        for row, side in enumerate(("L", "R")):
            ds, _ = images[side]
            finding = found[(task, side)]
            check_common(finding, head, expected[row])
            assert finding.laterality == side
            assert [s.sop_instance_uid for s in finding.sources] == [str(ds.SOPInstanceUID)]
            assert finding.sources[0].series_uid == str(ds.SeriesInstanceUID)
            assert finding.sources[0].sop_class_uid == synthetic.DX_FOR_PRESENTATION_STORAGE
            assert finding.key_source.sop_instance_uid == str(ds.SOPInstanceUID)
            # The key image is the whole radiograph, as windowed by its own VOI.
            assert finding.key_image.shape == (int(ds.Rows), int(ds.Columns))
            np.testing.assert_allclose(finding.key_image, windowed(ds), atol=1e-5)
    assert set(knee_output.times.seconds) >= {"read", "preprocess", "encode", "heads"}
    assert all(v >= 0 for v in knee_output.times.seconds.values())


def test_side_comes_from_the_series_role_when_the_image_has_none(
    models: Models, study: Study, tmp_path: Path
) -> None:
    ds = synthetic.radiograph(study.uid, laterality="R", rows=64, cols=64, seed=7, modality="CR")
    del ds.Laterality  # CR: laterality is series-level; none here
    (path,) = synthetic.write_all([ds], tmp_path)
    route = radiograph_route((ds, "L"), laterality="L")
    out = run_pipeline(models, [route], {str(ds.SeriesInstanceUID): [path]})
    assert out.failures == []
    assert {(f.task, f.laterality) for f in out.findings} == {(t, "L") for t in RADIOGRAPH_TASKS}


def _bilateral(study: Study, directory: Path, orientation: list[str] | None) -> tuple[pydicom.Dataset, Path]:
    """A film too large to be a joint crop (it goes to the localiser), both knees, no view in its header."""
    ds = synthetic.radiograph(study.uid, laterality="L", rows=600, cols=900, seed=11)
    ds.ImageLaterality = "B"
    for keyword in ("ViewCodeSequence", "ViewPosition", "SeriesDescription"):  # the header names no view
        if keyword in ds:
            delattr(ds, keyword)
    if orientation is None:
        del ds.PatientOrientation
    else:
        ds.PatientOrientation = orientation
    (path,) = synthetic.write_all([ds], directory)
    return ds, path


class _JointsAt:
    """A localiser double for the pipeline's logic: the joints of every film at fixed places (the real
    localiser is tested in test_localise.py and on real films in test_packaged_model.py)."""

    def __init__(self, view: str, *centres: tuple[float, float]) -> None:
        self.view, self.centres = view, centres

    def localise(self, encoder: Any, pixels: np.ndarray, spacing: Any = None, source: Any = None) -> Any:
        from orthonode.inference import localise as lc

        boxes = [lc.chen_box(c, 200.0) for c in self.centres]
        joints = tuple(
            lc.KneeJoint(c, 200.0, box, 0.9, lc.ADULT_PLATEAU_MM / 200.0, "estimated",
                         lc.outside_fraction(box, pixels.shape) > lc.PARTIAL_OUTSIDE)
            for c, box in zip(self.centres, boxes, strict=True)
        )  # fmt: skip
        return lc.Localisation(joints, self.view, {self.view: 0.9}, None if joints else "no knee joint found")


@pytest.mark.parametrize(
    ("orientation", "left_joint_side"),
    [(None, "R"), (["L", "F"], "R"), (["R", "F"], "L")],
    ids=["no-orientation", "row-L", "row-R"],
)
def test_a_film_with_both_knees_is_graded_per_joint_found(
    models: Models,
    models_dir: Path,
    study: Study,
    tmp_path: Path,
    orientation: list[str] | None,
    left_joint_side: str,
) -> None:
    """Each joint the localiser finds is cut with the Chen geometry and graded on its own; its side comes
    from its position on the film (Patient Orientation), its box goes to the report, the film to the key
    image. (Before issue 14 the film was split at its middle column.)"""
    from orthonode.inference.localise import chen_box, cut_box

    ds, path = _bilateral(study, tmp_path, orientation)
    route = radiograph_route((ds, "B"), laterality="B")
    film = replace(models, localiser=_JointsAt("frontal", (220.0, 330.0), (680.0, 320.0)))
    out = run_pipeline(film, [route], {str(ds.SeriesInstanceUID): [path]})  # type: ignore[arg-type]
    assert out.failures == [] and out.not_graded == []
    found = by_key(out.findings)
    assert sorted(found) == [(t, s) for t in sorted(RADIOGRAPH_TASKS) for s in ("L", "R")]

    pixels = load_radiograph(path).pixels
    other = "L" if left_joint_side == "R" else "R"
    centres = {left_joint_side: (220.0, 330.0), other: (680.0, 320.0)}
    crops = {s: cut_box(pixels, chen_box(c, 200.0), SIZE) for s, c in centres.items()}
    features = reference_features(models, [fit_to_square(crops[s], SIZE)[0] for s in ("L", "R")])
    for task in RADIOGRAPH_TASKS:
        head = _head(models_dir, task)
        expected = head.predict_array(features)
        for row, side in enumerate(("L", "R")):
            finding = found[(task, side)]
            check_common(finding, head, expected[row])
            np.testing.assert_array_equal(finding.key_image, crops[side])
            assert finding.region is not None and finding.overview is not None
            assert finding.region.box == pytest.approx(chen_box(centres[side], 200.0))
            assert finding.region.scale_source == "estimated"
            assert finding.overview.shape == (512, 768)  # the film, long side 768
            assert [s.sop_instance_uid for s in finding.sources] == [str(ds.SOPInstanceUID)]


@pytest.mark.parametrize(
    ("view", "localiser", "code"),
    [
        ("LL", None, "NGLATERAL"),  # the header says lateral: not graded, whatever the image
        (None, None, "NOKNEEJOINT"),  # a film and no localiser for this encoder: never split blindly
        (None, _JointsAt("lateral", (300.0, 300.0)), "NGLATERAL"),  # header silent: the image decides
        (None, _JointsAt("other"), "NOKNEEJOINT"),  # a hip film routed as knee
        (None, _JointsAt("frontal"), "NOKNEEJOINT"),  # frontal, but no joint found
        (None, _JointsAt("frontal", (30.0, 300.0)), "NGPARTIAL"),  # the only joint is cut by the edge
    ],
    ids=["header-lateral", "no-localiser", "image-lateral", "image-other", "no-joint", "partial"],
)
def test_a_film_not_graded_is_a_recorded_outcome_with_its_reason(
    models: Models, study: Study, tmp_path: Path, view: str | None, localiser: Any, code: str
) -> None:
    ds, path = _bilateral(study, tmp_path, None)
    if view is not None:
        ds.ViewPosition = view
        (path,) = synthetic.write_all([ds], tmp_path / "with-view")
    route = radiograph_route((ds, "B"), laterality="B")
    film = replace(models, localiser=localiser)
    out = run_pipeline(film, [route], {str(ds.SeriesInstanceUID): [path]})
    assert out.findings == [] and out.failures == []
    assert {n.task for n in out.not_graded} == set(RADIOGRAPH_TASKS)
    assert {n.reason_code.value for n in out.not_graded} == {code}
    assert all(n.source.sop_instance_uid == str(ds.SOPInstanceUID) for n in out.not_graded)
    assert all(n.reason.startswith(("not graded", "no knee joint found")) for n in out.not_graded)


def test_undecodable_file_fails_only_itself(
    models: Models, study: Study, knee_output: PipelineOutput, tmp_path: Path
) -> None:
    broken = synthetic.radiograph(study.uid, laterality="L", rows=64, cols=64, seed=3)
    broken.SeriesInstanceUID = study.left.SeriesInstanceUID
    data = synthetic.dataset_bytes(broken)
    bad = tmp_path / "broken-pixels.dcm"
    bad.write_bytes(data[: len(data) - 3000])  # Pixel Data cut short
    files = study.files_by_series
    files[str(study.left.SeriesInstanceUID)] = [bad, study.left_path]
    route = radiograph_route((study.left, "L"), (study.right, "R"), laterality="B")
    out = run_pipeline(models, [route], files)

    assert len(out.failures) == 1
    assert out.failures[0].startswith("knee_radiograph: broken-pixels.dcm")
    assert str(broken.SOPInstanceUID) not in out.failures[0]  # files are named, not instances
    # The good images give exactly the findings (and probabilities) of the run without the broken file.
    assert [(f.task, f.laterality) for f in out.findings] == [
        (f.task, f.laterality) for f in knee_output.findings
    ]
    for got, want in zip(out.findings, knee_output.findings, strict=True):
        assert got.sources == want.sources
        assert dict(got.probabilities) == pytest.approx(dict(want.probabilities), abs=1e-5)


def test_no_decodable_image_is_a_failure(models: Models, study: Study, tmp_path: Path) -> None:
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"not a DICOM file at all")
    route = radiograph_route((study.left, "L"), laterality="L")
    out = run_pipeline(models, [route], {str(study.left.SeriesInstanceUID): [bad]})
    assert out.findings == []
    assert len(out.failures) == 2
    assert out.failures[0].startswith("knee_radiograph: junk.dcm")
    assert out.failures[1] == "knee_radiograph: no decodable image"


# --------------------------------------------------------------------------------------------- MRI


def _mri_reference(
    models: Models, head: InstalledHead, voxels: np.ndarray, chosen: Sequence[int]
) -> np.ndarray:
    features = reference_features(models, [fit_to_square(voxels[i], SIZE)[0] for i in chosen])
    probs: np.ndarray = head.predict_array(features[None])  # [1, S, F]: one series
    return probs[0]


def test_knee_mri_one_finding_per_task(models: Models, models_dir: Path, study: Study) -> None:
    series_uid = str(study.mr[0].SeriesInstanceUID)
    out = run_pipeline(models, [mri_route(series_uid)], study.files_by_series)
    assert out.failures == []
    found = by_key(out.findings)
    assert sorted(found) == [(t, "R") for t in sorted(MRI_TASKS)]

    volume = load_volume(study.mr_paths)
    slice_uids = [str(ds.SOPInstanceUID) for ds in study.mr]  # mr_series' order is the slice order
    assert [s.sop_instance_uid for s in volume.sources] == slice_uids
    for task in MRI_TASKS:
        head = _head(models_dir, task)
        assert head.card.input.slices is not None and head.card.input.slices >= MR_SLICES
        finding = found[(task, "R")]
        # The head asks for more slices than the series has: all of them, in slice order.
        assert [s.sop_instance_uid for s in finding.sources] == slice_uids
        assert all(s.series_uid == series_uid for s in finding.sources)
        check_common(finding, head, _mri_reference(models, head, volume.voxels, range(MR_SLICES)))
        # Key image: the central selected slice.
        assert finding.key_source.sop_instance_uid == slice_uids[MR_SLICES // 2]
        np.testing.assert_array_equal(finding.key_image, volume.voxels[MR_SLICES // 2])


def test_mri_heads_with_the_same_slice_selection_share_one_encoding(
    models: Models, study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    embed = models.encoder.embed

    def counting(images: Any, **kwargs: Any) -> Any:
        calls.append(len(images))
        return embed(images, **kwargs)

    monkeypatch.setattr(models.encoder, "embed", counting)
    out = run_pipeline(models, [mri_route(str(study.mr[0].SeriesInstanceUID))], study.files_by_series)
    assert len(out.findings) == len(MRI_TASKS) == 2
    assert calls == [MR_SLICES]  # both heads ask for the same slices at the same size: encoded once


def test_knee_mri_uses_the_heads_slice_selection(
    models_dir: Path, settings: Settings, study: Study, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    card_path = root / "heads" / "acl_injury-untrained" / "head.json"
    card = json.loads(card_path.read_text())
    card["input"].update(slices=4, strategy="uniform")
    card_path.write_text(json.dumps(card))
    shutil.rmtree(root / "heads" / "meniscus_injury-untrained")
    local = Models.load(root, settings)

    series_uid = str(study.mr[0].SeriesInstanceUID)
    out = run_pipeline(local, [mri_route(series_uid, laterality=None)], study.files_by_series)
    assert out.failures == []
    (finding,) = out.findings
    assert (finding.task, finding.laterality) == ("acl_injury", "R")  # the series says R (Laterality)
    # "uniform", margin 0.1 of 8 slices: nearest to linspace(0.7, 6.3, 4) = 0.7, 2.57, 4.43, 6.3.
    chosen = [1, 3, 4, 6]
    assert [s.sop_instance_uid for s in finding.sources] == [str(study.mr[i].SOPInstanceUID) for i in chosen]
    volume = load_volume(study.mr_paths)
    head = load_head(root / "heads" / "acl_injury-untrained")
    check_common(finding, head, _mri_reference(local, head, volume.voxels, chosen))
    assert finding.key_source.sop_instance_uid == str(study.mr[chosen[2]].SOPInstanceUID)
    np.testing.assert_array_equal(finding.key_image, volume.voxels[chosen[2]])


def test_undecodable_series_fails_its_route_only(models: Models, study: Study, tmp_path: Path) -> None:
    bad = tmp_path / "mr-junk.dcm"
    bad.write_bytes(b"\x00" * 200)
    files = study.files_by_series
    files["2.25.1234"] = [bad]
    routes = [
        mri_route("2.25.1234"),
        radiograph_route((study.left, "L"), laterality="L"),
    ]
    out = run_pipeline(models, routes, files)
    assert out.failures[0].startswith("knee_mri: series 2.25.1234: ")
    assert out.failures[-1] == "knee_mri: no decodable series"
    assert {(f.task, f.laterality) for f in out.findings} == {(t, "L") for t in RADIOGRAPH_TASKS}


# --------------------------------------------------------------------------------------------- known bugs


def _role(ds: pydicom.Dataset, side: str | None, plane: str | None = None) -> SeriesRole:
    return SeriesRole.from_json(
        {
            "series_uid": str(ds.SeriesInstanceUID),
            "plane": plane,
            "weighting": None,
            "fat_suppressed": False,
            "laterality": side,
        }
    )


def test_unsided_image_in_a_two_sided_route_is_not_split(
    models: Models, study: Study, tmp_path: Path
) -> None:
    unsided = synthetic.radiograph(study.uid, laterality="R", rows=64, cols=64, seed=9, series_number=9)
    del unsided.ImageLaterality
    (path,) = synthetic.write_all([unsided], tmp_path)
    files = study.files_by_series
    files[str(unsided.SeriesInstanceUID)] = [path]
    route = radiograph_route((study.left, "L"), (study.right, "R"), (unsided, None), laterality="B")
    out = run_pipeline(models, [route], files)
    uid = str(unsided.SOPInstanceUID)
    sided = [f for f in out.findings if f.laterality in ("L", "R")]
    assert sided and all(uid not in {s.sop_instance_uid for s in f.sources} for f in sided)


def test_mri_series_of_two_knees_give_one_finding_per_side(
    models: Models, study: Study, tmp_path: Path
) -> None:
    left = synthetic.mr_series(study.uid, n_slices=4, laterality="L", seed=4, series_number=4)
    right = synthetic.mr_series(study.uid, n_slices=4, laterality="R", seed=5, series_number=5)
    files = {
        str(left[0].SeriesInstanceUID): synthetic.write_all(left, tmp_path / "l"),
        str(right[0].SeriesInstanceUID): synthetic.write_all(right, tmp_path / "r"),
    }
    route = replace(
        mri_route(str(left[0].SeriesInstanceUID), laterality="B"),
        series=(_role(left[0], "L", "sagittal"), _role(right[0], "R", "sagittal")),
    )
    out = run_pipeline(models, [route], files)
    assert {(f.task, f.laterality) for f in out.findings} == {(t, s) for t in MRI_TASKS for s in ("L", "R")}
    for f in out.findings:
        series = left if f.laterality == "L" else right
        assert {s.series_uid for s in f.sources} == {str(series[0].SeriesInstanceUID)}


# --------------------------------------------------------------------------------------------- no model


def test_pipeline_without_a_head_is_a_failure(models: Models, study: Study) -> None:
    routes = [
        replace(mri_route(str(study.mr[0].SeriesInstanceUID), pipeline="hip_mri"), anatomy=Anatomy.HIP),
        mri_route(str(study.mr[0].SeriesInstanceUID), pipeline="spine_ct"),
    ]
    out = run_pipeline(models, routes, study.files_by_series)
    assert out.findings == []
    assert out.failures[0] == "hip_mri: no head installed for this pipeline"
    assert out.failures[1].startswith("spine_ct: unknown pipeline 'spine_ct'")
    assert len(out.failures) == 2


def test_heads_of_another_encoder_are_not_used(
    models_dir: Path, settings: Settings, study: Study, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    write_untrained_models(root, arch=ARCH, img_size=SIZE, tasks=(), seed=5)
    shutil.copytree(models_dir / "heads", root / "heads")  # trained on the other (seed 0) encoder
    local = Models.load(root, settings)
    assert local.encoder.fingerprint != _head(models_dir, "kl_grade").card.encoder.fingerprint
    assert all("another encoder: not used" in line for line in local.describe())
    route = radiograph_route((study.left, "L"), laterality="L")
    out = run_pipeline(local, [route], study.files_by_series)
    assert (out.findings, out.failures) == ([], ["knee_radiograph: no head installed for this pipeline"])


def test_no_encoder_raises_no_model_installed(tmp_path: Path) -> None:
    (tmp_path / "heads").mkdir()
    settings = _settings(models_dir=tmp_path, data_dir=tmp_path / "data")
    with pytest.raises(NoModelInstalled, match="no encoder in"):
        Models.load(tmp_path, settings)
    with pytest.raises(NoModelInstalled):
        ModelCache().models_for(settings)


def test_model_cache_loads_once(settings: Settings, models_dir: Path) -> None:
    cache = ModelCache()
    first = cache.models_for(settings)
    assert cache.models_for(settings) is first
    assert first.root == models_dir
    assert sorted(line.split()[0] for line in first.describe()) == sorted(RADIOGRAPH_TASKS + MRI_TASKS)
    assert all("UNTRAINED" in line and "another encoder" not in line for line in first.describe())


# --------------------------------------------------------------------------------------------- outputs


def _evidence(findings: Sequence[Finding], study: Study) -> dict[str, pydicom.Dataset]:
    datasets = [study.left, study.right, *study.mr]
    wanted = {s.sop_instance_uid for f in findings for s in (*f.sources, f.key_source)}
    return {str(ds.SOPInstanceUID): ds for ds in datasets if str(ds.SOPInstanceUID) in wanted}


@pytest.fixture(scope="module")
def all_findings(models: Models, study: Study, knee_output: PipelineOutput) -> list[Finding]:
    """Three findings (KL grade left and right, ACL injury right) keep the SC rendering cheap."""
    out = run_pipeline(models, [mri_route(str(study.mr[0].SeriesInstanceUID))], study.files_by_series)
    chosen = [f for f in [*knee_output.findings, *out.findings] if f.task in ("kl_grade", "acl_injury")]
    assert [(f.task, f.laterality) for f in chosen] == [
        ("kl_grade", "L"),
        ("kl_grade", "R"),
        ("acl_injury", "R"),
    ]
    return chosen


CREATED = datetime.datetime(2024, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)


def _build(findings: Sequence[Finding], study: Study, version: int) -> list[Output]:
    return build_outputs(
        findings, _evidence(findings, study), study_uid=study.uid, version=version, created=CREATED
    )


@pytest.fixture(scope="module")
def outputs(all_findings: list[Finding], study: Study) -> list[Output]:
    return _build(all_findings, study, 1)


def test_build_outputs_one_sr_and_one_sc_per_finding(
    outputs: list[Output], all_findings: list[Finding], study: Study
) -> None:
    assert [o.kind for o in outputs] == ["sr"] + ["sc"] * len(all_findings)
    assert [o.task for o in outputs] == ["report"] + [f"{f.task}:{f.laterality}" for f in all_findings]
    assert len({o.sop_uid for o in outputs}) == len(outputs)
    assert len({o.series_uid for o in outputs}) == 2  # one SR series, one key image series
    sr = outputs[0].dataset
    assert sr.StudyInstanceUID == study.uid
    assert "UNTRAINED" in str(sr.SeriesDescription).upper()
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert referenced == {s.sop_instance_uid for f in all_findings for s in f.sources}
    assert [f["task"] for f in outputs[0].summary["findings"]] == [f.task for f in all_findings]
    for output, finding in zip(outputs[1:], all_findings, strict=True):
        sc = output.dataset
        assert sc.StudyInstanceUID == study.uid
        assert [str(i.ReferencedSOPInstanceUID) for i in sc.SourceImageSequence] == [
            finding.key_source.sop_instance_uid
        ]
        assert output.summary["trained"] is False
        assert "UNTRAINED" in output.summary["model"]
        read_back = pydicom.dcmread(io.BytesIO(output.to_bytes()))
        assert read_back.SOPInstanceUID == output.sop_uid


def test_build_outputs_is_deterministic(
    outputs: list[Output], all_findings: list[Finding], study: Study
) -> None:
    again = _build(all_findings, study, 1)
    assert [(o.kind, o.task, o.sop_uid, o.series_uid) for o in again] == [
        (o.kind, o.task, o.sop_uid, o.series_uid) for o in outputs
    ]
    for first, second in zip(outputs, again, strict=True):
        assert first.dataset.SOPInstanceUID == second.dataset.SOPInstanceUID
        assert first.to_bytes() == second.to_bytes()


def test_build_outputs_new_version_new_uids(
    outputs: list[Output], all_findings: list[Finding], study: Study
) -> None:
    second = _build(all_findings, study, 2)
    assert [o.task for o in second] == [o.task for o in outputs]
    assert not {o.sop_uid for o in second} & {o.sop_uid for o in outputs}
    assert not {o.series_uid for o in second} & {o.series_uid for o in outputs}


def test_loading_models_leaves_the_process_thread_count(
    settings: Settings, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's thread count is the worker start-up's (``orthonode worker``, inference_threads), never
    a side effect of loading a model."""
    import torch

    def refuse(_: int) -> None:
        raise AssertionError("loading models set torch's process-wide thread count")

    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", refuse)
    ModelCache().models_for(settings.model_copy(update={"inference_threads": 1}))
    assert torch.get_num_threads() == before
