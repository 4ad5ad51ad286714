"""``heads``: list tasks, embed datasets, fit, evaluate, sweep and export task heads.

::

    heads list
    heads embed    --encoder ENC --dataset chen_kl --data DIR --task kl_grade --cache CACHE
    heads fit      --encoder ENC --dataset chen_kl --data DIR --task kl_grade --cache CACHE --out RUN
    heads evaluate --encoder ENC --dataset chen_kl --data DIR --bundle RUN/kl_grade-1.0.0 --split val
                   --out RUN/eval
    heads sweep    --encoder ENC --dataset chen_kl --data DIR --task kl_grade --cache CACHE --out RUN/sweep
    heads export   --bundle RUN/kl_grade-1.0.0 --results RUN/eval/results.json --out MODELS/heads
    heads export   --random --task kl_grade --encoder ENC --out MODELS/heads

``fit`` trains on the TRAIN split (validation for early stopping carved from its patients) and writes a
bundle without metrics; ``evaluate`` scores a bundle on a held-out split; ``export`` copies the bundle
with its metrics into the models directory the node scans. Exit codes: 0 success, 2 bad arguments or
data, 1 other errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orthonode.tasks.decoding import DECODINGS

log = logging.getLogger(__name__)

#: What ``build_parser`` hands each ``_add_<command>`` to add its subcommand to.
_Subcommands = argparse._SubParsersAction


def _add_data(p: argparse.ArgumentParser, *, task: bool = True) -> None:
    p.add_argument(
        "--encoder", type=Path, required=True, help="encoder export directory (orthonode-encoder/1)"
    )
    p.add_argument("--dataset", required=True, help="chen_kl | csv | mrnet | kneemri | mura")
    p.add_argument(
        "--data", type=Path, required=True, help="dataset root (or the CSV file for --dataset csv)"
    )
    if task:
        p.add_argument("--task", required=True, help="registered task name (heads list)")
    p.add_argument("--cache", type=Path, default=Path("feature-cache"), help="feature cache directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit-per-class", type=int, default=None, help="chen_kl only: first N files per folder")
    p.add_argument("--fixture", action="store_true", help="mark results as NOT from real data")


def _add_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-split", default="train")
    p.add_argument("--head", default="auto", help="linear | mlp | ordinal | attention | auto")
    p.add_argument("--features", default="cls+meanpatch", choices=("cls", "cls+meanpatch"))
    p.add_argument("--hidden", type=int, default=None, help="hidden width (mlp, ordinal)")
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--class-weighting", default="balanced", choices=("balanced", "none"))
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heads", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered tasks")
    for add in (
        _add_embed,
        _add_fit_command,
        _add_evaluate,
        _add_knn,
        _add_sweep,
        _add_export,
        _add_localiser,
    ):
        add(sub)
    return parser


def _add_embed(sub: _Subcommands) -> None:
    """``heads embed``."""
    p = sub.add_parser("embed", help="compute and cache frozen encoder features")
    _add_data(p)
    p.add_argument("--splits", nargs="*", default=None, help="splits to embed (default: all)")


def _add_fit_command(sub: _Subcommands) -> None:
    """``heads fit`` (probe on cached features, or ``--finetune``)."""
    p = sub.add_parser("fit", help="train a head on cached features (or fine-tune with --finetune)")
    _add_data(p)
    _add_fit(p)
    p.add_argument("--version", default="1.0.0")
    _add_finetune(p)
    p.add_argument(
        "--out", type=Path, required=True, help="run directory; the bundle goes in <out>/<task>-<ver>"
    )


def _add_finetune(p: argparse.ArgumentParser) -> None:
    """The flags of ``heads fit --finetune``."""
    p.add_argument("--finetune", action="store_true", help="unfreeze the encoder (layer-wise lr decay)")
    p.add_argument("--layer-decay", type=float, default=0.75, help="fine-tuning: layer-wise lr decay")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="fine-tuning: linear lr warm-up")
    p.add_argument("--min-lr", type=float, default=1e-6, help="fine-tuning: end of the cosine decay")
    p.add_argument("--drop-path", type=float, default=0.1, help="fine-tuning: stochastic depth (last block)")
    p.add_argument("--no-augment", action="store_true", help="fine-tuning: no zoom/rotation/intensity jitter")
    p.add_argument("--no-hflip", action="store_true", help="fine-tuning: never flip left/right")
    p.add_argument(
        "--label-smoothing", type=float, default=0.0, help="fine-tuning: cross-entropy label smoothing"
    )
    p.add_argument(
        "--tta", default="none", choices=("none", "hflip", "auto"),
        help="fine-tuning: test-time augmentation the bundle asks for (auto: hflip where it scores better "
        "on the validation carve)",
    )  # fmt: skip
    p.add_argument(
        "--select", default="loss", choices=("loss", "accuracy", "qwk"),
        help="fine-tuning: the validation-carve score that picks the epoch",
    )  # fmt: skip
    p.add_argument(
        "--encoder-dtype", default="float32", choices=("float32", "float16"),
        help="fine-tuning: stored precision of the exported encoder",
    )  # fmt: skip
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "auto"),
        help="fine-tuning: bf16 autocast of the training forward (auto: where the CPU has native bf16)",
    )  # fmt: skip
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"),
        help="fine-tuning: where to train (auto: a CUDA device where there is one)",
    )  # fmt: skip
    p.add_argument(
        "--carve-seed", type=int, default=None,
        help="fine-tuning: seed of the patient carve (default: --seed); keep it for ensemble members",
    )  # fmt: skip
    p.add_argument(
        "--train-fraction", type=float, default=1.0,
        help="fine-tuning: fraction of the training patients used (label efficiency; drawn with --seed)",
    )  # fmt: skip
    p.add_argument(
        "--max-epochs-this-call", type=int, default=None,
        help="fine-tuning: stop after N epochs (state saved in --out; run again to resume)",
    )  # fmt: skip


def _add_evaluate(sub: _Subcommands) -> None:
    """``heads evaluate``."""
    p = sub.add_parser("evaluate", help="score a bundle on a held-out split with bootstrap CIs")
    _add_data(p, task=False)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)


def _add_knn(sub: _Subcommands) -> None:
    """``heads knn``."""
    p = sub.add_parser(
        "knn", help="weighted k-NN (DINO's) on frozen CLS features: train bank, held-out queries"
    )
    _add_data(p)
    p.add_argument("--bank-split", default="train")
    p.add_argument("--split", default="val", help="the queries")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)


def _add_sweep(sub: _Subcommands) -> None:
    """``heads sweep``."""
    p = sub.add_parser("sweep", help="label-efficiency sweep (12.5/25/50/100 %% of training patients)")
    _add_data(p)
    _add_fit(p)
    p.add_argument("--eval-split", default="val")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)


def _add_export(sub: _Subcommands) -> None:
    """``heads export``."""
    p = sub.add_parser("export", help="install a bundle (with its metrics) into a models directory")
    p.add_argument("--bundle", type=Path, help="a bundle written by 'heads fit'")
    p.add_argument("--results", type=Path, help="results.json written by 'heads evaluate'")
    p.add_argument("--version", default=None, help="version of the exported bundle (default: the fit's)")
    p.add_argument(
        "--tta", default=None, choices=("none", "hflip"),
        help="test-time augmentation the bundle asks for (default: the bundle's own)",
    )  # fmt: skip
    p.add_argument(
        "--decode", default=None, choices=DECODINGS,
        help="how the node turns the probabilities into a class (default: the bundle's own)",
    )  # fmt: skip
    p.add_argument("--random", action="store_true", help="write a random UNTRAINED head instead")
    p.add_argument("--task", help="with --random")
    p.add_argument("--encoder", type=Path, help="with --random")
    p.add_argument("--out", type=Path, required=True, help="models directory (e.g. <models>/heads)")
    p.add_argument("--overwrite", action="store_true")


def _add_localiser(sub: _Subcommands) -> None:
    """``heads localiser``."""
    p = sub.add_parser("localiser", help="train the knee-joint localiser on annotated full-size films")
    p.add_argument("--encoder", type=Path, required=True, help="the encoder it runs on (its feature maps)")
    p.add_argument("--films", type=Path, required=True, help="films root with manifest.csv (knee_fullsize)")
    p.add_argument("--annotations", type=Path, required=True, help="knee annotations (CSV, ANNOTATION.md)")
    p.add_argument("--augment", type=int, default=16, help="passes per film (the first as stored)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds by film (1: none)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--threshold", type=float, default=0.5, help="heat-map peak that counts as a joint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="keep the encoded films here (a torch file)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory (e.g. <models>/localiser)")


# ---------------------------------------------------------------------------------- helpers


def _dataset(args: argparse.Namespace, task: str) -> Any:
    from heads.datasets import load_dataset

    options: dict[str, Any] = {}
    if args.limit_per_class is not None:
        if args.dataset != "chen_kl":
            raise ValueError("--limit-per-class applies to chen_kl only")
        options["limit_per_class"] = args.limit_per_class
    return load_dataset(args.dataset, args.data, task=task, **options)


def _prep(task: Any, encoder: Any, *, hflip: bool = False) -> Any:
    from heads.features import Preprocessing

    return Preprocessing(
        kind=task.input.kind,
        img_size=int(encoder.card.img_size),
        patch=int(encoder.card.patch_size),
        slices=task.input.slices,
        strategy=task.input.strategy,
        hflip=hflip,
    )


def _features(
    args: argparse.Namespace, encoder: Any, task: Any, dataset: Any, splits: Sequence[str], *,
    hflip: bool = False,
) -> Any:  # fmt: skip
    from heads.features import FeatureCache

    samples = dataset.split(*splits)
    return FeatureCache(args.cache).get_or_compute(
        encoder, f"{dataset.name}-{'+'.join(splits)}", samples, _prep(task, encoder, hflip=hflip),
        batch_size=args.batch_size, progress=args.verbose,
    )  # fmt: skip


def _fit_config(args: argparse.Namespace, task: Any) -> Any:
    from heads.train import FitConfig

    kind = args.head
    if kind == "auto":
        kind = "attention" if task.input.kind == "mri_slices" else "linear"
    hparams: dict[str, Any] = {}
    if args.hidden is not None:
        hparams["hidden"] = args.hidden
    if args.dropout is not None:
        hparams["dropout"] = args.dropout
    if kind == "attention" and task.ordinal:
        hparams["ordinal"] = True
    return FitConfig(
        head=kind, features=args.features, hparams=hparams, epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, patience=args.patience, val_fraction=args.val_fraction,
        class_weighting=args.class_weighting, seed=args.seed,
    )  # fmt: skip


def _encoder(path: Path) -> Any:
    from orthonode.inference.encoder import load_encoder

    return load_encoder(path)


# ---------------------------------------------------------------------------------- commands


def cmd_list(_: argparse.Namespace) -> int:
    from orthonode.tasks.registry import describe, list_tasks

    for spec in list_tasks():
        print(describe(spec))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from orthonode.tasks.registry import get_task

    task = get_task(args.task)
    encoder = _encoder(args.encoder)
    dataset = _dataset(args, task.name)
    for split in args.splits or dataset.splits:
        features = _features(args, encoder, task, dataset, [split])
        print(
            f"{split}: {len(features)} samples, features {tuple(features.cls.shape)} (cached in {args.cache})"
        )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from heads.export import export_head
    from orthonode.tasks.registry import get_task

    task = get_task(args.task)
    encoder = _encoder(args.encoder)
    dataset = _dataset(args, task.name)
    config = _fit_config(args, task)
    summary = {
        "dataset": dataset.name,
        "split": args.train_split,
        "n_samples": len(dataset.split(args.train_split)),
        "real": not args.fixture,
    }
    if args.finetune:
        return _finetune(args, task, encoder, dataset, config, summary)
    from heads.train import fit_head

    features = _features(args, encoder, task, dataset, [args.train_split])
    fit = fit_head(task, features, config)
    training = {
        "fit": config.as_dict(),
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history),
        "best_val_loss": fit.best_val_loss,
        "n_train": fit.n_train,
        "n_val": fit.n_val,
        "train_patients": fit.train_patients,
        "val_patients": fit.val_patients,
        "data": summary,
    }
    bundle = export_head(
        task, fit.head, encoder, args.out, version=args.version, features=config.features, training=training,
        overwrite=True,
    )  # fmt: skip
    (args.out / "history.json").write_text(json.dumps(fit.history, indent=1) + "\n", encoding="utf-8")
    print(f"best epoch {fit.best_epoch} of {len(fit.history)}; bundle: {bundle}")
    return 0


def _finetune(
    args: argparse.Namespace, task: Any, encoder: Any, dataset: Any, config: Any, summary: dict[str, Any]
) -> int:
    """``heads fit --finetune``: train encoder and head, resumable from ``--out``; export both."""
    from heads.export import export_finetuned
    from heads.finetune import FineTuneConfig, choose_tta, finetune

    ft = FineTuneConfig(
        **{**config.shared(), "batch_size": args.batch_size}, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay, drop_path=args.drop_path,
        select=args.select, augment=not args.no_augment, hflip=not args.no_hflip,
        label_smoothing=args.label_smoothing, precision=args.precision, device=args.device,
        carve_seed=args.carve_seed, train_fraction=args.train_fraction,
    )  # fmt: skip
    result = finetune(
        encoder, task, dataset.split(args.train_split), _prep(task, encoder), ft, state_dir=args.out,
        max_epochs_this_call=args.max_epochs_this_call, progress=sys.stderr.isatty(),
    )  # fmt: skip
    finished = len(result.history) >= ft.epochs or (len(result.history) - result.best_epoch >= ft.patience)
    if not finished:
        print(f"stopped after epoch {len(result.history)} of {ft.epochs}; run the same command to resume")
        return 0
    tta = choose_tta(args.tta, result.tta_carve, ft.select)
    training = {
        "finetune": ft.as_dict(),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "history": result.history,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "data": summary,
        "tta_carve": result.tta_carve,
        "tta": {"requested": args.tta, "chosen": tta},
    }
    import torch

    encoder_dir, bundle = export_finetuned(
        task, result.backbone, result.head, encoder, args.out, version=args.version, features=ft.features,
        training=training, dtype=getattr(torch, args.encoder_dtype), tta=tta,
    )  # fmt: skip
    print(f"test-time augmentation: {tta} (carve: {json.dumps(result.tta_carve)})")
    print(f"fine-tuned encoder: {encoder_dir}")
    print(f"bundle: {bundle}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from heads.evaluate import build_report, evaluate_head_on, write_report
    from orthonode.tasks.bundle import load_bundle
    from orthonode.tasks.registry import get_task

    encoder = _encoder(args.encoder)
    loaded = load_bundle(args.bundle, encoder_fingerprint=encoder.fingerprint)
    task = get_task(loaded.card.task)
    dataset = _dataset(args, task.name)
    if args.split == loaded.card.head.training.get("data", {}).get("split"):
        raise ValueError(f"refusing to report on the training split {args.split!r}")
    features = _features(args, encoder, task, dataset, [args.split])
    mirrored = None
    if loaded.card.input.tta == "hflip":  # the bundle is scored as the node runs it
        mirrored = _features(args, encoder, task, dataset, [args.split], hflip=True)
    result, probs = evaluate_head_on(
        task, loaded.head, features, loaded.card.input.features, n_boot=args.n_boot, seed=args.seed,
        mirrored=mirrored, decode=loaded.card.head.decode,
    )  # fmt: skip
    report = build_report(
        task, result, dataset=dataset.name, split=args.split, real=not args.fixture,
        encoder={"fingerprint": encoder.fingerprint, "name": encoder.card.name},
        head={"bundle": loaded.path.name, "kind": loaded.card.head.kind,
              "features": loaded.card.input.features, "tta": loaded.card.input.tta,
              "decode": loaded.card.head.decode},
    )  # fmt: skip
    files = write_report(report, args.out, task=task, y_true=features.labels.numpy(), probs=probs)
    print((args.out / "results.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(p.name for p in files))
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    """k-NN accuracy and QWK of the queries, with patient-bootstrap 95% intervals (no training at all)."""
    from heads.metrics import accuracy, patient_bootstrap, quadratic_weighted_kappa
    from orthonode.inference.knn import knn_classify
    from orthonode.tasks.registry import get_task

    if args.bank_split == args.split:
        raise ValueError("the k-NN bank and the queries must be different splits")
    task = get_task(args.task)
    encoder = _encoder(args.encoder)
    dataset = _dataset(args, task.name)
    bank = _features(args, encoder, task, dataset, [args.bank_split])
    queries = _features(args, encoder, task, dataset, [args.split])
    predicted = knn_classify(bank.cls, bank.labels, queries.cls, k=args.k, temperature=args.temperature)
    truth, pred = queries.labels.numpy(), predicted.numpy()
    print(
        f"k-NN (k={args.k}, T={args.temperature}) of {encoder.card.name} ({encoder.fingerprint}) on "
        f"{dataset.name}: bank {args.bank_split} ({len(bank)}), queries {args.split} ({len(queries)})"
    )
    metrics = (
        {"accuracy": accuracy, "qwk": quadratic_weighted_kappa} if task.ordinal else {"accuracy": accuracy}
    )
    for name, metric in metrics.items():
        interval = patient_bootstrap(
            metric, truth, pred, queries.patients, n_boot=args.n_boot, seed=args.seed
        )
        print(f"{name}: {interval.value:.4f} (95% CI {interval.low:.4f}-{interval.high:.4f})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from heads.evaluate import build_report, evaluate_head_on, label_efficiency_sweep, write_report
    from heads.train import fit_head
    from orthonode.tasks.registry import get_task

    task = get_task(args.task)
    encoder = _encoder(args.encoder)
    dataset = _dataset(args, task.name)
    config = _fit_config(args, task)
    train = _features(args, encoder, task, dataset, [args.train_split])
    evaluation = _features(args, encoder, task, dataset, [args.eval_split])
    rows = label_efficiency_sweep(
        task, train, evaluation, config, fractions=args.fractions, seeds=args.seeds, n_boot=args.n_boot
    )
    full = fit_head(task, train, config)
    result, probs = evaluate_head_on(task, full.head, evaluation, config.features, n_boot=args.n_boot)
    report = build_report(
        task, result, dataset=dataset.name, split=args.eval_split, real=not args.fixture,
        encoder={"fingerprint": encoder.fingerprint, "name": encoder.card.name}, head=config.as_dict(),
    )  # fmt: skip
    report["label_efficiency"] = rows
    write_report(report, args.out, task=task, y_true=evaluation.labels.numpy(), probs=probs)
    print((args.out / "results.md").read_text(encoding="utf-8"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from heads.export import _metrics_of
    from orthonode.tasks.bundle import load_bundle, make_card, random_bundle, save_bundle
    from orthonode.tasks.registry import get_task

    if args.random:
        if not args.task or not args.encoder:
            raise ValueError("--random needs --task and --encoder")
        path = random_bundle(args.task, _encoder(args.encoder), args.out, overwrite=True)
        print(f"UNTRAINED random head: {path}")
        return 0
    if args.bundle is None:
        raise ValueError("export needs --bundle (or --random)")
    loaded = load_bundle(args.bundle)
    card = loaded.card
    report = json.loads(args.results.read_text(encoding="utf-8")) if args.results else None
    if report is not None and report.get("head", {}).get("tta", "none") != (args.tta or card.input.tta):
        raise ValueError("the results were computed with another test-time augmentation than the export's")
    decode = args.decode or card.head.decode
    if report is not None and report.get("head", {}).get("decode", "argmax") != decode:
        raise ValueError("the results were computed with another decoding rule than the export's")
    if report is not None and report.get("task") != card.task:
        raise ValueError(f"results are for task {report.get('task')!r}, the bundle is {card.task!r}")
    if report is not None and report.get("encoder", {}).get("fingerprint") not in (
        None,
        card.encoder.fingerprint,
    ):
        raise ValueError("the results were computed with another encoder than the bundle's")
    metrics, evaluated = _metrics_of(report)
    new = make_card(
        get_task(card.task), loaded.head, encoder_fingerprint=card.encoder.fingerprint,
        encoder_name=card.encoder.name, img_size=card.input.img_size, patch=card.input.patch,
        features=card.input.features, version=args.version or card.version, trained=card.trained,
        name=card.name, thresholds=dict(card.thresholds), training=dict(card.head.training),
        metrics=metrics, evaluated_on=evaluated, tta=args.tta or card.input.tta, decode=decode,
    )  # fmt: skip
    path = save_bundle(loaded.head, new, args.out, overwrite=args.overwrite)
    print(f"exported {path}")
    return 0


def cmd_localiser(args: argparse.Namespace) -> int:
    from heads.localiser import fit_localiser

    localiser, report = fit_localiser(
        _encoder(args.encoder), args.films, args.annotations, augment_n=args.augment, folds=args.folds,
        threshold=args.threshold, steps=args.steps, seed=args.seed, cache=args.cache,
    )  # fmt: skip
    localiser.save(args.out)
    (args.out.parent / f"{args.out.name}_cv.json").write_text(
        json.dumps(report, indent=1) + "\n", encoding="utf-8"
    )
    print(json.dumps(report["summary"], indent=1))
    print(f"localiser: {args.out}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "knn": cmd_knn,
    "embed": cmd_embed,
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "sweep": cmd_sweep,
    "export": cmd_export,
    "localiser": cmd_localiser,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from orthonode.errors import OrthonodeError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, KeyError, OrthonodeError, FileNotFoundError) as exc:  # DatasetError, BundleError too
        print(f"heads {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
