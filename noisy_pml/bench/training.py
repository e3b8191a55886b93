"""The benchmark's one training loop, shared by the frozen and the finetune protocol.

A protocol supplies the epoch's batches in the datasets' one format, ``(x, label, index)`` or
``(view_1, view_2, label, index)`` (labels: the noisy training labels), and an ``encode``
function (identity on cached features; the backbone when fine-tuning). Per-sample information
reaches the method's components through :func:`noisy_pml.trainers.batch_getter`, exactly as it
does inside PML's trainers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..trainers.batch_getter import batch_getter

__all__ = ["fit", "make_optimizer", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else the CPU; ``"cpu"`` / ``"cuda"`` as named.

    Raises:
        ValueError: ``"cuda"`` asked for where no CUDA device is available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use auto or cpu")
    return dev


def make_optimizer(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW over the parameter groups (each group carries its own lr)."""
    return torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def fit(
    method: torch.nn.Module,
    groups: list[dict[str, Any]],
    cfg: dict[str, Any],
    epoch_batches: Callable[[], Iterable[tuple]],
    two_view: bool,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_epoch_start: Callable[[], None] | None = None,
    clip: float = 10.0,
) -> tuple[list[float], list[float]]:
    """Train ``method`` for ``cfg["epochs"]`` epochs; return (mean loss, seconds) per epoch.

    Args:
        method: a benchmark method (``compute_loss(x, labels, index)``, ``receivers()``).
        groups: optimiser parameter groups (AdamW, :func:`make_optimizer`).
        cfg: the run's resolved configuration (``epochs``, ``lr``, ``weight_decay``).
        epoch_batches: called once per epoch, yields that epoch's batches.
        two_view: batches are ``(view_1, view_2, label, index)``; the views are encoded as one
            ``[view_1; view_2]`` batch with labels doubled (``batch_getter`` layout "concat").
        encode: maps the batch's data to the method's input (default: identity).
        on_epoch_start: e.g. putting modules in train mode.
        clip: gradient value clipping.
    """
    losses: list[float] = []
    seconds: list[float] = []
    if not groups or cfg["epochs"] <= 0:
        return losses, seconds
    opt = make_optimizer(groups, cfg)
    params = [p for grp in groups for p in grp["params"]]
    getter = batch_getter(*method.receivers(), layout="concat" if two_view else "single")
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        if on_epoch_start is not None:
            on_epoch_start()
        total, steps = 0.0, 0
        for batch in epoch_batches():
            data, labels = getter(batch)
            x = encode(data) if encode is not None else data
            loss = method.compute_loss(x, labels, batch[-1])
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                torch.nn.utils.clip_grad_value_(params, clip)
                opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(steps, 1))
        seconds.append(round(time.perf_counter() - t0, 2))
    return losses, seconds
