"""The training loop: data sharding, masks, DDP equivalence, exact resume, bf16 forward, DICOM / PNG runs,
the CLI."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from support.ssl_runs import metrics, student_teacher_state, tiny_config

from orthonode.inference.knn import knn_classify
from ssl_train.cli import main
from ssl_train.config import config_from_dict, config_to_dict, load_config
from ssl_train.train import fit, latest_checkpoint, load_checkpoint

# --------------------------------------------------------------------------------------------- pieces


def test_knn_classify_weighted_votes() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.8]])
    # k=1: nearest neighbour by cosine
    assert knn_classify(bank, labels, queries, k=1).tolist() == [0, 1, 2]
    # k=5, T=1: votes sum exp(cos) per class: for [0.6, 0.8] class 1 (two close items) beats class 2
    pred = knn_classify(bank, labels, queries[2:], k=5, temperature=1.0)
    q = torch.nn.functional.normalize(queries[2:], dim=1)
    b = torch.nn.functional.normalize(bank, dim=1)
    w = (q @ b.T).exp()[0]
    votes = [float(w[labels == c].sum()) for c in range(3)]
    assert pred.tolist() == [max(range(3), key=lambda c: votes[c])]


# ------------------------------------------------------------------------------------------ runs


def test_png_run_logs_checkpoints_evaluates_and_exports(tmp_path: Path, png_manifest: Path) -> None:
    cfg = tiny_config(
        tmp_path,
        png_manifest,
        "data.num_workers=1",
        f"eval.manifest={png_manifest}",
        "eval.every=3",
        "eval.image_size=32",
        "loss.gram.enabled=true",
        "loss.gram.start_iteration=2",
        "loss.gram.refresh_every=2",
        "train.max_iterations=4",
        "train.keep_checkpoints=1",
    )
    result = fit(cfg)
    run = result.run_dir
    assert (
        result.end_iteration == 4 and result.total_iterations == 9
    )  # 12 images // 4 = 3 per epoch, 3 epochs
    assert [r["iteration"] for r in metrics(run)] == [0, 1, 2, 3]
    assert [r["epoch"] for r in metrics(run)] == [0, 0, 0, 1]
    assert [r["gram"] > 0 for r in metrics(run)] == [False, False, True, True]
    assert len(result.evaluations) == 2 and 0.0 <= result.evaluations[0]["knn_top1"] <= 1.0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint_000000004.pt"]
    assert load_config(run / "config.yaml") == cfg
    assert "commit" in json.loads((run / "git.json").read_text())
    ckpt = load_checkpoint(run / "checkpoints" / "checkpoint_000000004.pt")
    assert {"model", "optimizer", "rng", "iteration", "epoch"} <= set(ckpt)
    assert ckpt["iteration"] == 4 and ckpt["epoch"] == 1
    assert any(k.startswith("gram_teacher.") for k in ckpt["model"])
    assert set(ckpt["rng"][0]) >= {"torch", "numpy", "python"}
    # a fresh fit into a run directory with checkpoints is refused: resume is explicit
    assert main(["fit", str(tmp_path / "cfg.yaml")]) == 3
    (tmp_path / "cfg.yaml").write_text(json.dumps(config_to_dict(cfg)))
    assert main(["fit", str(tmp_path / "cfg.yaml")]) == 1
    # export through the CLI, and load it as the node does
    assert main(["export", str(run), "--out", str(tmp_path / "enc")]) == 0
    from orthonode.inference.encoder import load_encoder

    encoder = load_encoder(tmp_path / "enc")
    assert encoder.card.arch == "vit_test_patch16_dinov3" and encoder.card.training["iterations"] == 4


def test_resume_after_kill_equals_uninterrupted_run(tmp_path: Path, png_manifest: Path) -> None:
    straight = fit(tiny_config(tmp_path, png_manifest, "run.name=straight", "train.max_iterations=5"))
    assert straight.end_iteration == 5
    cut = tiny_config(tmp_path, png_manifest, "run.name=cut", "train.max_iterations=3")
    fit(cut)
    run = tmp_path / "runs" / "cut"
    # simulate a kill after iteration 3 ran but before it was checkpointed: only checkpoint 2 survives
    (run / "checkpoints" / "checkpoint_000000003.pt").unlink()
    assert main(["resume", str(run), "train.max_iterations=5"]) == 0
    a, b = metrics(straight.run_dir), metrics(run)
    assert [r["iteration"] for r in b] == [0, 1, 2, 3, 4]
    for key in ("total", "dino", "ibot", "koleo", "lr", "teacher_temp", "momentum"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    sa, sb = student_teacher_state(straight.run_dir), student_teacher_state(run)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_patch8_vit_run_uses_the_backbones_grid(
    tmp_path: Path, png_manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop reads the patch size from the backbone: a patch-8 tiny ViT trains with 4x4-patch masks."""
    import ssl_train.models.backbone as backbone_module
    from orthonode.inference.backbones import create_backbone

    def patch8(arch: str, **kw: Any) -> torch.nn.Module:
        return create_backbone(arch, patch_size=8, **kw)

    monkeypatch.setattr(backbone_module, "create_backbone", patch8)
    result = fit(tiny_config(tmp_path, png_manifest, "loss.mask.probability=1.0", "train.max_iterations=2"))
    rows = metrics(result.run_dir)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert all(r["ibot"] > 0 and torch.isfinite(torch.tensor(r["total"])) for r in rows)
    state = student_teacher_state(result.run_dir)
    assert tuple(state["student.backbone.model.patch_embed.proj.weight"].shape[-2:]) == (8, 8)


