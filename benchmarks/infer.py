"""Study-to-report latency after completion, broken down by stage (issue 3 benchmark, part b).

Part (a), encoder throughput and GFLOP/s beside the matmul ceiling, is ``benchmarks/infer_encoder.py``.

For one knee radiograph study (two real knees of the Chen 2018 val split, CC BY 4.0, wrapped as DX by
``knee_radiograph_from_png``) and one SYNTHETIC 30-slice sagittal knee MRI series, this runs what a
worker runs for a job -- read, preprocess, encode, heads (``run_pipeline``), SR + SC
(``build_outputs``), send (C-STORE to a local Storage SCP) -- on randomly initialised models of the
given architecture (speed does not depend on the weights), and prints the median seconds per stage over
``--repeats`` runs after one warm-up.

The full-size film row (issue 14) is a real FracAtlas frontal film with both knees (CC BY 4.0,
``../shared/data/knee_fullsize``, 1152 x 1440 px), wrapped as DX by ``orthonode.peers.films``: read,
localise (the knee-joint localiser on the encoder's taps, and cutting each joint's Chen crop), letterbox,
encode, heads, SR + SC (one key image per knee: the film with both boxes beside the crop), send. It runs
on the default model the package ships (EfficientNet-Lite0 at 288 px with its localiser: a localiser
belongs to the encoder it was trained on, so random weights cannot stand in), whatever ``--arch`` says;
the row is left out, with a line saying why, when the film or the localiser is not there.

    .venv/bin/python benchmarks/infer.py [--arch vit_small_patch16_dinov3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydicom import dcmread

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.peers.synthetic import mr_series  # noqa: E402

from orthonode.completion.selection import Route  # noqa: E402
from orthonode.dicom.scu import Peer, send_files  # noqa: E402
from orthonode.encode.outputs import build_outputs  # noqa: E402
from orthonode.inference.layout import PACKAGED_MODELS  # noqa: E402
from orthonode.inference.localise import LOCALISER_SUBDIR  # noqa: E402
from orthonode.inference.pipeline import Models, PipelineOutput, run_pipeline  # noqa: E402
from orthonode.inference.untrained import write_untrained_models  # noqa: E402
from orthonode.peers.films import film_dx  # noqa: E402
from orthonode.peers.sink import StoreSink  # noqa: E402
from orthonode.peers.synthetic import knee_radiograph_from_png, new_study_uid, write_all  # noqa: E402
from orthonode.settings import load_settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "knee_kl224" / "val"
FILM = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "knee_fullsize"
    / "knee_ap_both"
    / "IMG0000242.jpg"
)
STAGES = ("read", "localise", "preprocess", "encode", "heads", "sr_sc", "send")
Study = tuple[list[Route], dict[str, list[Path]]]


def _study(datasets: list[Any], folder: Path, pipeline: str, modality: str) -> Study:
    """The datasets written to ``folder`` and the route the node would give them."""
    files = write_all(datasets, folder)
    by_series: dict[str, list[Path]] = defaultdict(list)
    roles = {}
    for ds, path in zip(datasets, files, strict=True):
        by_series[str(ds.SeriesInstanceUID)].append(path)
        roles[str(ds.SeriesInstanceUID)] = str(ds.get("ImageLaterality") or ds.get("Laterality") or "")
    route = Route.from_json(
        {
            "pipeline": pipeline,
            "anatomy": "knee",
            "modality": modality,
            "laterality": "B" if modality == "radiograph" else None,
            "series": [
                {
                    "series_uid": uid,
                    "plane": None,
                    "weighting": None,
                    "fat_suppressed": False,
                    "laterality": lat or None,
                }
                for uid, lat in roles.items()
            ],
        }
    )
    return [route], dict(by_series)


def studies(folder: Path) -> dict[str, Study]:
    xr_uid, mr_uid = new_study_uid(), new_study_uid()
    pngs = sorted((SHARED / "2").glob("*.png"))[:2]
    xr = [
        knee_radiograph_from_png(p, xr_uid, s, series_number=i + 1)  # type: ignore[arg-type]
        for i, (p, s) in enumerate(zip(pngs, "LR", strict=True))
    ]
    mr = mr_series(mr_uid, n_slices=30, plane="sagittal", description="PD FS SAG", series_number=1, seed=1)
    return {
        "knee radiograph (2 images)": _study(xr, folder / "knee_radiograph", "knee_radiograph", "radiograph"),
        "knee MRI (30 slices)": _study(mr, folder / "knee_mri", "knee_mri", "mri"),
    }


def film_study(folder: Path, settings: Any) -> tuple[str, Models, Study] | str:
    """The full-size film row's name, models and study, or why there is none."""
    if not FILM.is_file():
        return f"full-size film row left out: {FILM} not found"
    if not (PACKAGED_MODELS / LOCALISER_SUBDIR).is_dir():
        return f"full-size film row left out: no knee-joint localiser in {PACKAGED_MODELS}"
    models = Models.load(PACKAGED_MODELS, settings)
    ds = film_dx(FILM, new_study_uid(), laterality="B", view="AP")
    name = f"full-size film, both knees ({ds.Columns} x {ds.Rows}; default model {models.encoder.card.arch})"
    return name, models, _study([ds], folder / "film", "knee_radiograph", "radiograph")


