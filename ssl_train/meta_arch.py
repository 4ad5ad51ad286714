"""Student, EMA teacher and frozen Gram teacher, and the multi-crop forward of the DINOv3 recipe.

References
----------
* Caron et al., "DINO", arXiv:2104.14294 -- self-distillation with an EMA teacher over multi-crop views.
* Zhou et al., "iBOT", arXiv:2111.07832 -- masked-patch distillation.
* Oquab et al., "DINOv2", arXiv:2304.07193 -- Sinkhorn-Knopp teacher targets, KoLeo on the student CLS.
* Siméoni et al., "DINOv3", arXiv:2508.10104, Section 4 -- Gram anchoring against an earlier teacher.

One training step (``SSLMetaArch.forward``: ``get_teacher_output``, ``get_student_output``,
``compute_losses``, the split of DINOv3's ``ssl_meta_arch.py``), with ``n_g`` global crops, ``n_l`` local
crops, ``B`` images per process, ``K`` prototypes and ``N`` patches per global crop (``N`` from the
backbone's own patch size). Crops are stacked crop-major: row ``c * B + b`` is crop ``c`` of image ``b``.

* teacher (no grad) on the global crops ``[n_g * B, 1, G, G]``: CLS -> DINO head -> centering (Sinkhorn-
  Knopp over the global batch, or softmax centering) -> ``[n_g, B, K]`` targets; patch tokens at the masked
  positions -> iBOT head -> centering -> ``[M, K]`` targets;
* student on the global crops with masked patches replaced by the mask token, and on the local crops
  ``[n_l * B, 1, L, L]`` (unmasked); CLS -> DINO head -> ``[n_g + n_l, B, K]`` (globals first);
* ``dino``: :class:`ssl_train.loss.DINOLoss` over every (teacher global, other student crop) pair;
* ``ibot``: :class:`ssl_train.loss.IBOTPatchLoss` on the masked patches, normalised over the images with a
  mask in the GLOBAL batch (the count is all-reduced), so a DDP run equals a 1-process run;
* ``koleo``: :class:`ssl_train.loss.KoLeoLoss` on the student backbone CLS of each global crop, summed over
  the global crops (DINOv2); with ``loss.koleo_distributed`` the features of all processes are gathered with a
  differentiable all-gather first, so the nearest neighbours come from the global batch;
* ``gram``: :class:`ssl_train.loss.GramLoss` between the student patch tokens of the (masked) global crops
  and the frozen Gram teacher's patch tokens of the same, unmasked crops; active once the Gram teacher has
  been taken (``loss.gram.start_iteration``);
* ``total`` = weighted sum.

Gradients: every loss is a mean over this process's images (or, for KoLeo / iBOT, scaled so that the DDP
gradient average equals the gradient of the global-batch loss). The returned values of ``dino``, ``ibot``,
``gram`` are this process's; the trainer all-reduces them for logging.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_train.config import Config, CropsConfig, HeadConfig, LossConfig, ModelConfig
from ssl_train.loss import DINOLoss, GramLoss, IBOTPatchLoss, KoLeoLoss, SoftmaxCentering, sinkhorn_knopp
from ssl_train.models.backbone import SSLBackbone
from ssl_train.models.heads import DINOHead
from ssl_train.parallel import ema_update, reshard

__all__ = ["MetaArchConfig", "SSLMetaArch", "StudentOutput", "TeacherOutput", "build_meta_arch"]


@dataclass(frozen=True)
class MetaArchConfig:
    """What :class:`SSLMetaArch` reads of a run configuration: its ``model`` and ``loss`` sections as they
    are, and the ``crops`` section for the global crops' size and count (one home for each setting:
    :mod:`ssl_train.config`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)

    @classmethod
    def of(cls, cfg: Config) -> MetaArchConfig:
        """The sections of ``cfg`` the model uses."""
        return cls(model=cfg.model, loss=cfg.loss, crops=cfg.crops)

    @property
    def n_global(self) -> int:
        """Global crops per image (``crops.n_global``)."""
        return self.crops.n_global


@dataclass
class TeacherOutput:
    """The teacher side of one step: DINO targets ``[n_g, B, K]``, iBOT targets ``[M, K]`` of the masked
    patches (``None`` for a CNN) and the Gram teacher's patch tokens ``[n_g * B, N, D]`` (``None`` while
    Gram anchoring is inactive)."""

    dino_targets: Tensor
    ibot_targets: Tensor | None
    gram_patches: Tensor | None


