"""The benchmark under ``torchrun``: DistributedDataParallel in both protocols, equal to one
process with the same global batch.

``torchrun --standalone --nproc_per_node N -m noisy_pml.bench ...`` (or ``noisy-pml bench``
started by torchrun) sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; `launch` then starts a
process group (NCCL on CUDA, with one GPU per local rank; gloo on the CPU) and every rank runs
the same grid:

- **Batches.** Every rank draws the *global* class-balanced batch from the same seeded
  `ClassBalancedBatchSampler` (so the generator, and the views it picks, stay in step with a
  single process) and keeps its share (`local_share`): a contiguous block of whole classes,
  so each rank's batch is class-balanced too and the ranks' blocks concatenated in rank order
  are the single-process batch, row for row.
- **Model.** Every trainable module of the method except its loss and miner (the head, a
  Poincare map) and the finetune backbone are wrapped in ``DistributedDataParallel``
  (`training`); the loss and the miner in noisy-pml's `DistributedLossWrapper` /
  `DistributedMinerWrapper`, which gather the global batch in the single-process order, give
  memory banks the global batch and return the global-batch loss with the single-process
  gradients. Loss parameters (proxies) stay outside DDP: every rank computes the same gradient.
- **Phase 1** of Smooth Proxy-Anchor runs on rank 0 only; its confidence table is broadcast
  (`noisy_pml.utils.distributed.distributed_confidence_table`) and the loss wrapper looks the
  global batch's rows up by dataset index (`prepare`).
- **Results.** Evaluation, the results file and the report happen on rank 0 only; which runs
  are already finished (resume) is rank 0's reading of the results file, broadcast.

With no process group (a plain ``python -m noisy_pml.bench``, or torchrun with one process)
every function here is the identity and the single-process path is unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
    distributed_confidence_table,
    is_distributed,
)

__all__ = [
    "broadcast_object",
    "is_main",
    "launch",
    "local_share",
    "prepare",
    "record_fields",
    "share_bounds",
    "torchrun_world_size",
    "training",
    "world_size",
]


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` when started by torchrun (``RANK`` and ``WORLD_SIZE`` set), else 1.

    Raises:
        ValueError: ``WORLD_SIZE`` or ``RANK`` is not an integer.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 1
    try:
        int(os.environ["RANK"])
        return int(os.environ["WORLD_SIZE"])
    except ValueError as e:
        raise ValueError(
            f"RANK={os.environ['RANK']!r} and WORLD_SIZE={os.environ['WORLD_SIZE']!r} must be "
            "integers (they are set by torchrun)"
        ) from e


@contextlib.contextmanager
def launch(device: str | torch.device = "auto") -> Iterator[str | torch.device]:
    """Start the process group torchrun asked for (if any), yield the device to train on, and
    destroy the group on exit.

    On CUDA (``device`` "auto" with a GPU, or "cuda") rank ``LOCAL_RANK`` uses GPU
    ``LOCAL_RANK`` and NCCL; otherwise gloo on the CPU. The rendezvous (``MASTER_ADDR``,
    ``--rdzv-endpoint``, ...) is torchrun's: nothing here reads it.
    """
    from .data import resolve_device

    if torchrun_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    dev = resolve_device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible: start at most that many processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield dev
        # Ranks tear the group down together: rank 0 still writes the report when the others
        # are done, and a gloo peer that closes its connections first can abort rank 0 at exit
        # ("terminate called without an active exception", seen once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, and without a process group."""
    return not is_distributed() or dist.get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``src``'s ``obj`` on every rank (picklable); ``obj`` itself without a process group."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def share_bounds(rows: int, m_per_class: int, world: int) -> list[int]:
    """Row bounds of the ``world`` ranks' shares of a class-balanced batch of ``rows`` rows
    (``P = rows // m_per_class`` classes, class by class): rank ``r`` holds rows
    ``bounds[r]:bounds[r + 1]``, the classes ``r P // W`` to ``(r + 1) P // W`` (whole classes,
    ``P // W`` or ``P // W + 1`` of them), so the shares in rank order are the global batch.

    Raises:
        ValueError: fewer classes than ranks.
    """
    classes = rows // m_per_class
    if classes < world:
        raise ValueError(
            f"a batch of {rows} rows holds {classes} classes of m_per_class={m_per_class}, fewer "
            f"than the {world} ranks: raise batch_size to at least {world * m_per_class} or "
            "start fewer processes"
        )
    bounds = [r * classes // world * m_per_class for r in range(world + 1)]
    bounds[-1] = rows
    return bounds


def local_share(batch: Sequence[torch.Tensor], m_per_class: int) -> tuple[torch.Tensor, ...]:
    """This rank's rows (`share_bounds`) of every tensor of a global class-balanced ``batch``
    (same rows, class by class). Without a process group, ``batch`` unchanged."""
    if not is_distributed():
        return tuple(batch)
    rank = dist.get_rank()
    bounds = share_bounds(len(batch[0]), m_per_class, dist.get_world_size())
    return tuple(t[bounds[rank] : bounds[rank + 1]] for t in batch)


def prepare(method: nn.Module, train: Any, seed: int) -> None:
    """``method.prepare(train, seed)``; under a process group, a method's first phase runs on
    rank 0 only and its ``confidence_table`` (Smooth Proxy-Anchor's phase 1) is broadcast to
    every rank (`distributed_confidence_table`).

    Raises:
        ValueError: a method with a first phase that leaves no ``confidence_table``.
    """
    from .methods import BenchMethod

    if not is_distributed() or type(method).prepare is BenchMethod.prepare:
        method.prepare(train, seed)
        return

    def phase1() -> torch.Tensor:
        method.prepare(train, seed)
        table = getattr(method, "confidence_table", None)
        if not isinstance(table, torch.Tensor):
            raise ValueError(
                f"{type(method).__name__}.prepare left no confidence_table tensor: the "
                "distributed benchmark can only broadcast a first phase's confidence table"
            )
        return table

    table = distributed_confidence_table(phase1).confidences
    if dist.get_rank() != 0:
        method.register_buffer("confidence_table", table)


@contextlib.contextmanager
def training(method: nn.Module, *modules: nn.Module) -> Iterator[list[nn.Module]]:
    """While training under a process group: ``method``'s trainable submodules (not its loss or
    miner) in ``DistributedDataParallel``, its loss and miner in noisy-pml's distributed
    wrappers (the loss with the method's ``confidence_table``, if it has one); yields
    ``modules`` (e.g. the finetune backbone) wrapped in DDP. Everything is unwrapped on exit, so
    evaluation and the run's record see the plain modules. Without a process group, yields
    ``modules`` unchanged and changes nothing.
    """
    loss = getattr(method, "loss_fn", None)
    if not is_distributed() or loss is None:  # no process group, or nothing trains
        yield list(modules)
        return
    from torch.nn.parallel import DistributedDataParallel as DDP

    swapped: dict[str, nn.Module] = {}
    for name, child in list(method.named_children()):
        if name in ("loss_fn", "miner"):
            continue
        if any(p.requires_grad for p in child.parameters()):
            swapped[name] = child
            setattr(method, name, DDP(child))
    miner = getattr(method, "miner", None)
    method.loss_fn = DistributedLossWrapper(
        loss, confidence_table=getattr(method, "confidence_table", None)
    )
    if miner is not None:
        method.miner = DistributedMinerWrapper(miner)
    wrapped = [DDP(m) if any(p.requires_grad for p in m.parameters()) else m for m in modules]
    try:
        yield wrapped
    finally:
        for name, child in swapped.items():
            setattr(method, name, child)
        method.loss_fn = loss
        if miner is not None:
            method.miner = miner


def record_fields() -> dict[str, Any]:
    """``{"world_size": W}`` for a run's record under a process group; ``{}`` otherwise (a
    single-process record is unchanged)."""
    return {"world_size": dist.get_world_size()} if is_distributed() else {}
