"""Data-parallel training across ranks: Lightning's DDP launch, our own gradient averaging.

``trainer.strategy=ddp trainer.devices=N`` (and ``trainer.num_nodes`` with the standard multi-node
launch: torchrun, SLURM, ...) runs N ranks. Every rank steps its own environments into its own
replay buffer (seeds differ by rank), and every update is one synchronous data-parallel step: each
rank computes the loss on its own batch, the gradients of that optimizer's parameters are
averaged across ranks, and every rank takes the same optimizer step, so all ranks hold identical
parameters after every update (they start identical: rank 0's weights are broadcast).

Why not ``DistributedDataParallel``. DDP's reducer assumes one backward pass over the whole
module per forward; Algorithm 2 runs several partial backward passes per step (ensemble, critics,
actor, temperature, each on its own parameters), which plain DDP rejects ("parameters that were
not used in producing the loss") and ``find_unused_parameters=True`` makes slower on every step.
:class:`GradientAveragingDDP` therefore keeps everything of Lightning's ``DDPStrategy`` (launcher,
cluster environment, process group, barriers, rank-zero logging) except the DDP wrapper, and
:func:`average_gradients` all-reduces one flattened buffer per optimizer step, right before the
step. On one device (world size 1) none of this runs: the single-device path has no collective
and no extra copy.

Values decided from data are decided from all ranks' data, the same way on every rank: the
ensemble's normalizers (global moments, :func:`mean_across_ranks`), its early stopping and elites
(holdout scores averaged across ranks), and MPDP's u_T (a quantile of every rank's held-out u,
:func:`gather_across_ranks`). All-reduce returns identical bits on every rank, so identical
inputs give identical decisions.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy

from ..errors import ConfigError
from ..models.ranks import ONE_PROCESS, Ranks

# Lightning's DDP strategy names -> their process start method
DDP_START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params, loss: torch.Tensor | None = None) -> torch.Tensor | None:
    """Average the gradients of ``params`` across ranks in place, with one all-reduce of one
    flattened buffer. A missing gradient counts as zero (and becomes one), so that every rank
    steps the same parameters.

    With ``loss``, returns ``sum over ranks of loss * 0``: finite only if every rank's loss is
    finite, so that a non-finite loss on any rank makes every rank skip the step (the guard in
    ``NonfiniteGuard.step``). On one rank: nothing happens and ``loss`` is returned.
    """
    world = world_size()
    if world == 1:
        return loss
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    parts = [p.grad.reshape(-1) for p in params]
    if loss is not None:
        parts.append((loss.detach() * 0).reshape(1).to(parts[0].dtype))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n
    return flat[-1] if loss is not None else None


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (``x`` itself on one rank). Every rank must call it with
    the same shape."""
    world = world_size()
    if world == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world


def gather_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0, in rank order (``x`` on one rank). Every rank
    must call it with the same shape."""
    world = world_size()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def ranks() -> Ranks:
    """This process's ranks as the models take them (:mod:`mpdp_pl.models.ranks`): the
    collectives above under DDP, the single-process no-ops otherwise."""
    world = world_size()
    return ONE_PROCESS if world == 1 else Ranks(world, mean_across_ranks, average_gradients)


class GradientAveragingDDP(DDPStrategy):
    """Lightning's ``DDPStrategy`` without the ``DistributedDataParallel`` wrapper (see the module
    docstring): the module's states are broadcast from rank 0 once, and the algorithms average
    each optimizer's gradients themselves."""

    def configure_ddp(self) -> None:
        _sync_module_states(self.model)


def make_strategy(name: str):
    """The Trainer's ``strategy`` for a config value: Lightning's DDP names (``ddp``,
    ``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) become :class:`GradientAveragingDDP` with that
    start method; anything else is passed to Lightning as is."""
    if name in DDP_START_METHODS:
        return GradientAveragingDDP(start_method=DDP_START_METHODS[name])
    if name.startswith("ddp") or name in ("fsdp", "deepspeed"):
        raise ConfigError(f"trainer.strategy={name} is not supported: use one of "
                         f"{', '.join(DDP_START_METHODS)} (gradients are averaged per optimizer)")
    return name
