"""Autograd-aware collectives the SSL losses need on top of :mod:`curate.core.dist`."""

from __future__ import annotations

import torch
import torch.distributed as dist

from curate.core.dist import get_rank, get_world_size, is_distributed

_SIDE_GROUPS: dict[int, dist.ProcessGroup] = {}


def _side_group() -> dist.ProcessGroup:
    """A second group over all ranks, so collectives run inside autograd's backward never interleave
    with DDP's gradient buckets on the default group. Created collectively on first use."""
    key = id(dist.group.WORLD)
    if key not in _SIDE_GROUPS:
        _SIDE_GROUPS[key] = dist.new_group(backend=dist.get_backend())
    return _SIDE_GROUPS[key]


def _to_comm(x: torch.Tensor) -> torch.Tensor:
    if dist.get_backend() == "nccl" and not x.is_cuda:
        return x.cuda()
    return x


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate equal-sized tensors of all ranks; the backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.n, ctx.group = x.shape[0], group
        comm = _to_comm(x.contiguous())
        parts = [torch.empty_like(comm) for _ in range(get_world_size())]
        dist.all_gather(parts, comm, group=group)
        return torch.cat(parts).to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        comm = _to_comm(grad.contiguous().clone())
        dist.all_reduce(comm, op=dist.ReduceOp.SUM, group=ctx.group)
        start = get_rank() * ctx.n
        return comm[start : start + ctx.n].to(grad.device), None


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0, differentiable with respect to the local ``x``.

    Every rank computes the same function of the gathered tensor; the backward sums each rank's
    gradient for a slot into the rank that owns it. Under DDP (which averages parameter gradients)
    a loss ``L(gathered)`` computed identically on every rank therefore yields exactly the
    single-process gradient of ``L`` on the global batch.

    Args:
        x: ``(n, ...)`` with the same ``n`` on every rank.

    Returns:
        ``(world_size * n, ...)`` in rank order; ``x`` itself at world size 1.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x, _side_group())
