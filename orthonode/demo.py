"""``orthonode demo``: a study going through the node, with nothing else running.

It starts, in a temporary data directory: the node (SCP, sweeper, and its embedded worker process, as
``orthonode serve`` does), and a throw-away Orthanc as the PACS when the Debian package is installed. It
builds a bilateral knee radiograph study from real images (the Chen 2018 knee KL dataset, CC BY 4.0,
derived from the OAI: ``../shared/data/knee_kl224/val`` beside a checkout, or ``--images DIR``), or a
clearly labelled SYNTHETIC study when neither is there; the PACS sends it to the node by C-STORE, and the
demo follows it through reception, completion, routing, the worker (encoder and task heads) and the
delivery of the Structured Report and Secondary Capture key images back to the PACS (or, without
Orthanc, to a plain local Storage SCP). It then reads the findings back from the SR that arrived there
and writes the key images as PNG.

Then, when ``../shared/data/knee_fullsize`` is there, a real full-size film goes the same way (issue 14):
a FracAtlas frontal film with both knees (CC BY 4.0), wrapped as DX by ``orthonode.peers.films`` with a
header the demo makes and labels so; the demo prints its report per knee -- side, grade, probability and
the joint's box on the film -- and writes its key images (the whole film with both boxes, beside the crop
the model saw) as PNG next to the others.

Models: the trained default model shipped in the package when there is one; otherwise a randomly
initialised encoder and head whose names, SR and SC all say UNTRAINED -- the demo says so plainly and
presents nothing as a finding.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread

from orthonode.index import reads
from orthonode.index.db import transaction
from orthonode.logging import configure as configure_logging
from orthonode.peers.films import film_dx
from orthonode.peers.orthanc import Orthanc, OrthancError
from orthonode.peers.ports import free_port
from orthonode.peers.sink import StoreSink
from orthonode.peers.synthetic import knee_radiograph_from_png, new_study_uid, radiograph, write_all
from orthonode.settings import load_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_IMAGES = SHARED_DATA / "knee_kl224" / "val"
#: A real frontal film with both knees whole on it (FracAtlas, CC BY 4.0): the demo's full-size study.
DEFAULT_FILM = SHARED_DATA / "knee_fullsize" / "knee_ap_both" / "IMG0000242.jpg"
TIMEOUT_S = 180.0
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _say(text: str, start: float | None = None) -> None:
    prefix = f"[{time.monotonic() - start:5.1f}s] " if start is not None else ""
    print(prefix + text, flush=True)


def pick_knee_pair(folder: Path) -> list[tuple[Path, str]]:
    """Two PNGs of one patient, left and right (``{patient}{L|R}.png``, the dataset's naming), if any;
    otherwise the first two PNGs, laterality from the name when it ends in L or R."""
    pngs = sorted(folder.rglob("*.png"))
    by_patient: dict[str, dict[str, Path]] = {}
    for png in pngs:
        side = png.stem[-1:].upper()
        if side in ("L", "R"):
            by_patient.setdefault(png.stem[:-1], {})[side] = png
    for sides in by_patient.values():
        if len(sides) == 2:
            return [(sides["L"], "L"), (sides["R"], "R")]
    return [(p, p.stem[-1:].upper() if p.stem[-1:].upper() in ("L", "R") else "L") for p in pngs[:2]]


def _dataset_grade(png: Path) -> str:
    """The dataset's own grade of a file in the Chen layout ``{split}/{grade}/{name}.png`` ("" if none)."""
    grade = png.parent.name
    return f", dataset label KL{grade}" if grade in ("0", "1", "2", "3", "4") else ""


def build_study(images: Path | None, out: Path) -> tuple[str, list[Path], str]:
    uid = new_study_uid()
    folder = images or (DEFAULT_IMAGES if DEFAULT_IMAGES.is_dir() else None)
    pair = pick_knee_pair(folder) if folder is not None else []
    if pair:
        datasets = [
            knee_radiograph_from_png(png, uid, side, series_number=i + 1)  # type: ignore[arg-type]
            for i, (png, side) in enumerate(pair)
        ]
        names = ", ".join(f"{png.name} ({side}{_dataset_grade(png)})" for png, side in pair)
        source = f"real knee radiographs {names} from {folder} (Chen 2018, CC BY 4.0, derived from the OAI)"
    else:
        datasets = [radiograph(uid, laterality="L", seed=1), radiograph(uid, laterality="R", seed=2)]
        source = "SYNTHETIC knee radiographs (no real images found; pass --images DIR of knee PNGs)"
    return uid, write_all(datasets, out), source


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("ORTHONODE_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


def run_demo(images: Path | None = None, keep: bool = False) -> int:
    from orthonode.service import Node, _start_worker_child, _stop_worker_child

    workdir = Path(tempfile.mkdtemp(prefix="orthonode-demo-"))
    output = Path(tempfile.mkdtemp(prefix="orthonode-demo-output-"))
    port = free_port()
    _say("OrthoFoundation node demo -- research use only, not for diagnosis")
    _say(f"data directory: {workdir}")
    with ExitStack() as stack:
        pacs: Orthanc | None = None
        sink: StoreSink | None = None
        if shutil.which("Orthanc"):
            try:
                pacs = stack.enter_context(Orthanc(workdir / "orthanc"))
            except OrthancError as exc:
                _say(f"Orthanc did not start ({exc}); using a plain local Storage SCP as the PACS")
        if pacs is not None:
            destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port}
        else:
            sink = stack.enter_context(StoreSink(workdir / "pacs"))
            destination = {"name": "pacs", "ae_title": sink.ae_title, "host": sink.host, "port": sink.port}
        models_dir, trained = _models(workdir / "models")
        env = {
            "ORTHONODE_DATA_DIR": str(workdir / "node"),
            "ORTHONODE_PORT": str(port),
            "ORTHONODE_SERIES_QUIET_SECONDS": "1",
            "ORTHONODE_STUDY_QUIET_SECONDS": "2",
            "ORTHONODE_SWEEP_INTERVAL_SECONDS": "0.3",
            "ORTHONODE_MIN_FREE_BYTES": "0",
            "ORTHONODE_LOG_LEVEL": "WARNING",
            "ORTHONODE_WEB_PORT": "0",
            "ORTHONODE_DESTINATIONS": json.dumps([destination]),
            "ORTHONODE_MODELS_DIR": str(models_dir),
        }
        stack.enter_context(_environment(env))
        settings = load_settings()
        configure_logging(settings.log_level)
        node = Node(settings)
        node.start()
        stack.callback(node.stop)
        worker = _start_worker_child(None, quiet=True)
        stack.callback(_stop_worker_child, worker, 30.0)
        _say(f"node {settings.ae_title} listening on 127.0.0.1:{port}, worker process {worker.pid} started")
        if node.console is not None:
            _say(f"console: http://127.0.0.1:{node.console.port}/ (metrics at /metrics)")
        if trained:
            _say(f"model: the trained default model in {models_dir}")
        else:
            _say("model: NO TRAINED MODEL SHIPS YET. Running a randomly initialised encoder and KL head,")
            _say("       labelled UNTRAINED in their names, the SR and the key images: not findings.")

        uid, files, source = build_study(images, workdir / "study")
        _say(f"study: {source}")
        start = time.monotonic()
        code = _send(pacs, settings.ae_title, port, uid, files, start)
        if code == 0:
            code = _follow(node, uid, start)
        if code == 0:
            code = _show_results(pacs, sink, uid, output, start)
        if code == 0:
            code = _film_demo(node, pacs, sink, settings.ae_title, port, workdir, output)
        if keep:
            _say(f"kept: {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        return code


def _models(folder: Path) -> tuple[Path, bool]:
    """The packaged trained model if there is one, else an UNTRAINED random one written to ``folder``."""
    from orthonode.inference.layout import PACKAGED_MODELS
    from orthonode.inference.untrained import write_untrained_models

    if (PACKAGED_MODELS / "encoder").is_dir():
        return PACKAGED_MODELS, True
    write_untrained_models(folder, tasks=("kl_grade",))
    return folder, False


def _follow(node: object, uid: str, start: float) -> int:
    """Print the study's way through the node until its deliveries are all sent (or failed)."""
    from orthonode.service import Node

    assert isinstance(node, Node)
    seen: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        with transaction(node.rt.sessions) as session:
            snap = reads.status_snapshot(session, limit=20)
        study = next((s for s in snap["studies"] if s["study_uid"] == uid), None)
        jobs = [j for j in snap["jobs"] if j["study_uid"] == uid]
        job_ids = {j["id"] for j in jobs}
        deliveries = [d for d in snap["deliveries"] if d["job_id"] in job_ids]
        events = []
        if study is not None:
            events.append(f"node: stored {study['instances']} instance(s) in {study['series']} series")
            if study["state"] != "receiving":
                events.append(f"node: study {study['state']} -- {study['reason']}")
        for job in jobs:
            events.append(
                f"queue: job {job['id']} for study version {job['study_version']} is {job['state']}"
            )
            if job["state"] in ("done", "failed"):
                events.append(f"worker: {job['detail'] or job['error']}")
        for d in deliveries:
            events.append(f"send: results to {d['destination']}: {d['state']}")
        for event in events:
            if event not in seen:
                seen.add(event)
                _say(event, start)
        if study is not None and study["state"] in ("not_routed", "discarded"):
            return 1
        if any(j["state"] == "failed" for j in jobs):
            return 1
        done = [j for j in jobs if j["state"] == "done"]
        if done and deliveries and all(d["state"] in ("sent", "failed") for d in deliveries):
            return 0 if all(d["state"] == "sent" for d in deliveries) else 1
        if done and not deliveries and (done[0]["detail"] or "").startswith("no report"):
            return 1
        time.sleep(0.3)
    _say(f"timed out after {TIMEOUT_S:.0f}s")
    return 1


def _send(pacs: Orthanc | None, ae_title: str, port: int, uid: str, files: list[Path], start: float) -> int:
    """The study to the node: by Orthanc's C-STORE when Orthanc runs (the study uploaded to it first),
    else by our own SCU. 1 when the node refused an instance."""
    from orthonode.dicom.scu import Peer, send_files

    if pacs is not None:
        pacs.add_modality("orthonode", ae_title, "127.0.0.1", port)
        pacs.upload_all(files)
        _say(f"PACS: a throw-away Orthanc (DICOM port {pacs.dicom_port}) holds the study", start)
        (orthanc_id,) = pacs.find_studies(uid)
        pacs.store_to_modality("orthonode", [orthanc_id])
        _say("PACS -> node: Orthanc sent the study by C-STORE", start)
        return 0
    _say("Orthanc is not installed (apt-get install orthanc): sending with our own SCU", start)
    results = send_files(Peer("127.0.0.1", port, ae_title, "DEMOSCU"), files)
    if not all(r.ok for r in results):
        _say("the node refused the study: " + "; ".join(r.comment for r in results if not r.ok))
        return 1
    return 0


def _results(
    pacs: Orthanc | None, sink: StoreSink | None, uid: str, start: float
) -> tuple[list[Any], list[Any]]:
    """The SRs and the key images of study ``uid`` that reached the PACS (Orthanc or the local SCP)."""
    datasets = []
    if pacs is not None:
        datasets = [dcmread(BytesIO(pacs.instance_file(item["ID"]))) for item in pacs.find_instances(uid)]
    elif sink is not None:
        datasets = [
            ds for ds in (dcmread(path) for path in sink.files()) if ds.get("StudyInstanceUID") == uid
        ]
    reports = [ds for ds in datasets if ds.get("Modality") == "SR"]
    images = [ds for ds in datasets if str(ds.get("SOPClassUID", "")) == SECONDARY_CAPTURE]
    where = "Orthanc" if pacs is not None else "the local Storage SCP"
    _say(f"PACS: {where} now holds {len(reports)} Structured Report(s) and {len(images)} key image(s)", start)
    return reports, images


def _show_results(pacs: Orthanc | None, sink: StoreSink | None, uid: str, output: Path, start: float) -> int:
    """Read the SR and the key images back from the PACS, print the findings, write the PNGs."""
    from orthonode.encode.sc import key_image_png
    from orthonode.encode.sr import read_report

    reports, images = _results(pacs, sink, uid, start)
    if not reports:
        return 1
    _say("")
    _say("Read back from the SR at the PACS:")
    for report in reports:
        _say(f"  {report.get('SeriesDescription', '')}")
        for finding in read_report(report):
            side = f" ({finding.laterality})" if finding.laterality else ""
            p = f", p = {finding.probability:.2f}" if finding.probability is not None else ""
            _say(f"  - {finding.title}{side}: {finding.value}{p}  [{finding.model}]")
    for number, image in enumerate(images, start=1):
        path = key_image_png(image, output / f"key-image-{number}.png")
        _say(f"key image: {path}")
    _say("Research use only. Not for diagnostic use.")
    return 0


def _film_demo(
    node: object,
    pacs: Orthanc | None,
    sink: StoreSink | None,
    ae_title: str,
    port: int,
    workdir: Path,
    output: Path,
) -> int:
    """A real full-size film with both knees through the node (issue 14): wrapped as DX with a header the
    demo makes (and labels so), sent, followed, its report printed per knee and its key images written."""
    from orthonode.encode.sc import key_image_png
    from orthonode.encode.sr import read_outcomes

    if not DEFAULT_FILM.is_file():
        _say("")
        _say(
            f"full-size film: skipped -- {DEFAULT_FILM} not found "
            "(the FracAtlas films of ../shared/data/knee_fullsize)"
        )
        return 0
    uid = new_study_uid()
    files = write_all([film_dx(DEFAULT_FILM, uid, laterality="B", view="AP")], workdir / "film")
    _say("")
    _say(
        f"full-size film: the real frontal film {DEFAULT_FILM.name} with both knees (FracAtlas, CC BY 4.0, "
        "half size), wrapped as DX; its header is made by the demo and says so (Image Laterality B, "
        "Patient Orientation L\\F, View Position AP, no pixel spacing)"
    )
    start = time.monotonic()
    code = _send(pacs, ae_title, port, uid, files, start)
    if code == 0:
        code = _follow(node, uid, start)
    if code != 0:
        return code
    reports, images = _results(pacs, sink, uid, start)
    if len(reports) != 1:
        return 1
    outcomes = read_outcomes(reports[0])
    _say("")
    _say("Read back from the film's SR at the PACS (one line per knee joint, or why none is graded):")
    for finding in sorted(outcomes.findings, key=lambda f: f.region.box[0] if f.region else 0.0):
        p = f", p = {finding.probability:.2f}" if finding.probability is not None else ""
        box = (
            "box (x0, y0, x1, y1) = ("
            + ", ".join(f"{v:.0f}" for v in finding.region.box)
            + ") px on the film"
            if finding.region
            else "no box"
        )
        _say(f"  - {finding.laterality or '?'} knee: {finding.value}{p}; {box}  [{finding.model}]")
        for note in finding.notes:
            _say(f"      {note}")
    for outcome in outcomes.not_graded:
        _say(f"  - {outcome.laterality or 'film'}: {outcome.reason}")
    for image in images:
        side = str(image.get("Laterality") or "") or "unknown-side"
        path = key_image_png(image, output / f"film-key-image-{side}.png")
        _say(f"key image (the whole film with both boxes, and the crop the model saw): {path}")
    _say("Research use only. Not for diagnostic use.")
    return 0 if outcomes.findings or outcomes.not_graded else 1
