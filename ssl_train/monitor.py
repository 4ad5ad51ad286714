"""k-NN monitoring of the EMA teacher during a run (DINO's weighted k-NN classifier, :mod:`ssl_train.knn`).

Reference: Caron et al., "DINO", arXiv:2104.14294, Section 4.1 -- the teacher backbone's features of a
labelled bank and query set, the ``k`` nearest bank features voting with weight ``exp(sim / T)``.
The main process evaluates, the others wait; under FSDP the teacher backbone is first gathered in full (a
collective) into an unsharded copy.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ssl_train.config import Config
from ssl_train.distributed import DistInfo, barrier
from ssl_train.meta_arch import SSLMetaArch
from ssl_train.models.backbone import SSLBackbone
from ssl_train.parallel import full_model_state

__all__ = ["evaluate_teacher"]

logger = logging.getLogger(__name__)


def _teacher_backbone(meta: SSLMetaArch, cfg: Config, info: DistInfo, *, sharded: bool) -> SSLBackbone:
    """The teacher backbone, gathered in full into an unsharded copy on the main process under FSDP."""
    teacher: SSLBackbone = meta.teacher.backbone
    if sharded:
        state = full_model_state(meta.teacher.backbone)
        if info.is_main:
            teacher = SSLBackbone(
                cfg.model.arch,
                img_size=cfg.crops.global_size,
                in_chans=cfg.model.in_chans,
                layer_scale_init=cfg.model.layer_scale_init,
            ).to(info.device)
            teacher.load_state_dict(state)
    return teacher


def evaluate_teacher(
    meta: SSLMetaArch,
    cfg: Config,
    info: DistInfo,
    iteration: int,
    *,
    sharded: bool = False,
    bf16: bool = False,
) -> dict[str, Any] | None:
    """The k-NN record of iteration ``iteration`` on the main process (``None`` elsewhere, or on failure)."""
    from ssl_train.knn import knn_evaluate

    result: dict[str, Any] | None = None
    teacher = _teacher_backbone(meta, cfg, info, sharded=sharded)
    if info.is_main:
        assert cfg.eval.manifest is not None
        start = time.perf_counter()
        try:
            metrics = knn_evaluate(
                teacher,
                manifest=cfg.eval.manifest,
                root=cfg.eval.root,
                bank_split=cfg.eval.bank_split,
                query_split=cfg.eval.query_split,
                image_size=cfg.eval.image_size,
                mean=cfg.crops.mean,
                std=cfg.crops.std,
                device=info.device,
                k=cfg.eval.k,
                temperature=cfg.eval.temperature,
                max_bank=cfg.eval.max_bank,
                max_query=cfg.eval.max_query,
                batch_size=cfg.eval.batch_size,
                autocast=bf16,
            )
            result = {
                "iteration": iteration - 1,
                "eval": "knn",
                **metrics,
                "seconds": time.perf_counter() - start,
            }
            logger.info("k-NN at iteration %d: top-1 %.4f", iteration, metrics["knn_top1"])
        except (ValueError, OSError) as exc:
            logger.warning("k-NN evaluation failed: %s", exc)
    barrier(info)
    return result
