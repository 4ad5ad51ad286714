"""Fully sharded data parallelism (FSDP2, ``torch.distributed.fsdp.fully_shard``) for large backbones.

References
----------
* Zhao et al., "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel", VLDB 2023,
  arXiv:2304.11277 -- parameters, gradients and optimiser state sharded over the processes, each layer's
  parameters all-gathered just before it runs and freed after; gradients reduce-scattered (averaged).
* Oquab et al., "DINOv2", arXiv:2304.07193, Section 5 -- DINOv2 / DINOv3 train their ViT-g / 7B with FSDP,
  sharding the student, the EMA teacher and the heads in the same way.

What gets sharded (:func:`shard_meta_arch`): every transformer block of the student, of the EMA teacher and
of the Gram teacher is its own FSDP unit, then the backbones and the DINO / iBOT heads. The
meta-architecture calls backbones and heads directly, so each is an FSDP root; a root keeps its weights
gathered after forward, so the teachers, which never run backward, are resharded right after theirs
(:func:`reshard`). Student and teacher are built and sharded identically, so the local shard of a teacher
parameter holds the same elements as the local shard of the matching student parameter: the EMA update
(:func:`ema_update`) works shard by shard with no communication. The centering buffers and the Gram switch
are not parameters and stay replicated (their updates are all-reduced by the losses themselves).

The gradient of each shard is the average over processes, as with DDP, so an FSDP run takes the same steps
as a DDP run and as a one-process run over the same global batch (a test checks this).

Checkpoints hold FULL state dicts, gathered on the main process (:func:`full_model_state`,
:func:`full_optimizer_state`), so they load in the node, export like any other run and resume with any
number of processes. Resuming an FSDP run re-shards them (:func:`load_full_state`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "ema_update",
    "full_model_state",
    "full_optimizer_state",
    "is_sharded",
    "load_full_state",
    "local",
    "reshard",
    "shard_meta_arch",
]


def _fsdp() -> Any:
    from torch.distributed import fsdp

    return fsdp


def local(tensor: Tensor) -> Tensor:
    """The process-local part of ``tensor`` (its shard for a DTensor, itself otherwise)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def is_sharded(module: nn.Module) -> bool:
    """True when any parameter of ``module`` is a DTensor (the module went through ``fully_shard``)."""
    return any(callable(getattr(p, "to_local", None)) for p in module.parameters())


def _shard_backbone(backbone: nn.Module, mesh: Any) -> None:
    fully_shard = _fsdp().fully_shard
    model = backbone.model
    units = getattr(model, "blocks", None) or getattr(model, "stages", None)  # ViT blocks, CNN stages
    for block in units:  # type: ignore[union-attr]
        fully_shard(block, mesh=mesh)
    fully_shard(backbone, mesh=mesh)


def shard_meta_arch(meta: Any, device: torch.device, world: int) -> None:
    """Apply ``fully_shard`` to the student, the EMA teacher and the Gram teacher of an ``SSLMetaArch``.

    Call it after the weights are final (initialised or loaded) and BEFORE the optimiser is built: the
    optimiser must hold the sharded parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh

    fully_shard = _fsdp().fully_shard
    mesh = init_device_mesh(device.type, (world,))
    for network in (meta.student, meta.teacher):
        _shard_backbone(network.backbone, mesh)
        fully_shard(network.dino_head, mesh=mesh)
        if network.ibot_head is not None:
            fully_shard(network.ibot_head, mesh=mesh)
    gram = getattr(meta, "gram_teacher", None)
    if gram is not None:
        _shard_backbone(gram, mesh)


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters of every FSDP unit in ``module`` (no-op when it is not sharded).

    An FSDP root keeps its parameters gathered after forward, expecting a backward; the teachers never
    run one, so the meta-architecture reshards them right after their forward.
    """
    for sub in module.modules():
        if isinstance(sub, _fsdp().FSDPModule):
            sub.reshard()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` over (local shards of) parameters, and
    over BatchNorm running statistics (:func:`_ema_batch_norm_statistics`)."""
    t = [local(p.data) for p in teacher.parameters()]
    s = [local(p.data) for p in student.parameters()]
    if len(t) != len(s) or any(a.shape != b.shape for a, b in zip(t, s, strict=True)):
        bad = [
            (n, tuple(a.shape), tuple(b.shape))
            for (n, a), b in zip(teacher.named_parameters(), s, strict=True)
            if local(a.data).shape != b.shape
        ]
        raise RuntimeError(f"teacher and student are not sharded identically: {bad[:3]}")
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)
    _ema_batch_norm_statistics(teacher, student, momentum)


#: The BatchNorm buffers a CNN's teacher follows (a ViT has none: its buffers are constants).
_BN_STATISTICS = ("running_mean", "running_var")


def _ema_batch_norm_statistics(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """The same EMA over BatchNorm running statistics, averaged over the processes first.

    The teacher runs in eval mode and would otherwise keep its initial (e.g. ImageNet) statistics while its
    weights move on. Each process's student estimates them from its own batches (no SyncBN), so they are
    all-reduced to their mean: every process's teacher stays identical.
    """
    pairs = [
        (tb, sb)
        for (name, tb), sb in zip(teacher.named_buffers(), student.buffers(), strict=True)
        if name.rsplit(".", 1)[-1] in _BN_STATISTICS
    ]
    if not pairs:
        return
    t = [tb for tb, _ in pairs]
    s = [sb.detach().clone() for _, sb in pairs]
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        for buffer in s:
            dist.all_reduce(buffer)
        torch._foreach_div_(s, float(world))
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)


def _options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **extra)


def full_model_state(module: nn.Module) -> dict[str, Any]:
    """The full (unsharded) state dict of ``module`` on the main process, ``{}`` on the others.

    A collective: every process must call it.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options())


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimiser state dict keyed by parameter names (main process; ``{}`` elsewhere)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_options())


def load_full_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
) -> None:
    """Load full state dicts (as written by the functions above) into a sharded module and optimiser."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(module, model_state, options=_options())
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(module, optimizer, optimizer_state, options=_options())
