"""What a run records beside its checkpoints: the resolved config, the git commit, the metrics, progress.

* ``config.yaml`` -- the resolved configuration (:func:`ssl_train.config.save_config`);
* ``git.json`` -- the commit and dirty flag of the checkout that ran (DINOv3's convention: every run saves
  its resolved config and commit);
* ``metrics.jsonl`` -- one JSON record per logged iteration (``train.log_every``) and per k-NN evaluation;
  a resume first drops the records of iterations at or after the checkpoint it starts from, so the file
  reads as one uninterrupted run;
* progress on the console: a tqdm bar when wanted and installed, else a plain periodic log line, or nothing.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from ssl_train.checkpoint import CONFIG_FILE
from ssl_train.config import Config, save_config

__all__ = ["METRICS_FILE", "Progress", "append_record", "git_info", "truncate_metrics", "write_run_files"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the repository holding this package (read-only git calls)."""
    repo = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info = {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        logger.warning("git commit unknown (not a git checkout or git missing)")
    return info


def truncate_metrics(path: Path, start: int) -> None:
    """Drop records of iterations ``>= start`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("iteration", -1) < start:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    tmp.replace(path)


def write_run_files(cfg: Config, run_dir: Path, start: int) -> Path:
    """Create ``run_dir``, save config and git info, cut the metrics back to ``start``; the metrics path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    (run_dir / "git.json").write_text(json.dumps(git_info(), indent=2) + "\n", encoding="utf-8")
    metrics_path = run_dir / METRICS_FILE
    truncate_metrics(metrics_path, start)
    return metrics_path


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line at the end of ``path``."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class Progress:
    """tqdm bar when wanted and installed, else a plain periodic log line, or nothing."""

    def __init__(self, mode: str, total: int, start: int, enabled: bool) -> None:
        self.bar: Any = None
        self.plain = False
        if not enabled or mode == "none":
            return
        use_tqdm = mode == "tqdm" or (mode == "auto" and sys.stderr.isatty())
        if use_tqdm:
            try:
                tqdm = importlib.import_module("tqdm").tqdm
                self.bar = tqdm(total=total, initial=start, desc="ssl", dynamic_ncols=True)
                return
            except ImportError:
                pass
        self.plain = True

    def update(self, record: dict[str, Any] | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if record is not None:
                self.bar.set_postfix(loss=f"{record['total']:.4f}", lr=f"{record['lr']:.2e}")
        elif self.plain and record is not None:
            logger.info(
                "it %d/%d epoch %d loss %.4f (dino %.4f ibot %.4f koleo %.4f gram %.4f) lr %.2e %.1f img/s",
                record["iteration"] + 1,
                record["total_iterations"],
                record["epoch"],
                record["total"],
                record["dino"],
                record["ibot"],
                record["koleo"],
                record["gram"],
                record["lr"],
                record["images_per_s"],
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
