"""Collectives for losses computed across data-parallel ranks.

Axis legend: ``b`` local batch, ``B`` global batch (``world * b``), ``e`` embedding width.

A contrastive loss on each rank scores its local rows against the rows of every rank. The
gathered copy of another rank's rows is only a constant on this rank, so the gradient of this
rank's loss with respect to those rows would be lost unless it is sent back to their owner:
:func:`all_gather_with_grad` does that with an all-reduce in the backward pass. Every rank
needs the same batch size (``torch.distributed.all_gather`` requires equal shapes).

Outside an initialised process group, or with one process, every function is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's rows. Backward: sum the gradients of every rank's loss
    with respect to the gathered tensor, then keep this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # x [b ...] -> [B ...]
        rank, world = rank_and_world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # grad [B ...] -> [b ...]
        # Each rank holds d(its own loss)/d(gathered); the local rows feed every rank's loss,
        # so their gradient is the sum over ranks.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Every rank's rows, in rank order, with gradients flowing back to the local rows.

    Inputs:
        x: ``[b ...]`` this rank's rows (the same ``b`` on every rank).
    Returns:
        ``[world * b ...]``; ``x`` itself without a process group of more than one rank.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    gathered: Tensor = _GatherWithGrad.apply(x)  # type: ignore[no-untyped-call]  # unannotated in torch
    return gathered


@torch.no_grad()
def all_gather_no_grad(x: Tensor) -> Tensor:
    """Every rank's rows, in rank order, as constants (queue updates, soft targets).

    Inputs:
        x: ``[b ...]`` this rank's rows.
    Returns:
        ``[world * b ...]``, detached; ``x.detach()`` without a process group.
    """
    _, world = rank_and_world()
    if world == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


def local_labels(rows: int, device: torch.device | None = None) -> Tensor:
    """Where this rank's row ``i`` sits among the gathered rows: ``rank * rows + i``.

    Inputs:
        rows: the local batch size ``b``.
    Returns:
        ``[b]`` long.
    """
    rank, _ = rank_and_world()
    return torch.arange(rows, device=device) + rank * rows
