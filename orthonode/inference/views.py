"""The projection of one stored radiograph from its header (issue 14): a per-image decision over the
pure rules of :mod:`orthonode.completion.selection.views` (CID 4010 view codes, View Position, the
comments and descriptions; see there).

``view_from_header(ds)`` reads the dataset (a header suffices: ``dcmread(path, stop_before_pixels=True)``)
and returns a :class:`ViewDecision`; ``decision.from_header`` is False when the header is silent or
ambiguous, and the image-based classifier decides instead. :func:`orthonode.inference.loading.load_radiograph`
stores the decision on the :class:`~orthonode.inference.radiograph.Radiograph` it returns (``header_view``).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from orthonode.completion.selection.views import ViewDecision, ViewFacts, ViewKind, decide_view

__all__ = ["ViewDecision", "ViewFacts", "ViewKind", "view_facts", "view_from_header"]


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _codes(ds: Dataset) -> tuple[tuple[str, str, str], ...]:
    """(value, scheme, meaning) of each View Code Sequence (0054,0220) item (PS3.3 Table 8.8-1: Code
    Value, else Long Code Value, else URN Code Value)."""
    out = []
    for item in ds.get("ViewCodeSequence") or []:
        value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
        out.append(
            (str(value), str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", "")))
        )
    return tuple(out)


def view_facts(ds: Dataset) -> ViewFacts:
    """The attributes that name a radiograph's projection (PS3.3 C.8.11.5 DX Positioning, C.8.1 CR Image,
    C.7.6.1 General Image, C.7.3.1 General Series, C.7.2.1 General Study)."""
    return ViewFacts(
        view_codes=_codes(ds),
        view_position=_text(ds, "ViewPosition"),
        image_comments=_text(ds, "ImageComments"),
        processing_description=_text(ds, "AcquisitionDeviceProcessingDescription"),
        series_description=_text(ds, "SeriesDescription"),
        protocol_name=_text(ds, "ProtocolName"),
        study_description=_text(ds, "StudyDescription"),
    )


def view_from_header(ds: Dataset) -> ViewDecision:
    """The projection the header of ``ds`` names; ``ViewKind.UNKNOWN`` (``from_header`` False) when none."""
    return decide_view(view_facts(ds))
