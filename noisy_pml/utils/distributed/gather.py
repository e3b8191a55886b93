"""Rank-ordered, view-aware all-gather in which the local rows keep their gradient.

With the global batch split over ``W`` ranks and ``V`` views stacked per rank (rank ``r`` holds
``[v_1^r; ...; v_V^r]``), the global batch is ``[v_1^0; v_1^1; ...; v_1^{W-1}; ...; v_V^{W-1}]``:
the same order on every rank, and the order a single process sees when it concatenates the
ranks' batches view by view. Ranks may hold different numbers of rows (the last batch of an
epoch); the gather pads to the largest and trims.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def comm_device(like: torch.Tensor | None = None) -> torch.device:
    """The device collectives run on: the current CUDA device for NCCL, else ``like``'s (CPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like.device if like is not None else torch.device("cpu")


class ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def all_gather_ints(values: Sequence[int], device: torch.device) -> torch.Tensor:
    """(W, k) table of every rank's ``values`` (a small header gathered before the payload)."""
    mine = torch.tensor(list(values), dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return torch.stack(out).cpu()


def all_gather_padded(x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
    """Every rank's ``x`` (rank ``r`` holds ``lengths[r]`` rows), without gradient, on x's device.

    Rows beyond a rank's length are padding: torch.distributed.all_gather needs equal shapes.
    """
    device = comm_device(x)
    longest = max(lengths)
    pad = x.detach().to(device)
    if len(pad) < longest:
        pad = torch.cat([pad, pad.new_zeros((longest - len(pad), *pad.shape[1:]))])
    out = [torch.empty_like(pad) for _ in lengths]
    dist.all_gather(out, pad.contiguous())
    return [o[:n].to(x.device) for o, n in zip(out, lengths, strict=True)]


def gather_rows(
    x: torch.Tensor, lengths: Sequence[int], views: int = 1, grad_scale: float | None = None
) -> torch.Tensor:
    r"""The global batch ``[v_1^0; ...; v_1^{W-1}; ...; v_V^{W-1}]`` of every rank's ``x``.

    Args:
        x: this rank's rows, ``views`` equal blocks stacked along dim 0.
        lengths: every rank's number of rows (from `all_gather_ints`).
        views: number of stacked view blocks per rank.
        grad_scale: ``None``: no gradient flows (other ranks' rows never carry one); a number:
            the local rows are put back into their slots through an identity whose backward
            multiplies the gradient by it (``world_size`` under DDP averaging).

    Returns:
        The (sum(lengths), ...) global tensor, identical on every rank.
    """
    parts = all_gather_padded(x, lengths)
    if grad_scale is not None:
        parts[dist.get_rank()] = ScaleGrad.apply(x, float(grad_scale))
    blocks = [p.split(len(p) // views) for p in parts]
    return torch.cat([b[v] for v in range(views) for b in blocks])


def offset_instance_ids(ids: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Make one rank's instance ids globally unique: ``0..k-1`` (order kept) plus the number of
    images on the lower ranks (``counts``: images per rank), as one process would number them."""
    local = torch.unique(ids, return_inverse=True)[1]
    return local + int(sum(counts[: dist.get_rank()]))
