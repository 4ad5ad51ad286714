"""The Conformance Statement is generated from the code, and the published copy is what it generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance import samples
from conformance.statement import statement, to_html
from orthonode.dicom.contexts import STORE_STATUS_MEANINGS, TRANSFER_SYNTAXES
from orthonode.encode import codes as oc
from orthonode.settings import Destination, Settings
from orthonode.sop_classes import STORAGE_CLASSES

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = ROOT / "docs" / "conformance.md"
PS32_ORDER = (
    "Conformance statement overview", "Table of contents", "1 Introduction", "2 Networking",
    "2.1 Implementation model", "2.2 AE specifications", "2.3 Network interfaces", "2.4 Configuration",
    "3 Media interchange", "4 Support of character sets", "5 Security", "6 Annexes", "6.1 IOD contents",
    "6.2 Data dictionary of private attributes", "6.3 Coded terminology and templates",
)  # fmt: skip


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in __import__("os").environ if k.upper().startswith("ORTHONODE_")]:
        monkeypatch.delenv(key)
    return Settings()


def test_the_published_copy_is_what_the_code_generates(defaults: Settings) -> None:
    generated = statement(defaults)
    assert PUBLISHED.read_text(encoding="utf-8") == generated, (
        "docs/conformance.md differs from the generator: run `orthonode conformance --out docs`"
    )


def test_sections_follow_ps3_2(defaults: Settings) -> None:
    headings = [h.strip() for h in re.findall(r"^#{2,4} (.+)$", statement(defaults), flags=re.M)]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(title)) for title in PS32_ORDER]
    assert positions == sorted(positions)


def test_every_accepted_class_syntax_status_and_code_is_listed(defaults: Settings) -> None:
    text = statement(defaults)
    for storage in STORAGE_CLASSES:
        assert f"`{storage.uid}`" in text, storage.name
    for syntax in TRANSFER_SYNTAXES:
        assert f"`{syntax}`" in text
    for status in STORE_STATUS_MEANINGS:
        assert f"| 0x{status.value:04X} |" in text
    for code in oc.all_codes():
        assert f"| {code.scheme_designator} | {code.value} | {code.meaning} |" in text


def test_a_site_statement_follows_its_settings(defaults: Settings) -> None:
    site = Settings(
        ae_title="KNEEAI", port=4242, max_pdu=65536, allowed_calling_aets=["PACS1", "PACS2"],
        destinations=[Destination(name="pacs", ae_title="PACS1", host="10.0.0.5", port=104)],
    )  # fmt: skip
    text = statement(site)
    assert "#### 2.2.1 `KNEEAI`" in text and "listens on port 4242" in text
    assert "65536 bytes (`max_pdu`)" in text
    assert "Calling AE titles accepted: `PACS1`, `PACS2`." in text
    assert "`pacs` (PACS1@10.0.0.5:104)" in text
    assert text != statement(defaults)


def test_attribute_origins_come_from_the_created_objects() -> None:
    sr = {keyword: (origin, value) for _, keyword, origin, value in samples.attribute_origins("sr")}
    assert sr["PatientName"][0] is samples.Origin.SOURCE
    assert sr["StudyInstanceUID"][0] is samples.Origin.SOURCE
    assert sr["SpecificCharacterSet"][0] is samples.Origin.SOURCE
    assert sr["Modality"] == (samples.Origin.FIXED, "SR")
    assert sr["VerificationFlag"] == (samples.Origin.FIXED, "UNVERIFIED")
    assert sr["SOPInstanceUID"][0] is samples.Origin.GENERATED
    sc = {keyword: (origin, value) for _, keyword, origin, value in samples.attribute_origins("sc")}
    assert sc["BurnedInAnnotation"] == (samples.Origin.FIXED, "YES")
    assert sc["Rows"][0] is samples.Origin.GENERATED  # follows the key image


def test_the_content_tree_is_tid_1500_and_says_when_a_model_is_untrained() -> None:
    trained = samples.content_items(trained=True)
    assert trained[0] == (0, "", "CONTAINER", "Imaging Measurement Report (DCM 126000)")
    assert (3, "CONTAINS", "NUM", "Probability (DCM 122157)") in trained
    untrained = samples.content_items(trained=False)
    assert (3, "CONTAINS", "CODE", "Result status (99ORTHO RESULTSTATUS)") in untrained
    assert not any("Probability" in row[3] for row in untrained)


def test_html_is_one_page_with_the_tables(defaults: Settings) -> None:
    page = to_html(statement(defaults))
    assert page.startswith("<!doctype html>") and page.count("<table>") >= 10
    assert "<h2>2 Networking</h2>" in page


def test_full_size_film_reports_are_described(defaults: Settings) -> None:
    """Issue 14: the TID 1410 joint region and the not-graded reason are in the statement, read from a
    report the writers made."""
    text = statement(defaults)
    assert "TID 1410" in text
    assert "| CONTAINS | SCOORD | Image Region (DCM 111030) |" in text
    assert "| CONTAINS | CODE | Reason not graded (99ORTHO NOTGRADED) |" in text
    assert "| 99ORTHO | NOKNEEJOINT | No knee joint found |" in text