def _ddp_worker(
    rank: int, world: int, port: int, cfg_dict: dict[str, Any], resume_from: str | None = None
) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1"}
    )
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    fit(config_from_dict(cfg_dict), resume_from=resume_from)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_equals_one_process(tmp_path: Path, png_manifest: Path) -> None:
    # LayerScale 1.0 instead of DINOv3's 1e-5: at 1e-5 the CLS features of all images nearly coincide at
    # init (distances ~1e-6), where KoLeo's gradient direction depends on last-bit differences of the
    # features -- ill-conditioned arithmetic, not a sharding question.
    common = ("train.max_iterations=4", "train.device=cpu", "optim.lr=0.005", "model.layer_scale_init=1.0")
    one = fit(tiny_config(tmp_path, png_manifest, "run.name=one", *common))
    two_cfg = tiny_config(tmp_path, png_manifest, "run.name=two", "data.batch_size_per_device=2", *common)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config_to_dict(two_cfg)), nprocs=2, join=True)
    a, b = metrics(one.run_dir), metrics(tmp_path / "runs" / "two")
    assert [r["iteration"] for r in b] == [0, 1, 2, 3]  # crosses the epoch boundary (3 iterations / epoch)
    for key in ("total", "dino", "ibot", "koleo", "grad_norm"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5), key
    sa, sb = student_teacher_state(one.run_dir), student_teacher_state(tmp_path / "runs" / "two")
    assert sa.keys() == sb.keys()
    for key in sa:
        if sa[key].is_floating_point():
            torch.testing.assert_close(sb[key], sa[key], rtol=0, atol=1e-6, msg=key)
    # the tolerance is meaningful: one more step of training moves the student far more than 1e-6
    more = fit(tiny_config(tmp_path, png_manifest, "run.name=more", *common[1:], "train.max_iterations=5"))
    sm = student_teacher_state(more.run_dir)
    drift = max(float((sm[k] - sa[k]).abs().max()) for k in sa if k.startswith("student."))
    assert drift > 1e-4


