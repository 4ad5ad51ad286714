"""The node's DICOM Conformance Statement, generated from the code (PS3.2, its section order).

Every fact comes from what the node runs: the accepted SOP classes (``orthonode.sop_classes``), transfer
syntaxes and statuses (``orthonode.dicom.contexts``), the association policy (``orthonode.dicom.scp``:
AE title, limits, rejection reasons), the settings and their defaults (``orthonode.settings``), the
delivery's presentation contexts and retries (``orthonode.dicom.scu``, ``orthonode.send``), the coded
concepts (``orthonode.encode.codes``), and the created IODs as the node's writers make them from
synthetic sources (:mod:`conformance.samples`). ``docs/conformance.md`` is this module's output for the
default settings; a test fails when the two differ (regenerate with ``orthonode conformance --out docs``).

:func:`statement` returns Markdown; :func:`to_html` renders it (markdown-it-py) as one standalone page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from markdown_it import MarkdownIt
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.presentation import build_context

from conformance import samples
from orthonode import __version__
from orthonode.dicom.contexts import (
    NON_IMAGE_SYNTAXES,
    STORE_STATUS_MEANINGS,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED_SYNTAXES,
    VERIFICATION,
)
from orthonode.dicom.scp import REJECT_REASONS, build_ae
from orthonode.encode import codes as oc
from orthonode.encode import sc, sr
from orthonode.settings import Settings
from orthonode.sop_classes import STORAGE_CLASSES, SopKind

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

#: When the node sends each A-ASSOCIATE-RJ (PS3.8 Table 9-21) it can send; the others are pynetdicom's.
_REJECT_WHEN = {
    "calling_ae_not_recognized": "the calling AE title is not in allowed_calling_aets (when it is set)",
    "called_ae_not_recognized": "the called AE title is not ae_title",
    "local_limit_exceeded": "max_associations associations are already open",
    "application_context_not_supported": "an application context other than the DICOM one",
    "protocol_version_not_supported": "a protocol version other than 1",
}
#: Settings without a description of their own in ``orthonode.settings``.
_SETTING_MEANINGS = {
    "ae_title": "the node's AE title (called AE of received associations, calling AE of deliveries)",
    "host": "address the SCP listens on",
    "port": "TCP port of the SCP (0 picks a free one)",
    "max_associations": "simultaneous associations accepted",
    "max_instance_bytes": "larger instances are refused (0xA701)",
    "max_instances_per_study": "more instances in one study are refused (0xA702)",
    "acse_timeout": "seconds to wait for association messages",
    "dimse_timeout": "seconds to wait for DIMSE messages",
    "network_timeout": "seconds an idle association stays open",
    "series_quiet_seconds": "a series is complete after this long without an instance",
    "study_quiet_seconds": "a study is complete after this long without an instance (and its series)",
    "force_seconds": "after this long from a version's first instance, force_action applies",
    "force_action": "proceed | discard | keep_waiting",
    "delivery_backoff_cap_seconds": "longest delay between delivery attempts",
}
#: What a generated attribute of a created object holds.
_GENERATED = {
    "InstanceCreationDate": "when the job ran",
    "InstanceCreationTime": "when the job ran",
    "ContentDate": "when the job ran",
    "ContentTime": "when the job ran",
    "SeriesDate": "when the job ran",
    "SeriesTime": "when the job ran",
    "DateOfSecondaryCapture": "when the job ran",
    "TimeOfSecondaryCapture": "when the job ran",
    "SOPInstanceUID": "deterministic per study, study version and finding (a re-run sends the same UID)",
    "SeriesInstanceUID": "deterministic per study and study version",
    "SoftwareVersions": "the model version (encoder fingerprint / head version)",
    "ContributingEquipmentSequence": "the node and the model (DCM 109102 Processing Equipment)",
    "CurrentRequestedProcedureEvidenceSequence": "every source image the findings used",
    "ContentSequence": "the findings (TID 1500, below)",
    "SourceImageSequence": "the source image the key image shows",
    "Laterality": "the finding's side",
    "Rows": f"the key image (source crop, enlarged so the short side is at least {sc.MIN_SIDE} pixels)",
    "Columns": "as Rows",
    "PixelData": "the source crop in grey with the heatmap in colour and the burned-in text",
}


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _syntax(uid: str) -> str:
    return f"{UID(uid).name} | `{uid}`"


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def _created_classes() -> set[str]:
    return {COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE}


# ---------------------------------------------------------------------------------------------- sections


def _overview(settings: Settings) -> str:
    created = _created_classes()
    rows = [("Verification", f"`{VERIFICATION}`", "Yes", "Yes")]
    rows += [(c.name, f"`{c.uid}`", _yes(c.uid in created), "Yes") for c in STORAGE_CLASSES]
    return "\n\n".join(
        [
            "## Conformance statement overview",
            "The OrthoFoundation node receives musculoskeletal radiographs and MR studies by C-STORE, runs a "
            "vision model with task heads on each complete study, and stores its findings back to the "
            "configured destinations as a TID 1500 Measurement Report in a Comprehensive 3D SR and one "
            "Secondary Capture key image per finding. Research use only: every object it creates says "
            '"NOT FOR DIAGNOSTIC USE".',
            "Network services (SCU: the node initiates; SCP: the node accepts):",
            _table(("SOP Class", "UID", "SCU", "SCP"), rows),
            "The SCU column covers the results the node creates (Comprehensive 3D SR, Secondary Capture) and "
            "the operator's `orthonode echo`; the operator's `orthonode send` forwards stored files of any "
            "class in their own transfer syntax. Media interchange: none (section 3).",
        ]
    )


def _introduction() -> str:
    return "\n\n".join(
        [
            "## 1 Introduction",
            f"Product: OrthoFoundation node, version {__version__}. This statement is generated by "
            "`orthonode conformance` from the constants and settings the node runs with; the published "
            "copy describes the default settings, and a site's copy is generated with its own "
            "configuration (`orthonode --config site.toml conformance`).",
            "Audience: integration engineers connecting a PACS, modality or router to the node. Remarks: "
            "the node is not a medical device; its outputs are marked PRELIMINARY and UNVERIFIED (PS3.3 "
            "C.17.2) and carry the disclaimer in their Series Description and content.",
            "References: DICOM PS3.2 (conformance), PS3.3 (IODs), PS3.4 (service classes), PS3.5 (data "
            "structures, UIDs), PS3.7 (message exchange), PS3.8 (network), PS3.15 (security profiles), "
            "PS3.16 (templates and codes).",
        ]
    )


def _implementation_model(settings: Settings) -> str:
    flow = "\n".join(
        [
            "```",
            f"  remote SCU --C-STORE--> [{settings.ae_title} Storage SCP] --> stored durably, indexed",
            "                                                          |",
            "                                   study complete (quiet time) --> job queued",
            "                                                          |",
            "                                         worker: model inference --> SR + key images",
            "                                                          |",
            f"  destination SCP <--C-STORE-- [{settings.ae_title} Storage SCU] (per destination, retries)",
            "```",
        ]
    )
    return "\n\n".join(
        [
            "## 2 Networking",
            "### 2.1 Implementation model",
            "#### 2.1.1 Application data flow",
            flow,
            "#### 2.1.2 Functional definition of the Application Entity",
            f"One Application Entity, `{settings.ae_title}`, listens on port {settings.port} and "
            "accepts Verification and Storage. Each received instance is written to disk as it "
            "streams in, its header checked without decoding pixels, the file fsynced, renamed into place "
            "and indexed in a committed transaction; only then is Success returned. The same AE title "
            "initiates the associations that store results to each configured destination.",
            "#### 2.1.3 Sequencing of real-world activities",
            f"A study is complete when no instance arrived for {settings.study_quiet_seconds:g} s (and no "
            f"series for {settings.series_quiet_seconds:g} s); {settings.force_seconds:g} s after the first "
            f"instance of a study version it is processed anyway (`force_action = {settings.force_action}`). "
            "An instance that arrives after completion starts a new study version; each version is "
            "processed and reported once, and a later version's objects replace nothing (they have their "
            "own UIDs). Quiet time counts only while the node listens (downtime is not quiet time), and an "
            "identical resend counts as an arrival. Results are sent when the job has produced them; each "
            "destination is tried independently.",
        ]
    )


def _accepted_contexts(settings: Settings) -> str:
    """From the AE the SCP runs (``orthonode.dicom.scp.build_ae``): what it would accept, exactly."""
    names = {c.uid: c.name for c in STORAGE_CLASSES}
    every = tuple(TRANSFER_SYNTAXES)
    rows = []
    for cx in build_ae(settings).supported_contexts:
        syntaxes = tuple(str(t) for t in cx.transfer_syntax)
        if syntaxes == every:
            offered = f"all {len(every)} of the table below"
        else:
            offered = ", ".join(UID(t).name for t in syntaxes)
        uid = str(cx.abstract_syntax)
        rows.append((names.get(uid, UID(uid).name), f"`{uid}`", offered, "SCP"))
    syntax_rows = [(UID(s).name, f"`{s}`", _yes(s in NON_IMAGE_SYNTAXES)) for s in TRANSFER_SYNTAXES]
    return "\n\n".join(
        [
            "Presentation contexts accepted (of each proposed context, the first of its transfer syntaxes "
            "in the requestor's order that the node supports is accepted):",
            _table(("Abstract syntax", "UID", "Transfer syntaxes", "Role"), rows),
            "Transfer syntaxes of the image classes (every one is decoded by the node; those marked are "
            "also accepted for SR and Key Object Selection):",
            _table(("Transfer syntax", "UID", "Also non-image"), syntax_rows),
            "SCP/SCU role selection negotiation is not supported (the node is SCP for everything it "
            "accepts); extended negotiation is not supported. A presentation context with another abstract "
            "or transfer syntax is rejected and logged; the association goes on with the others.",
        ]
    )


def _storage_scp(settings: Settings) -> str:
    statuses = [(f"0x{s.value:04X}", s.name.replace("_", " ").title(), STORE_STATUS_MEANINGS[s]) for s in
                STORE_STATUS_MEANINGS]  # fmt: skip
    routed = {
        SopKind.RADIOGRAPH: "knee / hip radiograph pipelines",
        SopKind.MR: "MRI pipelines",
        SopKind.MR_MULTIFRAME: "MRI pipelines",
        SopKind.CT: "stored only",
        SopKind.RESULT: "stored only (never an input)",
    }
    kinds = [(c.name, routed[c.kind]) for c in STORAGE_CLASSES]
    return "\n\n".join(
        [
            "##### SOP specific conformance: Storage SCP",
            "Level of support: Level 2 (Full). Every instance is kept byte for byte as received (all "
            "attributes, private ones included, no coercion); digital signatures are kept, not verified. A "
            "resent identical instance stores nothing new, returns Success and counts as an arrival; a "
            "resent SOP Instance UID with other content is kept as a new revision and logged. Limits: "
            f"`max_instance_bytes` = {settings.max_instance_bytes} bytes per instance, "
            f"`max_instances_per_study` = {settings.max_instances_per_study}, and C-STORE is refused while "
            f"free disk is below `min_free_bytes` = {settings.min_free_bytes} bytes. A refused instance that "
            "was received whole is quarantined with its reason (not for 0xA700: nothing is kept); nothing "
            "refused is indexed or acknowledged.",
            "C-STORE response statuses (PS3.4 Table B.2-1; a refusal carries an Error Comment (0000,0902)):",
            _table(("Status", "Name", "Meaning"), statuses),
            "What the node does with each accepted class:",
            _table(("SOP Class", "Use"), kinds),
            "##### SOP specific conformance: Verification SCP",
            "C-ECHO is answered with Success (0x0000) on any association that negotiated Verification.",
        ]
    )


def _association_policies(settings: Settings) -> str:
    rejects = []
    for (source, diagnostic), reason in sorted(REJECT_REASONS.items()):
        if reason in _REJECT_WHEN:
            rejects.append(
                (f"0x{source:02X}", f"0x{diagnostic:02X}", reason.replace("_", " "), _REJECT_WHEN[reason])
            )
    calling = ", ".join(f"`{a}`" for a in settings.allowed_calling_aets) or "any (the list is empty)"
    return "\n\n".join(
        [
            "### 2.2 AE specifications",
            f"#### 2.2.1 `{settings.ae_title}`",
            "##### Association policies: general",
            _table(
                ("Item", "Value"),
                [
                    ("Application context name", f"`{APPLICATION_CONTEXT}`"),
                    ("Maximum PDU size received", f"{settings.max_pdu} bytes (`max_pdu`)"),
                    (
                        "Maximum simultaneous associations accepted",
                        f"{settings.max_associations} (`max_associations`)",
                    ),
                    ("Asynchronous operations window", "not supported (one operation at a time)"),
                    ("Implementation Class UID", f"`{PYNETDICOM_IMPLEMENTATION_UID}` (pynetdicom's)"),
                    ("Implementation Version Name", PYNETDICOM_IMPLEMENTATION_VERSION),
                    (
                        "ACSE / DIMSE / network timeouts",
                        f"{settings.acse_timeout:g} s / "
                        f"{settings.dimse_timeout:g} s / {settings.network_timeout:g} s",
                    ),
                ],
            ),
            "##### Association acceptance policy",
            f"The called AE title must be `{settings.ae_title}`. Calling AE titles accepted: {calling}. "
            "Associations are rejected (A-ASSOCIATE-RJ, PS3.8 Table 9-21) with:",
            _table(("Source", "Reason", "Name", "When"), rejects),
            _accepted_contexts(settings),
            _storage_scp(settings),
            "##### Association initiation policy",
            "Activity *Send results*: for each job and destination, one association that proposes one "
            "presentation context per SOP class and transfer syntax of the files to send. Created objects "
            "are written in Explicit VR Little Endian and proposed with both uncompressed syntaxes:",
            _table(
                ("Abstract syntax", "UID", "Transfer syntaxes proposed", "Role"),
                [
                    (UID(u).name, f"`{u}`", ", ".join(UID(s).name for s in UNCOMPRESSED_SYNTAXES), "SCU")
                    for u in sorted(_created_classes())
                ],
            ),
            "A file is sent when its own syntax, or for an uncompressed file either uncompressed syntax, was "
            "accepted. C-STORE response handling: Success (0x0000) and Warnings (0xB000-0xBFFF) count as "
            "delivered; any other status, a rejected association or a lost connection retries the "
            f"delivery after {settings.delivery_backoff_seconds:g} s, doubling up to "
            f"{settings.delivery_backoff_cap_seconds:g} s, for at most {settings.delivery_max_attempts} "
            "attempts; then the delivery is FAILED until an operator retries it (`orthonode retry`, or the "
            "console). A resend after a crash sends the same objects under the same SOP Instance UIDs.",
            "Activity *Verify* (`orthonode echo`): one Verification context with "
            + ", ".join(UID(str(t)).name for t in build_context(VERIFICATION).transfer_syntax)
            + ".",
        ]
    )


def _network_and_configuration(settings: Settings) -> str:
    keys = (
        "ae_title", "host", "port", "allowed_calling_aets", "max_associations", "max_pdu",
        "max_instance_bytes", "min_free_bytes", "max_instances_per_study", "acse_timeout", "dimse_timeout",
        "network_timeout", "series_quiet_seconds", "study_quiet_seconds", "force_seconds", "force_action",
        "delivery_max_attempts", "delivery_backoff_seconds", "delivery_backoff_cap_seconds",
        "delivery_timeout_seconds",
    )  # fmt: skip
    fields = Settings.model_fields
    rows = [
        (f"`{k}`", f"`{getattr(settings, k)}`", fields[k].description or _SETTING_MEANINGS.get(k, ""))
        for k in keys
    ]
    tls = settings.tls
    tls_text = (
        "not configured: the port speaks plain DICOM"
        if tls is None
        else "configured: TLS 1.2 or newer"
        + (", client certificates required and verified against the CA" if tls.require_client_cert else "")
    )
    return "\n\n".join(
        [
            "### 2.3 Network interfaces",
            "TCP/IP (IPv4 or IPv6, as `host` names it) on one port; DICOM TLS (PS3.15 Annex B.9, the BCP 195 "
            f"profile) when `tls` is set. Here: {tls_text}.",
            "### 2.4 Configuration",
            "Settings come from a TOML file and `ORTHONODE_*` environment variables (README "
            '"Configuration"). Those that shape the DICOM behaviour, with the values of this statement:',
            _table(("Setting", "Value", "Meaning"), rows),
            "Destinations (`destinations`: name, AE title, host, port, TLS) are site configuration: "
            + (
                ", ".join(f"`{d.name}` ({d.ae_title}@{d.host}:{d.port})" for d in settings.destinations)
                or "none configured here"
            )
            + ".",
        ]
    )


def _character_sets() -> str:
    first, second = samples.sample(0), samples.sample(1)
    copied = [
        (str(s.sources[0].SpecificCharacterSet), str(s.of_kind("sr").dataset.SpecificCharacterSet),
         str(s.of_kind("sc").dataset.SpecificCharacterSet))
        for s in (first, second)
    ]  # fmt: skip
    return "\n\n".join(
        [
            "## 3 Media interchange",
            "Not supported.",
            "## 4 Support of character sets",
            "Received instances are stored unmodified in whatever Specific Character Set (0008,0005) they "
            "declare; the index holds no patient names or IDs. The created SR and key images copy the "
            "patient and study attributes of their source image together with its Specific Character Set; "
            "the text the node writes itself is ASCII. As generated:",
            _table(("Source", "SR", "Key image"), copied),
        ]
    )


def _security(settings: Settings) -> str:
    return "\n\n".join(
        [
            "## 5 Security",
            "- Transport: DICOM TLS per PS3.15 Annex B.9 (BCP 195: TLS 1.2 or newer), server certificate "
            "from `tls.cert_file`; with `tls.ca_file` and `tls.require_client_cert` only clients with a "
            "certificate from that CA are accepted (mutual TLS). Destinations may use TLS each.",
            "- Association: the called AE title must match; `allowed_calling_aets` restricts callers.",
            "- Network input is untrusted: UIDs are validated (PS3.5 section 9.1) before any becomes part of "
            "a file path; sizes and counts are bounded (section 2.2.1); refused input is quarantined.",
            "- Logs name files, statuses and UIDs but no patient names, IDs or birth dates.",
            "- Not supported: audit trail messages (PS3.15 Annex A.5), de-identification, digital "
            "signatures on created objects.",
            "The threat model (what the node trusts, what it does not) is in `docs/security.md`.",
        ]
    )


def _attribute_table(kind: str) -> str:
    rows = []
    for tag, keyword, origin, value in samples.attribute_origins(kind):
        detail = value if origin is samples.Origin.FIXED else _GENERATED.get(keyword, "")
        rows.append((tag, keyword, str(origin), detail))
    return _table(("Tag", "Attribute", "Origin", "Value / content"), rows)


def _created_iods() -> str:
    tree = [
        ("&nbsp;" * 4 * depth + (f"{rel} " if rel else ""), vt, concept)
        for depth, rel, vt, concept in samples.content_items(trained=True)
    ]
    trained = set(samples.content_items(trained=True))
    untrained_only = [r for r in samples.content_items(trained=False) if r not in trained]
    film_only = [
        r for r in samples.content_rows(samples.film_sample().of_kind("sr").dataset) if r not in trained
    ]
    codes = sorted((c.scheme_designator, c.value, c.meaning) for c in oc.all_codes())
    return "\n\n".join(
        [
            "## 6 Annexes",
            "### 6.1 IOD contents",
            "#### 6.1.1 Created SOP instances",
            "The tables below are read from objects the node's writers created from two synthetic source "
            "radiographs that differ in every patient and study attribute (`conformance.samples`): "
            "*copied* attributes follow the source image, *fixed* ones are the same in every object, "
            "*generated* ones are made per object.",
            f"##### Comprehensive 3D SR (`{COMPREHENSIVE_3D_SR}`), TID 1500 Measurement Report",
            f"Series Number {sr.DEFAULT_SERIES_NUMBER}; one report per study version with every finding. "
            f"An untrained model's report says `{sr.SERIES_DESCRIPTION_UNTRAINED}` and has Completion Flag "
            "PARTIAL.",
            _attribute_table("sr"),
            "Content tree (each distinct item once; indentation is nesting; one Measurement Group per "
            "finding and side):",
            _table(("Relationship", "Value type", "Concept name"), tree),
            "An untrained model's group holds, instead of the answer and its probability:",
            _table(
                ("Relationship", "Value type", "Concept name"), [(r, v, c) for _, r, v, c in untrained_only]
            ),
            "A knee read from its joint on a full-size film is a TID 1410 Planar ROI group instead: the "
            "joint's box is an SCOORD (closed POLYLINE of its four corners, column/row pixel coordinates "
            "of the stored frame) SELECTED FROM the source image, in place of the image references; "
            "reader notes (e.g. header and joint position disagree on the side) are further comments. An "
            "image that is not graded (a lateral, axial patellar or oblique view, a two-view plate, no knee "
            "joint found) is a TID 1501 group with the coded reason, the reason as a comment and the "
            "source image; it leaves the Completion Flag COMPLETE (the outcome is recorded). Items of such "
            "a report that the table above does not show:",
            _table(("Relationship", "Value type", "Concept name"), [(r, v, c) for _, r, v, c in film_only]),
            f"##### Secondary Capture Image (`{SECONDARY_CAPTURE}`), key image",
            f"Series Number {sc.DEFAULT_SERIES_NUMBER}; one per finding (none for a not-graded image). A "
            "knee read from a full-size film shows the whole film with every joint box and its result "
            "beside the crop the model read.",
            _attribute_table("sc"),
            "### 6.2 Data dictionary of private attributes",
            "The node creates no private attributes.",
            "### 6.3 Coded terminology and templates",
            f"Templates: TID 1500 (root), TID 1501, TID 1410 (planar ROI: a joint's box), TID 1002/1004 "
            "(Device observer), TID 4019 (algorithm). "
            f'Private coding scheme `{oc.CODING_SCHEME_DESIGNATOR}` ("{oc.CODING_SCHEME_NAME}", version '
            f"{oc.CODING_SCHEME_VERSION}, {oc.CODING_SCHEME_RESPONSIBLE_ORGANIZATION}), declared in each "
            "SR's Coding Scheme Identification Sequence (0008,0110). Every code the node writes:",
            _table(("Scheme", "Value", "Meaning"), codes),
            "### 6.4 Grayscale image consistency",
            "Not supported (the key images are RGB for display; no Presentation LUT is written).",
            "### 6.5 Standard extended, specialized and private SOP classes",
            "None.",
            "### 6.6 Private transfer syntaxes",
            "None.",
        ]
    )


def statement(settings: Settings) -> str:
    """The Conformance Statement for ``settings`` as Markdown (deterministic for the same settings)."""
    title = (
        f"# DICOM Conformance Statement: OrthoFoundation node {__version__}\n\n"
        "*Generated by `orthonode conformance` (module `conformance.statement`) from the node's code; do not "
        "edit by hand.*\n"
    )
    parts = [
        title,
        _overview(settings),
        "## Table of contents\n\n1 Introduction · 2 Networking (2.1 Implementation model, 2.2 AE "
        "specifications, 2.3 Network interfaces, 2.4 Configuration) · 3 Media interchange · 4 Support of "
        "character sets · 5 Security · 6 Annexes (6.1 IOD contents, 6.2 private attributes, 6.3 coded "
        "terminology and templates, 6.4 grayscale consistency, 6.5 SOP class extensions, 6.6 private "
        "transfer syntaxes)",
        _introduction(),
        _implementation_model(settings),
        _association_policies(settings),
        _network_and_configuration(settings),
        _character_sets(),
        _security(settings),
        _created_iods(),
    ]
    return "\n\n".join(parts).rstrip() + "\n"


def to_html(markdown: str) -> str:
    """One standalone HTML page of the statement (tables enabled)."""
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    title = html.escape(markdown.splitlines()[0].lstrip("# "))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.4}"
        "table{border-collapse:collapse;margin:0.5rem 0}td,th{border:1px solid #bbb;padding:0.2rem 0.5rem;"
        "text-align:left;vertical-align:top}code{font-size:0.9em}"
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>\n{body}</body></html>\n"
    )
