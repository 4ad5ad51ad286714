"""orthonode.peers.films: a real film (a JPEG without header) wrapped as DX For Presentation with a
labelled, made-up header; what the node reads from it (pixels, view, laterality, spacing) and how it
routes it (issue 14: a hip film labelled KNEE goes to the knee pipeline, as a mislabelled PACS study
would)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from orthonode.completion.selection import SeriesFacts, StudyFacts, ViewKind, route_study
from orthonode.dicom.header import read_header
from orthonode.inference.loading import load_radiograph
from orthonode.peers.films import film_dx, read_jpeg
from orthonode.peers.synthetic import DX_FOR_PRESENTATION_STORAGE, new_study_uid

ROWS, COLS = 180, 140


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    """A small grayscale JPEG (a gradient with a bright block): stands in for a film's file."""
    pixels = np.tile(np.linspace(10, 240, COLS), (ROWS, 1))
    pixels[40:90, 30:70] = 250
    path = tmp_path / "IMG0000999.jpg"
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path, quality=90)
    return path


def _saved(ds: object, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)  # type: ignore[attr-defined]
    return path


def test_header_is_made_and_labelled_pixels_are_the_files(jpeg: Path, tmp_path: Path) -> None:
    uid = new_study_uid()
    ds = film_dx(jpeg, uid)
    assert ds.SOPClassUID == DX_FOR_PRESENTATION_STORAGE and ds.Modality == "DX"
    assert ds.StudyInstanceUID == uid and ds.SeriesInstanceUID != ds.SOPInstanceUID
    assert ds.ImageComments == "SYNTHETIC HEADER: real pixels from FracAtlas IMG0000999.jpg, CC BY 4.0"
    assert "header made by orthonode.peers.films" in ds.DerivationDescription
    assert (ds.PresentationIntentType, ds.PhotometricInterpretation) == ("FOR PRESENTATION", "MONOCHROME2")
    assert (ds.ImageLaterality, list(ds.PatientOrientation), ds.ViewPosition) == ("B", ["L", "F"], "AP")
    assert ds.BodyPartExamined == "KNEE" and ds.AnatomicRegionSequence[0].CodeValue == "72696002"
    assert "PixelSpacing" not in ds and "ImagerPixelSpacing" not in ds
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionRatio > 1
    assert np.array_equal(ds.pixel_array, read_jpeg(jpeg))
    again = film_dx(jpeg, uid)
    assert again.SeriesInstanceUID != ds.SeriesInstanceUID and again.SOPInstanceUID != ds.SOPInstanceUID

    for bits in (8, 16):
        path = _saved(film_dx(jpeg, uid, bits=bits), tmp_path / f"film{bits}.dcm")
        image = load_radiograph(path)
        assert np.abs(image.pixels - read_jpeg(jpeg) / 255.0).max() < 2e-4, "the window maps onto [0, 1]"
        assert image.spacing_mm is None and image.laterality == "B"
        assert image.patient_orientation == "L\\F"
    stored = dcmread(tmp_path / "film16.dcm")
    assert (stored.BitsAllocated, stored.BitsStored) == (16, 12)


def test_view_options_are_what_the_node_reads(jpeg: Path, tmp_path: Path) -> None:
    uid = new_study_uid()
    decided = {}
    for view in ("AP", "LL", None):
        path = _saved(film_dx(jpeg, uid, view=view), tmp_path / f"{view}.dcm")
        decided[view] = load_radiograph(path).header_view
    assert decided["AP"] is not None and decided["AP"].kind is ViewKind.FRONTAL
    assert decided["LL"] is not None and decided["LL"].kind is ViewKind.LATERAL
    silent = decided[None]
    assert silent is not None and silent.kind is ViewKind.UNKNOWN and not silent.from_header
    ds = film_dx(jpeg, uid, view=None, laterality="R", orientation=None, imager_pixel_spacing_mm=0.3)
    assert "ViewPosition" not in ds and ds.SeriesDescription == "KNEE FILM"
    assert ds.PatientOrientation == "" and ds.ImageLaterality == "R"
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.3, 0.3]
    with pytest.raises(ValueError, match="laterality"):
        film_dx(jpeg, uid, laterality="X")
    with pytest.raises(ValueError, match="bits"):
        film_dx(jpeg, uid, bits=12)


def test_dciodvfy_finds_only_the_missing_imager_pixel_spacing(jpeg: Path, tmp_path: Path) -> None:
    from support.services import require_binary

    dciodvfy = require_binary("dciodvfy", "dicom3tools")
    uid = new_study_uid()

    def errors(name: str, **options: object) -> list[str]:
        path = _saved(film_dx(jpeg, uid, **options), tmp_path / name)  # type: ignore[arg-type]
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        return [line for line in lines if line.startswith(("Error", "Warning"))]

    (missing,) = errors("plain.dcm")
    assert "ImagerPixelSpacing" in missing and missing.startswith("Error")
    assert errors("spaced.dcm", imager_pixel_spacing_mm=0.3, bits=16, view="LL") == []


def _study_facts(paths: list[Path]) -> StudyFacts:
    """What the index records of each instance (``read_header``), as the sweeper hands it to routing."""
    headers = [read_header(p, affected_sop_class=None, affected_sop_instance=None) for p in paths]
    series = []
    for h in headers:
        series.append(
            SeriesFacts(
                series_uid=h.series_uid,
                modality=h.modality or "",
                sop_class_uid=h.sop_class_uid,
                body_part=h.body_part,
                series_description=h.series_description,
                protocol_name=h.protocol_name,
                anatomic_region_codes=h.anatomic_region,
                laterality=h.laterality,
                image_lateralities=(h.image_laterality,) if h.image_laterality else (),
                image_orientation=h.image_orientation,
                scanning_sequence=h.scanning_sequence,
                sequence_name=h.sequence_name,
                instance_count=1,
            )
        )
    return StudyFacts(headers[0].study_uid, headers[0].study_description, tuple(series))


def test_routing_follows_the_body_part_the_header_names(jpeg: Path, tmp_path: Path) -> None:
    knee = _saved(film_dx(jpeg, new_study_uid(), laterality="B"), tmp_path / "knee.dcm")
    decision = route_study(_study_facts([knee]))
    assert decision.routed, decision.reason
    (route,) = decision.routes
    assert (route.pipeline, route.laterality) == ("knee_radiograph", "B")

    # A hip film whose header says KNEE goes where the header says (the pipeline then finds no knee).
    mislabelled = _saved(film_dx(jpeg, new_study_uid(), body_part="KNEE"), tmp_path / "hip-as-knee.dcm")
    (route,) = route_study(_study_facts([mislabelled])).routes
    assert route.pipeline == "knee_radiograph"

    # Labelled HIP: no hip radiograph pipeline exists, the study is not routed and the reason says so.
    hip = _saved(film_dx(jpeg, new_study_uid(), body_part="HIP"), tmp_path / "hip.dcm")
    decision = route_study(_study_facts([hip]))
    assert not decision.routed and "hip" in decision.reason.lower()