def test_two_process_fsdp_equals_one_process_and_resumes(tmp_path: Path, png_manifest: Path) -> None:
    # FSDP2 on gloo: every block, backbone, head and network of student, teacher and Gram teacher sharded
    # over 2 processes. Same steps as one unsharded process over the same global batch, Gram teacher taken
    # at iteration 2 (a sharded copy), full checkpoints that resume sharded.
    common = (
        "train.device=cpu", "optim.lr=0.005", "model.layer_scale_init=1.0", "loss.gram.enabled=true",
        "loss.gram.start_iteration=2",
    )  # fmt: skip
    one = fit(tiny_config(tmp_path, png_manifest, "run.name=one", "train.max_iterations=4", *common))
    two_cfg = tiny_config(
        tmp_path, png_manifest, "run.name=two", "data.batch_size_per_device=2", "train.strategy=fsdp",
        "train.max_iterations=4", *common,
    )  # fmt: skip
    mp.spawn(_ddp_worker, args=(2, _free_port(), config_to_dict(two_cfg)), nprocs=2, join=True)
    run = tmp_path / "runs" / "two"
    a, b = metrics(one.run_dir), metrics(run)
    assert [r["iteration"] for r in b] == [0, 1, 2, 3]
    assert b[3]["gram"] > 0
    for key in ("total", "dino", "ibot", "koleo", "gram", "grad_norm"):
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5), key
    ckpt = load_checkpoint(latest_checkpoint(run))  # type: ignore[arg-type]
    assert ckpt["optimizer_format"] == "names"
    sa, sb = student_teacher_state(one.run_dir), ckpt["model"]
    assert sa.keys() == sb.keys()  # full (unsharded) tensors under the usual names
    for key in sa:
        if sa[key].is_floating_point():
            torch.testing.assert_close(sb[key], sa[key], rtol=0, atol=1e-6, msg=key)

    # kill after iteration 4 was checkpointed; resume sharded to 5 == one process straight to 5
    more = fit(tiny_config(tmp_path, png_manifest, "run.name=more", "train.max_iterations=5", *common))
    resumed = config_to_dict(two_cfg)
    resumed["train"]["max_iterations"] = 5
    mp.spawn(_ddp_worker, args=(2, _free_port(), resumed, str(run)), nprocs=2, join=True)
    assert [r["iteration"] for r in metrics(run)] == [0, 1, 2, 3, 4]
    assert metrics(run)[4]["total"] == pytest.approx(metrics(more.run_dir)[4]["total"], rel=1e-5)
    sm, sr = student_teacher_state(more.run_dir), student_teacher_state(run)
    for key in sm:
        if sm[key].is_floating_point():
            torch.testing.assert_close(sr[key], sm[key], rtol=0, atol=1e-6, msg=key)


def test_bf16_autocast_covers_the_forward(tmp_path: Path, png_manifest: Path) -> None:
    seen: set[torch.dtype] = set()

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = fit(tiny_config(tmp_path, png_manifest, "train.precision=bf16", "train.max_iterations=1"))
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}  # every linear layer of teacher, student and heads ran in bf16
    state = student_teacher_state(result.run_dir)
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.startswith("student.backbone.model."))


def test_dicom_run_completes_and_exports(tmp_path: Path) -> None:
    from support.peers.synthetic import mr_series, new_study_uid, radiograph, write_all

    from orthonode.inference.encoder import load_encoder

    data = tmp_path / "dicom"
    xr = [
        radiograph(
            new_study_uid(), laterality="L" if i % 2 else "R", rows=96, cols=80, seed=i, patient_id=f"P{i}"
        )
        for i in range(3)
    ]
    write_all(xr, data / "xr", prefix="xr")
    write_all(
        mr_series(new_study_uid(), n_slices=4, rows=64, cols=64, patient_id="PMR"), data / "mr", prefix="mr"
    )
    manifest = tmp_path / "manifest.csv"
    assert main(["scan", str(data), "--out", str(manifest), "--val-fraction", "0"]) == 0
    rows = manifest.read_text().splitlines()[1:]
    assert len(rows) == 7 and sum(",MR," in r for r in rows) == 4
    cfg = tiny_config(tmp_path, manifest, "data.batch_size_per_device=2", "train.max_iterations=2")
    result = fit(cfg)
    assert result.end_iteration == 2
    assert all(torch.isfinite(torch.tensor(r["total"])) for r in metrics(result.run_dir))
    assert main(["export", str(result.run_dir)]) == 0
    encoder = load_encoder(result.run_dir / "export")
    assert encoder.card.img_size == 32 and encoder.card.mean == 0.5 and encoder.card.std == 0.25


def test_cli_errors_have_distinct_exit_codes(tmp_path: Path) -> None:
    assert main(["resume", str(tmp_path / "nowhere")]) == 3
    assert main(["export", str(tmp_path / "nowhere")]) == 3
    assert main(["scan", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.csv")]) == 3
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lrr: 1\n")
    assert main(["fit", str(cfg)]) == 2
    cfg.write_text("run:\n  name: x\n")
    assert main(["fit", str(cfg), "optim.lr=fast"]) == 2
    assert main(["fit", str(cfg), f"data.manifest={tmp_path / 'missing.csv'}"]) == 1
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.yaml").write_text("run:\n  name: x\n")
    assert main(["resume", str(empty)]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2
