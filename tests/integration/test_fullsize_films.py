"""Real full-size knee films through a real PACS (issue 14): Orthanc sends each study to the node, the
node finds the knee joints (or says why not) and sends its SR and key images back to Orthanc.

The pixels are real FracAtlas films (CC BY 4.0, ``../shared/data/knee_fullsize``); each header is made
by ``orthonode.peers.films.film_dx`` and says so. Models: the default model the package ships, with its
knee-joint localiser (``orthonode/models/default/localiser``); without the localiser the tests skip.

- a frontal film with both knees (Image Laterality ``B``, Patient Orientation ``L\\F``): ONE SR with two
  KL findings, the joint at the smaller column the patient's right, each with its box as an SCOORD on
  the film; a key image per knee showing the whole film with both boxes;
- a lateral film, once named by View Position ``LL`` and once with a header silent about the view (the
  image classifier decides): "not graded: lateral view" and no KL finding;
- a pelvis film whose header says ``KNEE`` (a wrong Body Part Examined routes it as a knee): "no knee
  joint found" and no KL finding.

Every SR and SC the node sent, as Orthanc holds it, passes ``orthonode validate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from support.node import NodeProcess, jobs_of

from orthonode.encode import codes as oc
from orthonode.encode import sc as scm
from orthonode.encode.sr import ReportOutcomes, read_outcomes
from orthonode.inference.layout import PACKAGED_MODELS
from orthonode.inference.localise import LOCALISER_SUBDIR
from orthonode.peers.films import film_dx
from orthonode.peers.synthetic import new_study_uid, write_all

pytestmark = pytest.mark.integration

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FILMS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "knee_fullsize"
BOTH_KNEES = FILMS / "knee_ap_both" / "IMG0000242.jpg"  # both knees whole on one frontal film
LATERAL = FILMS / "knee_lateral" / "IMG0000017.jpg"
HIP = FILMS / "hip" / "IMG0000041.jpg"
DELIVERY_TIMEOUT_S = 300


@dataclass(frozen=True)
class Returned:
    """One study's round trip: what was sent and what came back into Orthanc."""

    sent: Dataset
    reports: list[Dataset]
    images: list[Dataset]

    @property
    def outcomes(self) -> ReportOutcomes:
        assert len(self.reports) == 1, f"{len(self.reports)} SRs came back"
        return read_outcomes(self.reports[0])


def _studies() -> dict[str, Dataset]:
    return {
        "both knees": film_dx(BOTH_KNEES, new_study_uid(), laterality="B", view="AP"),
        "lateral LL": film_dx(LATERAL, new_study_uid(), laterality="R", view="LL", orientation=("A", "F")),
        "lateral, silent header": film_dx(
            LATERAL, new_study_uid(), laterality="R", view=None, orientation=None
        ),
        "hip labelled knee": film_dx(HIP, new_study_uid(), laterality="B", view="AP", body_part="KNEE"),
    }


def _delivered(uids: list[str]) -> Any:
    def check(status: dict[str, Any]) -> bool:
        for uid in uids:
            jobs = jobs_of(status, uid)
            if len(jobs) != 1 or jobs[0]["state"] not in ("done", "failed"):
                return False
            if jobs[0]["state"] == "failed":
                return True  # the assertions below say which and why
            if not any(d["job_id"] == jobs[0]["id"] and d["state"] == "sent" for d in status["deliveries"]):
                return False
        return True

    return check


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Returned], NodeProcess]]:
    """Orthanc and the node (the packaged model) once for the module; every study sent, every result
    back in Orthanc."""
    from support.peers.orthanc import Orthanc
    from support.services import require_binary

    for path in (BOTH_KNEES, LATERAL, HIP):
        if not path.is_file():
            pytest.skip(f"full-size films not found: {path} (see ../shared/data/README.md)")
    if not (PACKAGED_MODELS / LOCALISER_SUBDIR).is_dir():
        pytest.skip(f"no knee-joint localiser in {PACKAGED_MODELS} yet: full-size films are not graded")
    require_binary("Orthanc", "orthanc")
    tmp = tmp_path_factory.mktemp("fullsize")
    with ExitStack() as stack:
        pacs = stack.enter_context(Orthanc(tmp / "orthanc"))
        destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
        node = stack.enter_context(
            NodeProcess(tmp / "node", models_dir=PACKAGED_MODELS, destinations=[destination])
        )
        pacs.add_modality("node", node.ae_title, "127.0.0.1", node.port)
        studies = _studies()
        for name, ds in studies.items():
            pacs.upload_all(write_all([ds], tmp / "studies" / name.replace(" ", "-").replace(",", "")))
        for ds in studies.values():
            (study_id,) = pacs.find_studies(str(ds.StudyInstanceUID))
            pacs.store_to_modality("node", [study_id])
        uids = [str(ds.StudyInstanceUID) for ds in studies.values()]
        status = node.wait_for(
            _delivered(uids), timeout=DELIVERY_TIMEOUT_S, what="every film's results in Orthanc"
        )
        failed = [j for uid in uids for j in jobs_of(status, uid) if j["state"] == "failed"]
        assert not failed, failed
        returned = {}
        for name, ds in studies.items():
            uid = str(ds.StudyInstanceUID)
            back = [dcmread(BytesIO(pacs.instance_file(i["ID"]))) for i in pacs.find_instances(uid)]
            returned[name] = Returned(
                sent=ds,
                reports=[b for b in back if b.Modality == "SR"],
                images=[b for b in back if str(b.SOPClassUID) == SECONDARY_CAPTURE],
            )
        yield returned, node


