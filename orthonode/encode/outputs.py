"""The objects one job emits: one TID 1500 SR with every finding and every not-graded outcome, one
Secondary Capture key image per finding (none for a not-graded outcome), with the UIDs derived from the
study version (``uids``), so that a re-run emits the same objects under the same SOP Instance UIDs. The
SR's summary (stored in the index) lists ``findings`` and ``not_graded`` (``NotGraded.summary()``)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom

from orthonode.encode import uids
from orthonode.encode.sc import build_key_image
from orthonode.encode.sr import build_report
from orthonode.encode.sr_groups import finding_qualifiers
from orthonode.inference.findings import Finding, NotGraded


@dataclass(frozen=True)
class Output:
    kind: str  # "sr" | "sc"
    task: str  # "report" for the SR; "<task>:<side>" for a key image, "<task>:<side>:<n>" for a joint's
    sop_uid: str
    series_uid: str
    dataset: pydicom.Dataset
    summary: dict[str, Any]

    def to_bytes(self) -> bytes:
        buffer = BytesIO()
        self.dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def build_outputs(
    findings: Sequence[Finding],
    evidence: Mapping[str, pydicom.Dataset],
    *,
    study_uid: str,
    version: int,
    created: datetime.datetime,
    not_graded: Sequence[NotGraded] = (),
) -> list[Output]:
    """``evidence`` maps each source SOP Instance UID to its dataset (headers suffice)."""
    referenced = list(
        dict.fromkeys(
            [
                *(s.sop_instance_uid for f in findings for s in f.sources),
                *(f.region.source.sop_instance_uid for f in findings if f.region is not None),
                *(o.source.sop_instance_uid for o in not_graded),
            ]
        )
    )
    report = build_report(
        findings,
        [evidence[uid] for uid in referenced],
        series_uid=uids.report_series_uid(study_uid, version),
        sop_uid=uids.report_sop_uid(study_uid, version),
        created=created,
        not_graded=not_graded,
    )
    summary: dict[str, Any] = {"findings": [f.summary() for f in findings]}
    if not_graded:
        summary["not_graded"] = [o.summary() for o in not_graded]
    outputs = [
        Output(
            "sr",
            "report",
            str(report.SOPInstanceUID),
            str(report.SeriesInstanceUID),
            report,
            summary,
        )
    ]
    qualifiers = finding_qualifiers(findings)
    for number, finding in enumerate(findings, start=1):
        image = build_key_image(
            finding,
            evidence[finding.key_source.sop_instance_uid],
            series_uid=uids.key_image_series_uid(study_uid, version),
            sop_uid=uids.key_image_sop_uid(
                study_uid, version, finding.task, finding.laterality, *qualifiers[number - 1]
            ),
            instance_number=number,
            created=created,
            siblings=findings,
        )
        # The index keys results by (job, task, kind): joints of one film may share a task and a side.
        key = f"{finding.task}:{finding.laterality or '-'}" + (f":{number}" if finding.region else "")
        outputs.append(
            Output(
                "sc",
                key,
                str(image.SOPInstanceUID),
                str(image.SeriesInstanceUID),
                image,
                finding.summary(),
            )
        )
    return outputs
