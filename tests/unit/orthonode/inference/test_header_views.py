"""view_from_header reads a pydicom header; load_radiograph carries the decision (header_view)."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from orthonode.completion.selection import SOURCE_SERIES_DESCRIPTION, SOURCE_VIEW_CODE, ViewKind
from orthonode.inference.loading import load_radiograph
from orthonode.inference.views import view_facts, view_from_header
from orthonode.peers import synthetic


def _item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_view_code_sequence_and_texts_are_read() -> None:
    ds = Dataset()
    lateral = codes.SCT.LateralProjection
    ds.ViewCodeSequence = [_item(lateral.value, lateral.scheme_designator, lateral.meaning)]
    ds.ViewPosition = "AP"
    ds.SeriesDescription = "  Knee  "
    facts = view_facts(ds)
    assert facts.view_codes == ((lateral.value, "SCT", lateral.meaning),)
    assert (facts.view_position, facts.series_description, facts.image_comments) == ("AP", "Knee", None)
    decision = view_from_header(ds)
    assert (decision.kind, decision.source) == (ViewKind.LATERAL, SOURCE_VIEW_CODE)


def test_empty_header_is_unknown() -> None:
    ds = Dataset()
    ds.ViewPosition = ""
    assert view_from_header(ds).kind is ViewKind.UNKNOWN


def test_load_radiograph_carries_the_header_view(tmp_path: Path) -> None:
    ds = synthetic.radiograph(synthetic.new_study_uid(), laterality="L", seed=0)
    assert view_from_header(ds).kind is ViewKind.FRONTAL  # the synthetic film is an AP view
    ds.ViewPosition = ""
    if "ViewCodeSequence" in ds:
        del ds.ViewCodeSequence
    ds.SeriesDescription = "KNEE SKYLINE"
    path = tmp_path / "skyline.dcm"
    ds.save_as(path, enforce_file_format=True)
    radiograph = load_radiograph(path)
    assert radiograph.header_view is not None
    assert (radiograph.header_view.kind, radiograph.header_view.source) == (
        ViewKind.AXIAL_PATELLA,
        SOURCE_SERIES_DESCRIPTION,
    )
