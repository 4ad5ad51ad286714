"""Student, EMA teacher and frozen Gram teacher, and the multi-crop forward of the DINOv3 recipe.

References
----------
* Caron et al., "DINO", arXiv:2104.14294 -- self-distillation with an EMA teacher over multi-crop views.
* Zhou et al., "iBOT", arXiv:2111.07832 -- masked-patch distillation.
* Oquab et al., "DINOv2", arXiv:2304.07193 -- Sinkhorn-Knopp teacher targets, KoLeo on the student CLS.
* Siméoni et al., "DINOv3", arXiv:2508.10104, Section 4 -- Gram anchoring against an earlier teacher.

One training step (``SSLMetaArch.forward``), with ``n_g`` global crops, ``n_l`` local crops, ``B`` images per
process, ``K`` prototypes and ``N`` patches per global crop. Crops are stacked crop-major: row ``c * B + b``
is crop ``c`` of image ``b``.

* teacher (no grad) on the global crops ``[n_g * B, 1, G, G]``: CLS -> DINO head -> centering (Sinkhorn-
  Knopp over the global batch, or softmax centering) -> ``[n_g, B, K]`` targets; patch tokens at the masked
  positions -> iBOT head -> centering -> ``[M, K]`` targets;
* student on the global crops with masked patches replaced by the mask token, and on the local crops
  ``[n_l * B, 1, L, L]`` (unmasked); CLS -> DINO head -> ``[n_g + n_l, B, K]`` (globals first);
* ``dino``: :class:`ssl_train.loss.DINOLoss` over every (teacher global, other student crop) pair;
* ``ibot``: :class:`ssl_train.loss.IBOTPatchLoss` on the masked patches, normalised over the images with a
  mask in the GLOBAL batch (the count is all-reduced), so a DDP run equals a 1-process run;
* ``koleo``: :class:`ssl_train.loss.KoLeoLoss` on the student backbone CLS of each global crop, summed over
  the global crops (DINOv2); with ``koleo_distributed`` the features of all processes are gathered with a
  differentiable all-gather first, so the nearest neighbours come from the global batch;
* ``gram``: :class:`ssl_train.loss.GramLoss` between the student patch tokens of the (masked) global crops
  and the frozen Gram teacher's patch tokens of the same, unmasked crops; active once the Gram teacher has
  been taken (``gram_start_iteration``);
* ``total`` = weighted sum.

Gradients: every loss is a mean over this process's images (or, for KoLeo / iBOT, scaled so that the DDP
gradient average equals the gradient of the global-batch loss). The returned values of ``dino``, ``ibot``,
``gram`` are this process's; the trainer all-reduces them for logging.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_train.loss import DINOLoss, GramLoss, IBOTPatchLoss, KoLeoLoss, SoftmaxCentering, sinkhorn_knopp
from ssl_train.models.backbone import SSLBackbone
from ssl_train.models.heads import DINOHead
from ssl_train.parallel import ema_update, reshard

__all__ = ["HeadSpec", "MetaArchConfig", "SSLMetaArch"]


@dataclass(frozen=True)
class HeadSpec:
    """Dimensions of one projection head."""

    num_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3


@dataclass(frozen=True)
class MetaArchConfig:
    """What :class:`SSLMetaArch` needs (the trainer fills it from :class:`ssl_train.config.Config`)."""

    arch: str = "vit_test_patch16_dinov3"
    img_size: int = 224
    in_chans: int = 3
    drop_path_rate: float = 0.0
    layer_scale_init: float | None = None
    n_global: int = 2
    dino_head: HeadSpec = HeadSpec()
    ibot_separate_head: bool = True
    ibot_head: HeadSpec = HeadSpec()
    centering: Literal["sinkhorn_knopp", "softmax"] = "sinkhorn_knopp"
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    student_temp: float = 0.1
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    koleo_distributed: bool = True
    gram_enabled: bool = False
    gram_weight: float = 1.0
    gram_start_iteration: int = 0
    gram_refresh_every: int = 0
    gram_remove_negatives: bool = False


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _make_head(in_dim: int, spec: HeadSpec) -> DINOHead:
    return DINOHead(
        in_dim,
        spec.num_prototypes,
        hidden_dim=spec.hidden_dim,
        bottleneck_dim=spec.bottleneck_dim,
        n_layers=spec.n_layers,
    )


class _Network(nn.Module):
    """Backbone plus DINO head plus (optionally separate) iBOT head."""

    def __init__(self, cfg: MetaArchConfig) -> None:
        super().__init__()
        self.backbone = SSLBackbone(
            cfg.arch,
            img_size=cfg.img_size,
            in_chans=cfg.in_chans,
            drop_path_rate=cfg.drop_path_rate,
            layer_scale_init=cfg.layer_scale_init,
        )
        self.dino_head = _make_head(self.backbone.embed_dim, cfg.dino_head)
        separate = cfg.ibot_separate_head and self.backbone.is_vit  # a CNN has no masked patches
        self.ibot_head: DINOHead | None = (
            _make_head(self.backbone.embed_dim, cfg.ibot_head) if separate else None
        )

    def patch_head(self) -> DINOHead:
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def last_layer_parameters(self) -> list[nn.Parameter]:
        params = self.dino_head.last_layer_parameters()
        if self.ibot_head is not None:
            params += self.ibot_head.last_layer_parameters()
        return params


def _gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` ``[b, D]`` from every process into ``[world * b, D]`` (gradients flow back)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(list(all_gather(x)), dim=0)


class SSLMetaArch(nn.Module):
    """The self-distillation model: ``student``, ``teacher`` (EMA), ``gram_teacher`` (frozen, optional).

    Args:
        cfg: architecture and loss settings.
    """

    def __init__(self, cfg: MetaArchConfig) -> None:
        super().__init__()
        if cfg.n_global < 1:
            raise ValueError(f"n_global must be >= 1, got {cfg.n_global}")
        if cfg.centering not in ("sinkhorn_knopp", "softmax"):
            raise ValueError(f"centering must be 'sinkhorn_knopp' or 'softmax', got {cfg.centering!r}")
        if cfg.gram_start_iteration < 0 or cfg.gram_refresh_every < 0:
            raise ValueError("gram_start_iteration and gram_refresh_every must be >= 0")
        self.cfg = cfg
        self.student = _Network(cfg)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.gram_teacher: SSLBackbone | None = None
        if cfg.gram_enabled:
            self.gram_teacher = copy.deepcopy(self.student.backbone)
            self.gram_teacher.requires_grad_(False)
        self.register_buffer("gram_active", torch.zeros((), dtype=torch.bool))
        self.dino_loss = DINOLoss(cfg.student_temp)
        self.ibot_loss = IBOTPatchLoss(cfg.student_temp, average_over="all_images")
        self.koleo_loss = KoLeoLoss()
        self.gram_loss = GramLoss(remove_negatives=cfg.gram_remove_negatives)
        self.dino_center: SoftmaxCentering | None = None
        self.ibot_center: SoftmaxCentering | None = None
        if cfg.centering == "softmax":
            self.dino_center = SoftmaxCentering(cfg.dino_head.num_prototypes, cfg.center_momentum)
            patch_k = (cfg.ibot_head if cfg.ibot_separate_head else cfg.dino_head).num_prototypes
            self.ibot_center = SoftmaxCentering(patch_k, cfg.center_momentum)

    gram_active: Tensor

    # ----------------------------------------------------------------------------------------------- state

    def train(self, mode: bool = True) -> SSLMetaArch:
        """Student follows ``mode``; the teachers always stay in eval mode (no drop path)."""
        super().train(mode)
        self.teacher.eval()
        if self.gram_teacher is not None:
            self.gram_teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA: ``teacher <- momentum * teacher + (1 - momentum) * student`` (parameters only; shard by shard
        under FSDP, see :func:`ssl_train.parallel.ema_update`)."""
        ema_update(self.teacher, self.student, momentum)

    @torch.no_grad()
    def init_backbones(self, state_dict: dict[str, Tensor]) -> None:
        """Start student, EMA teacher and Gram teacher from the same backbone weights (timm names, strict):
        continued pretraining from a pretrained checkpoint (OrthoFoundation; DINOv3's distillations)."""
        backbones = [self.student.backbone, self.teacher.backbone]
        if self.gram_teacher is not None:
            backbones.append(self.gram_teacher)
        for backbone in backbones:
            backbone.model.load_state_dict(state_dict, strict=True)

    @torch.no_grad()
    def refresh_gram_teacher(self) -> None:
        """Copy the current EMA teacher backbone into the Gram teacher and activate Gram anchoring."""
        if self.gram_teacher is None:
            raise RuntimeError("Gram anchoring is not enabled in this model")
        self.gram_teacher.load_state_dict(self.teacher.backbone.state_dict())
        self.gram_active.fill_(True)

    def gram_refresh_due(self, iteration: int) -> bool:
        """True when the Gram teacher must be (re)taken before iteration ``iteration`` runs."""
        cfg = self.cfg
        if self.gram_teacher is None or iteration < cfg.gram_start_iteration:
            return False
        if iteration == cfg.gram_start_iteration:
            return True
        since = iteration - cfg.gram_start_iteration
        return cfg.gram_refresh_every > 0 and since % cfg.gram_refresh_every == 0

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Student prototype matrices (frozen during the first epoch)."""
        return self.student.last_layer_parameters()

    # ------------------------------------------------------------------------------------------- forward

    def _center(self, logits: Tensor, temp: float, center: SoftmaxCentering | None) -> Tensor:
        if center is None:
            return sinkhorn_knopp(logits, temp, self.cfg.sinkhorn_iterations)
        probs = center(logits, temp)
        center.update(logits)
        return probs

    def forward(
        self,
        global_crops: Tensor,
        local_crops: Tensor | None,
        masks: Tensor,
        *,
        teacher_temp: float,
    ) -> dict[str, Tensor]:
        """One step's losses.

        Args:
            global_crops: ``[n_g * B, C, G, G]`` crop-major.
            local_crops: ``[n_l * B, C, L, L]`` crop-major, or ``None`` / empty.
            masks: ``[n_g * B, N]`` bool iBOT masks of the student global crops.
            teacher_temp: teacher temperature of this iteration.

        Returns:
            ``{"dino", "ibot", "koleo", "gram", "total"}`` scalars (``gram`` is 0 while inactive).
        """
        cfg = self.cfg
        n_g = cfg.n_global
        if global_crops.shape[0] % n_g:
            raise ValueError(f"{global_crops.shape[0]} global crop rows are not a multiple of n_global={n_g}")
        batch = global_crops.shape[0] // n_g
        grid_h, grid_w = self.student.backbone.grid(global_crops.shape[-2], global_crops.shape[-1])
        if masks.shape != (global_crops.shape[0], grid_h * grid_w) or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be bool [n_g * B, N] = [{global_crops.shape[0]}, {grid_h * grid_w}], got "
                f"{masks.dtype} {tuple(masks.shape)}"
            )
        vit = self.student.backbone.is_vit
        if not vit and bool(masks.any()):
            raise ValueError(f"{cfg.arch} is a CNN: iBOT masks must be empty (set loss.ibot_weight: 0)")
        t_dino, t_ibot, g_patches = self._teacher_targets(global_crops, masks, teacher_temp, batch)

        # ---- student
        s_global = self.student.backbone(global_crops, masks if vit else None)
        cls_tokens = [s_global.cls]
        if local_crops is not None and local_crops.shape[0] > 0:
            cls_tokens.append(self.student.backbone(local_crops).cls)
        s_cls_logits = self.student.dino_head(torch.cat(cls_tokens, dim=0))
        n_crops = s_cls_logits.shape[0] // batch
        dino = self.dino_loss(s_cls_logits.view(n_crops, batch, -1), t_dino)
        zero = s_cls_logits.new_zeros(())
        ibot = self._ibot(s_global.patches, t_ibot, masks) if t_ibot is not None else zero
        koleo = self._koleo(s_global.cls, zero) if cfg.koleo_weight > 0 else zero
        gram = zero
        if g_patches is not None:
            gram = self.gram_loss(s_global.patches, g_patches)

        total = cfg.dino_weight * dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
        if g_patches is not None:
            total = total + cfg.gram_weight * gram
        return {
            "dino": dino.float(),
            "ibot": ibot.float(),
            "koleo": koleo.float(),
            "gram": gram.float(),
            "total": total.float(),
        }

    @torch.no_grad()
    def _teacher_targets(
        self, global_crops: Tensor, masks: Tensor, teacher_temp: float, batch: int
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(DINO targets [n_g, B, K], iBOT targets [M, K] or None for a CNN, Gram patches or None)``."""
        n_g = self.cfg.n_global
        t_out = self.teacher.backbone(global_crops)
        t_cls_logits = self.teacher.dino_head(t_out.cls)  # [n_g * B, K]
        t_dino = self._center(t_cls_logits.float(), teacher_temp, self.dino_center).view(n_g, batch, -1)
        t_ibot = None
        if self.teacher.backbone.is_vit:
            t_patch_logits = self.teacher.patch_head()(t_out.patches[masks])  # [M, K_patch]
            t_ibot = self._center(t_patch_logits.float(), teacher_temp, self.ibot_center)
        g_patches = None
        if self.gram_teacher is not None and bool(self.gram_active):
            g_patches = self.gram_teacher(global_crops).patches
        reshard(self.teacher)  # under FSDP: free the teacher's gathered weights before the student runs
        if self.gram_teacher is not None:
            reshard(self.gram_teacher)
        return t_dino, t_ibot, g_patches

    def _ibot(self, s_patches: Tensor, t_ibot: Tensor, masks: Tensor) -> Tensor:
        """The iBOT loss normalised over the images with a mask in the GLOBAL batch (see the module doc)."""
        s_patch_logits = self.student.patch_head()(s_patches[masks])
        ibot_local = self.ibot_loss.forward_masked(s_patch_logits, t_ibot, masks)  # sum / local rows
        n_rows = torch.tensor([float(masks.shape[0]), float(masks.any(dim=1).sum())], device=masks.device)
        world = 1
        if _distributed():
            world = dist.get_world_size()
            dist.all_reduce(n_rows)
        # global "masked images" normalisation: sum over masked images / number of masked images overall,
        # times world so that DDP's gradient average yields the global mean.
        return ibot_local * masks.shape[0] * world / n_rows[1].clamp_min(1.0)

    def _koleo(self, s_cls: Tensor, zero: Tensor) -> Tensor:
        """KoLeo on the student's pooled features of each global crop, summed over the global crops."""
        gathered = self.cfg.koleo_distributed and _distributed()
        koleo = zero
        for chunk in s_cls.chunk(self.cfg.n_global, dim=0):
            feats = _gather_with_grad(chunk.float()) if gathered else chunk
            koleo = koleo + self.koleo_loss(feats)
        # every process computes the same global KoLeo; its gradient reaches each process's own
        # features scaled by world (all-gather backward sums), and DDP divides by world again.
        return koleo