@dataclass
class StudentOutput:
    """The student side of one step: CLS logits ``[n_g + n_l, B, K]`` (global crops first) and the
    backbone's CLS ``[n_g * B, D]`` and patch tokens ``[n_g * B, N, D]`` of the (masked) global crops."""

    cls_logits: Tensor
    global_cls: Tensor
    global_patches: Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _make_head(in_dim: int, spec: HeadConfig) -> DINOHead:
    return DINOHead(
        in_dim,
        spec.num_prototypes,
        hidden_dim=spec.hidden_dim,
        bottleneck_dim=spec.bottleneck_dim,
        n_layers=spec.n_layers,
    )


class _Network(nn.Module):
    """Backbone plus DINO head plus (optionally separate) iBOT head."""

    def __init__(self, model: ModelConfig, img_size: int) -> None:
        super().__init__()
        self.backbone = SSLBackbone(
            model.arch,
            img_size=img_size,
            in_chans=model.in_chans,
            drop_path_rate=model.drop_path_rate,
            layer_scale_init=model.layer_scale_init,
        )
        self.dino_head = _make_head(self.backbone.embed_dim, model.dino_head)
        separate = model.ibot_separate_head and self.backbone.is_vit  # a CNN has no masked patches
        self.ibot_head: DINOHead | None = (
            _make_head(self.backbone.embed_dim, model.ibot_head) if separate else None
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
        loss, gram = cfg.loss, cfg.loss.gram
        if cfg.n_global < 1:
            raise ValueError(f"n_global must be >= 1, got {cfg.n_global}")
        if loss.centering not in ("sinkhorn_knopp", "softmax"):
            raise ValueError(f"centering must be 'sinkhorn_knopp' or 'softmax', got {loss.centering!r}")
        if gram.start_iteration < 0 or gram.refresh_every < 0:
            raise ValueError("gram_start_iteration and gram_refresh_every must be >= 0")
        self.cfg = cfg
        self.student = _Network(cfg.model, cfg.crops.global_size)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.gram_teacher: SSLBackbone | None = None
        if gram.enabled:
            self.gram_teacher = copy.deepcopy(self.student.backbone)
            self.gram_teacher.requires_grad_(False)
        self.register_buffer("gram_active", torch.zeros((), dtype=torch.bool))
        self.dino_loss = DINOLoss(loss.student_temp)
        self.ibot_loss = IBOTPatchLoss(loss.student_temp, average_over="all_images")
        self.koleo_loss = KoLeoLoss()
        self.gram_loss = GramLoss(remove_negatives=gram.remove_negatives)
        self.dino_center: SoftmaxCentering | None = None
        self.ibot_center: SoftmaxCentering | None = None
        if loss.centering == "softmax":
            model = cfg.model
            self.dino_center = SoftmaxCentering(model.dino_head.num_prototypes, loss.center_momentum)
            patch_k = (model.ibot_head if model.ibot_separate_head else model.dino_head).num_prototypes
            self.ibot_center = SoftmaxCentering(patch_k, loss.center_momentum)

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
        gram = self.cfg.loss.gram
        if self.gram_teacher is None or iteration < gram.start_iteration:
            return False
        if iteration == gram.start_iteration:
            return True
        since = iteration - gram.start_iteration
        return gram.refresh_every > 0 and since % gram.refresh_every == 0

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Student prototype matrices (frozen during the first epoch)."""
        return self.student.last_layer_parameters()

    # ------------------------------------------------------------------------------------------- forward

    def _center(self, logits: Tensor, temp: float, center: SoftmaxCentering | None) -> Tensor:
        if center is None:
            return sinkhorn_knopp(logits, temp, self.cfg.loss.sinkhorn_iterations)
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
        """One step's losses: teacher output, student output, losses (DINOv3's ``ssl_meta_arch`` split).

        Args:
            global_crops: ``[n_g * B, C, G, G]`` crop-major.
            local_crops: ``[n_l * B, C, L, L]`` crop-major, or ``None`` / empty.
            masks: ``[n_g * B, N]`` bool iBOT masks of the student global crops.
            teacher_temp: teacher temperature of this iteration.

        Returns:
            ``{"dino", "ibot", "koleo", "gram", "total"}`` scalars (``gram`` is 0 while inactive).
        """
        self._check_inputs(global_crops, masks)
        teacher = self.get_teacher_output(global_crops, masks, teacher_temp=teacher_temp)
        student = self.get_student_output(global_crops, local_crops, masks)
        return self.compute_losses(teacher, student, masks)

    def _check_inputs(self, global_crops: Tensor, masks: Tensor) -> None:
        """Raise ``ValueError`` for global crops or masks of the wrong shape (the grid is the backbone's)."""
        n_g = self.cfg.n_global
        if global_crops.shape[0] % n_g:
            raise ValueError(f"{global_crops.shape[0]} global crop rows are not a multiple of n_global={n_g}")
        grid_h, grid_w = self.student.backbone.grid(global_crops.shape[-2], global_crops.shape[-1])
        if masks.shape != (global_crops.shape[0], grid_h * grid_w) or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be bool [n_g * B, N] = [{global_crops.shape[0]}, {grid_h * grid_w}], got "
                f"{masks.dtype} {tuple(masks.shape)}"
            )
        if not self.student.backbone.is_vit and bool(masks.any()):
            raise ValueError(
                f"{self.cfg.model.arch} is a CNN: iBOT masks must be empty (set loss.ibot_weight: 0)"
            )

    @torch.no_grad()
    def get_teacher_output(
        self, global_crops: Tensor, masks: Tensor, *, teacher_temp: float
    ) -> TeacherOutput:
        """Centered DINO and iBOT targets of the EMA teacher, and the Gram teacher's patch tokens (no grad).

        The teacher sees the unmasked global crops; its iBOT targets are taken at the masked positions.
        """
        n_g = self.cfg.n_global
        batch = global_crops.shape[0] // n_g
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
        return TeacherOutput(dino_targets=t_dino, ibot_targets=t_ibot, gram_patches=g_patches)

    def get_student_output(
        self, global_crops: Tensor, local_crops: Tensor | None, masks: Tensor
    ) -> StudentOutput:
        """The student backbone on the masked global crops and the local crops, and its DINO head on every
        crop's CLS."""
        batch = global_crops.shape[0] // self.cfg.n_global
        s_global = self.student.backbone(global_crops, masks if self.student.backbone.is_vit else None)
        cls_tokens = [s_global.cls]
        if local_crops is not None and local_crops.shape[0] > 0:
            cls_tokens.append(self.student.backbone(local_crops).cls)
        s_cls_logits = self.student.dino_head(torch.cat(cls_tokens, dim=0))
        n_crops = s_cls_logits.shape[0] // batch
        return StudentOutput(
            cls_logits=s_cls_logits.view(n_crops, batch, -1),
            global_cls=s_global.cls,
            global_patches=s_global.patches,
        )

    def compute_losses(
        self, teacher: TeacherOutput, student: StudentOutput, masks: Tensor
    ) -> dict[str, Tensor]:
        """DINO, iBOT, KoLeo and Gram losses and their weighted ``total`` (see the module docstring)."""
        loss = self.cfg.loss
        dino = self.dino_loss(student.cls_logits, teacher.dino_targets)
        zero = student.cls_logits.new_zeros(())
        ibot = zero
        if teacher.ibot_targets is not None:
            ibot = self._ibot(student.global_patches, teacher.ibot_targets, masks)
        koleo = self._koleo(student.global_cls, zero) if loss.koleo_weight > 0 else zero
        gram = zero
        if teacher.gram_patches is not None:
            gram = self.gram_loss(student.global_patches, teacher.gram_patches)

        total = loss.dino_weight * dino + loss.ibot_weight * ibot + loss.koleo_weight * koleo
        if teacher.gram_patches is not None:
            total = total + loss.gram.weight * gram
        return {
            "dino": dino.float(),
            "ibot": ibot.float(),
            "koleo": koleo.float(),
            "gram": gram.float(),
            "total": total.float(),
        }

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
        gathered = self.cfg.loss.koleo_distributed and _distributed()
        koleo = zero
        for chunk in s_cls.chunk(self.cfg.n_global, dim=0):
            feats = _gather_with_grad(chunk.float()) if gathered else chunk
            koleo = koleo + self.koleo_loss(feats)
        # every process computes the same global KoLeo; its gradient reaches each process's own
        # features scaled by world (all-gather backward sums), and DDP divides by world again.
        return koleo


def build_meta_arch(cfg: Config) -> SSLMetaArch:
    """The student / teacher model of ``cfg`` (random init from the current torch RNG)."""
    return SSLMetaArch(MetaArchConfig.of(cfg))
