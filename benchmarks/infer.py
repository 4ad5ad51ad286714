"""Study-to-report latency after completion, broken down by stage (issue 3 benchmark, part b).

Part (a), encoder throughput and GFLOP/s beside the matmul ceiling, is ``benchmarks/infer_encoder.py``.

For one knee radiograph study (two real knees of the Chen 2018 val split, CC BY 4.0, wrapped as DX by
``knee_radiograph_from_png``) and one SYNTHETIC 30-slice sagittal knee MRI series, this runs what a
worker runs for a job -- read, preprocess, encode, heads (``run_pipeline``), SR + SC
(``build_outputs``), send (C-STORE to a local Storage SCP) -- on randomly initialised models of the
given architecture (speed does not depend on the weights), and prints the median seconds per stage over
``--repeats`` runs after one warm-up.

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
from orthonode.inference.pipeline import Models, run_pipeline  # noqa: E402
from orthonode.inference.untrained import write_untrained_models  # noqa: E402
from orthonode.peers.sink import StoreSink  # noqa: E402
from orthonode.peers.synthetic import knee_radiograph_from_png, new_study_uid, write_all  # noqa: E402
from orthonode.settings import load_settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "knee_kl224" / "val"
STAGES = ("read", "preprocess", "encode", "heads", "sr_sc", "send")


def studies(folder: Path) -> dict[str, tuple[list[dict[str, Any]], dict[str, list[Path]]]]:
    xr_uid, mr_uid = new_study_uid(), new_study_uid()
    pngs = sorted((SHARED / "2").glob("*.png"))[:2]
    xr = [
        knee_radiograph_from_png(p, xr_uid, s, series_number=i + 1)  # type: ignore[arg-type]
        for i, (p, s) in enumerate(zip(pngs, "LR", strict=True))
    ]
    mr = mr_series(mr_uid, n_slices=30, plane="sagittal", description="PD FS SAG", series_number=1, seed=1)
    out: dict[str, tuple[list[dict[str, Any]], dict[str, list[Path]]]] = {}
    for name, datasets, pipeline, modality in (
        ("knee radiograph (2 images)", xr, "knee_radiograph", "radiograph"),
        ("knee MRI (30 slices)", mr, "knee_mri", "mri"),
    ):
        files = write_all(datasets, folder / pipeline)
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
        out[name] = ([route], dict(by_series))
    return out


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
    with StoreSink(work / "pacs") as sink:
        peer = Peer(sink.host, sink.port, sink.ae_title)
        for name, (routes, files) in studies(work / "studies").items():
            samples: dict[str, list[float]] = defaultdict(list)
            for run in range(args.repeats + 1):
                output = run_pipeline(models, routes, files)
                start = time.perf_counter()
                sources = {s.sop_instance_uid: s for f in output.findings for s in (*f.sources, f.key_source)}
                paths = {
                    str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
                    for fs in files.values()
                    for p in fs
                }
                evidence = {uid: dcmread(paths[uid], stop_before_pixels=True) for uid in sources}
                objects = build_outputs(
                    output.findings,
                    evidence,
                    study_uid=str(next(iter(evidence.values())).StudyInstanceUID),
                    version=run + 1,
                    created=datetime.now(UTC),
                )
                written = []
                for o in objects:
                    path = work / "out" / f"{o.kind}-{o.sop_uid}.dcm"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(o.to_bytes())
                    written.append(path)
                sr_sc = time.perf_counter() - start
                start = time.perf_counter()
                results = send_files(peer, written)
                send = time.perf_counter() - start
                if not all(r.ok for r in results):
                    raise RuntimeError("the local Storage SCP refused a result")
                if run == 0:
                    continue  # warm-up
                for stage in STAGES[:4]:
                    samples[stage].append(output.times.seconds.get(stage, 0.0))
                samples["sr_sc"].append(sr_sc)
                samples["send"].append(send)
            medians = {stage: statistics.median(samples[stage]) for stage in STAGES}
            rows.append((name, medians, sum(medians.values())))
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"{args.arch}, {args.img_size} px, random weights, fp32, torch threads {torch.get_num_threads()}; "
        f"median of {args.repeats} runs after one warm-up (seconds)"
    )
    print("| study | " + " | ".join(STAGES) + " | total |")
    print("|---" * (len(STAGES) + 2) + "|")
    for name, medians, total in rows:
        print(f"| {name} | " + " | ".join(f"{medians[s]:.2f}" for s in STAGES) + f" | {total:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