def _is(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.array(colour, dtype=np.uint8), axis=-1)


def _box_drawn(mask: np.ndarray, box: tuple[float, float, float, float], scale: float) -> bool:
    """Whether ``mask`` has the outline of ``box`` (source pixels) scaled by ``scale``: some of its left
    and right edges (a few pixels of tolerance) and not its middle."""
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    rows = slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4)
    left, right = mask[rows, max(x0 - 3, 0) : x0 + 6], mask[rows, max(x1 - 6, 0) : x1 + 3]
    return bool(
        left.any(axis=1).mean() > 0.8
        and right.any(axis=1).mean() > 0.8
        and not mask[(y0 + y1) // 2, (x0 + x1) // 2]
    )


def test_both_knees_come_back_as_one_report_right_and_left_each_with_its_box(round_trip: Any) -> None:
    returned, _node = round_trip
    film = returned["both knees"]
    outcomes = film.outcomes
    assert outcomes.not_graded == [], [o.reason for o in outcomes.not_graded]
    findings = sorted(outcomes.findings, key=lambda f: f.region.box[0] if f.region else -1)
    assert [(f.task, f.trained) for f in findings] == [("kl_grade", True), ("kl_grade", True)]
    # The standard orientation (L\F): the patient's right is on the image's left.
    assert [f.laterality for f in findings] == ["R", "L"]
    sop = str(film.sent.SOPInstanceUID)
    cols, rows = int(film.sent.Columns), int(film.sent.Rows)
    for finding, (cx, cy) in zip(findings, ((402, 818), (1010, 783)), strict=True):
        # Our annotated joint centres of this film (experiments/knee_fullsize/annotations.csv).
        region = finding.region
        assert region is not None and region.source == sop and region.graphic_type == "POLYLINE"
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < cx < x1 <= cols and 0 <= y0 < cy < y1 <= rows, (region.box, (cx, cy))
        assert finding.value.startswith("Kellgren-Lawrence grade") and finding.probability is not None
        assert 0 < finding.probability <= 1 and sop in finding.sources
    left_box, right_box = (f.region.box for f in findings if f.region)
    assert left_box[2] <= right_box[0], "two joints, two separate boxes"

    # One key image per knee: the whole film with both boxes (its own highlighted), then the crop.
    assert sorted(str(ds.Laterality) for ds in film.images) == ["L", "R"]
    by_side = {f.laterality: f.region.box for f in findings if f.region}
    for image in film.images:
        assert "the whole film with the joint boxes" in image.DerivationDescription
        assert image.StudyInstanceUID == film.sent.StudyInstanceUID and image.BurnedInAnnotation == "YES"
        pixels = image.pixel_array
        scale = pixels.shape[0] / rows  # the film panel is as high as the key image
        panel = pixels[:, : round(cols * scale)]
        own, other = str(image.Laterality), "L" if image.Laterality == "R" else "R"
        own_mask, other_mask = _is(panel, scm.OWN_BOX_COLOUR), _is(panel, scm.OTHER_BOX_COLOUR)
        assert _box_drawn(own_mask, by_side[own], scale), f"the own box on {own}'s key image"
        assert _box_drawn(other_mask, by_side[other], scale), f"{other}'s box on {own}'s key image"
        assert not _box_drawn(own_mask, by_side[other], scale), "only the own box is highlighted"


@pytest.mark.parametrize("name", ["lateral LL", "lateral, silent header"])
def test_a_lateral_film_is_not_graded_and_the_report_says_why(round_trip: Any, name: str) -> None:
    returned, _node = round_trip
    film = returned[name]
    outcomes = film.outcomes
    assert outcomes.findings == [] and film.images == []
    (outcome,) = outcomes.not_graded
    assert outcome.task == "kl_grade" and outcome.reason.startswith("not graded: lateral view"), (
        outcome.reason
    )
    assert outcome.code == (oc.NOT_GRADED_LATERAL.value, oc.NOT_GRADED_LATERAL.scheme_designator)
    assert outcome.sources == (str(film.sent.SOPInstanceUID),)
    if name == "lateral, silent header":
        assert "judged from the image" in outcome.reason
    else:
        assert "View Code Sequence" in outcome.reason


def test_a_hip_film_labelled_knee_comes_back_with_no_knee_joint_found(round_trip: Any) -> None:
    returned, node = round_trip
    film = returned["hip labelled knee"]
    outcomes = film.outcomes
    assert outcomes.findings == [] and film.images == []
    (outcome,) = outcomes.not_graded
    assert outcome.reason.startswith("no knee joint found"), outcome.reason
    assert outcome.code == (oc.NO_KNEE_JOINT.value, oc.NO_KNEE_JOINT.scheme_designator)
    (job,) = jobs_of(node.status(), str(film.sent.StudyInstanceUID))
    assert job["state"] == "done" and "no knee joint found" in job["detail"]


def test_every_object_the_node_sent_passes_validation(round_trip: Any, tmp_path: Path) -> None:
    returned, node = round_trip
    emitted = tmp_path / "emitted"
    emitted.mkdir()
    count = 0
    for film in returned.values():
        for ds in [*film.reports, *film.images]:
            count += 1
            ds.save_as(emitted / f"out-{count:02d}.dcm", enforce_file_format=True)
    checked = node.cli("validate", str(emitted), timeout=240)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{count} file(s), 0 with errors" in checked.stdout
    assert [len(film.reports) for film in returned.values()] == [1, 1, 1, 1]
