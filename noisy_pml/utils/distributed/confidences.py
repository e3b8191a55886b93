"""Smooth Proxy-Anchor's phase-1 confidence table under torch.distributed: computed once, on
one rank, and broadcast, so every rank looks up the same (N, C) table by dataset index."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from .gather import comm_device, is_distributed


def broadcast_tensor(tensor: torch.Tensor | None, src: int = 0) -> torch.Tensor:
    """``src``'s ``tensor`` on every rank (other ranks pass ``None``): on CPU, except on ``src``
    where a gloo broadcast leaves it where it was; without a process group, ``tensor`` itself.

    Raises:
        ValueError: ``src`` passed no tensor, or ``src`` is not a rank.
    """
    if not is_distributed():
        if tensor is None:
            raise ValueError("broadcast_tensor without a process group needs a tensor, got None")
        return tensor
    world, rank = dist.get_world_size(), dist.get_rank()
    if not 0 <= src < world:
        raise ValueError(f"src must be a rank in 0..{world - 1}, got {src}")
    meta = [None]
    if rank == src:
        meta = [None if tensor is None else (tuple(tensor.shape), tensor.dtype)]
    dist.broadcast_object_list(meta, src=src)  # shape and dtype first (every rank must agree)
    if meta[0] is None:
        raise ValueError(f"rank {src} (src) passed no tensor to broadcast")
    shape, dtype = meta[0]
    device = comm_device(tensor if rank == src else None)
    buf = tensor.to(device).contiguous() if rank == src else torch.empty(shape, dtype=dtype,
                                                                         device=device)
    dist.broadcast(buf, src=src)
    return buf if rank == src and buf.device == tensor.device else buf.cpu()


def broadcast_confidences(
    compute: Callable[[], torch.Tensor], src: int = 0
) -> torch.Tensor:
    """Run ``compute`` (e.g. ``lambda: compute_confidences(trunk, module, dataset)``) on rank
    ``src`` only and return its (N, C) result on every rank.

    Every rank must call this (it is a collective); the other ranks wait for ``src``. The table
    is indexed by dataset index, so a ``DistributedSampler``'s per-rank permutation does not
    matter: each rank looks up its own batch's indices in the same table.
    """
    rank = dist.get_rank() if is_distributed() else src
    return broadcast_tensor(compute() if rank == src else None, src=src)


def distributed_confidence_table(compute: Callable[[], torch.Tensor], src: int = 0):
    """A `noisy_pml.trainers.ConfidenceTable` over `broadcast_confidences`."""
    from ...trainers import ConfidenceTable

    return ConfidenceTable(broadcast_confidences(compute, src))