def _outputs(output: PipelineOutput, files: dict[str, list[Path]], run: int, work: Path) -> list[Path]:
    """SR + SC of one run, built as the worker builds them and written to ``work/out``."""
    referenced = {s.sop_instance_uid for f in output.findings for s in (*f.sources, f.key_source)}
    referenced |= {f.region.source.sop_instance_uid for f in output.findings if f.region is not None}
    referenced |= {o.source.sop_instance_uid for o in output.not_graded}
    paths = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for fs in files.values() for p in fs}
    evidence = {uid: dcmread(paths[uid], stop_before_pixels=True) for uid in referenced}
    objects = build_outputs(
        output.findings,
        evidence,
        study_uid=str(next(iter(evidence.values())).StudyInstanceUID),
        version=run + 1,
        created=datetime.now(UTC),
        not_graded=output.not_graded,
    )
    written = []
    for o in objects:
        path = work / "out" / f"{o.kind}-{o.sop_uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(o.to_bytes())
        written.append(path)
    return written


def measure(models: Models, study: Study, peer: Peer, work: Path, repeats: int) -> dict[str, float]:
    """Median seconds per stage over ``repeats`` runs after one warm-up."""
    routes, files = study
    samples: dict[str, list[float]] = defaultdict(list)
    for run in range(repeats + 1):
        output = run_pipeline(models, routes, files)
        start = time.perf_counter()
        written = _outputs(output, files, run, work)
        sr_sc = time.perf_counter() - start
        start = time.perf_counter()
        results = send_files(peer, written)
        send = time.perf_counter() - start
        if not all(r.ok for r in results):
            raise RuntimeError("the local Storage SCP refused a result")
        if run == 0:
            continue  # warm-up
        for stage in STAGES[:5]:
            samples[stage].append(output.times.seconds.get(stage, 0.0))
        samples["sr_sc"].append(sr_sc)
        samples["send"].append(send)
    return {stage: statistics.median(samples[stage]) for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", default="vit_small_patch16_dinov3")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="orthonode-bench-infer-"))
    root = write_untrained_models(
        work / "models",
        tasks=("kl_grade", "acl_injury", "meniscus_injury"),
        arch=args.arch,
        img_size=args.img_size,
    )
    settings = load_settings(data_dir=work / "data", models_dir=root)
    models = Models.load(root, settings)
    rows = []
    film = film_study(work / "studies", settings)
    with StoreSink(work / "pacs") as sink:
        peer = Peer(sink.host, sink.port, sink.ae_title)
        for name, study in studies(work / "studies").items():
            medians = measure(models, study, peer, work, args.repeats)
            rows.append((name, medians, sum(medians.values())))
        if not isinstance(film, str):
            name, film_models, study = film
            medians = measure(film_models, study, peer, work, args.repeats)
            rows.append((name, medians, sum(medians.values())))
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{args.arch}, {args.img_size} px, random weights, fp32, torch threads {torch.get_num_threads()}; "
        f"median of {args.repeats} runs after one warm-up (seconds)"
        + (
            "; the full-size film row: the shipped default model, trained weights"
            if not isinstance(film, str)
            else ""
        )
    )
    print("| study | " + " | ".join(STAGES) + " | total |")
    print("|---" * (len(STAGES) + 2) + "|")
    for name, medians, total in rows:
        print(f"| {name} | " + " | ".join(f"{medians[s]:.2f}" for s in STAGES) + f" | {total:.2f} |")
    if isinstance(film, str):
        print(film)
    return 0


if __name__ == "__main__":
    sys.exit(main())
