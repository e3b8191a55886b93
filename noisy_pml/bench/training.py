"""The training layer: one run's noisy labels and method (`build_method`), the one training
loop shared by the frozen and the finetune protocol (`fit`), class-balanced batches and
the run's record (`make_record`).

A protocol supplies the epoch's batches in the datasets' one format, ``(x, label, index)`` or
``(view_1, view_2, label, index)`` (labels: the noisy training labels), and an ``encode``
function (identity on cached features; the backbone when fine-tuning). Per-sample information
reaches the method's components through `noisy_pml.trainers.batch_getter`, exactly as it
does inside PML's trainers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..noise import NoiseRecipe, apply_noise
from ..trainers.batch_getter import batch_getter
from . import distributed
from .data import resolve_device
from .methods import TrainSet
from .registry import get_method

__all__ = [
    "FitHistory",
    "RunSpec",
    "balanced_sampler",
    "build_method",
    "fit",
    "make_optimizer",
    "make_record",
    "resolve_device",
]


def make_optimizer(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW over the parameter groups (each group carries its own lr)."""
    return torch.optim.AdamW(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


class FitHistory(NamedTuple):
    """Per-epoch history of `fit`."""

    losses: list[float]  # mean training loss
    seconds: list[float]  # wall time
    # mean over the epoch's batches of every collapse statistic the method's modules record
    # (`noisy_pml.utils.ahsml.COLLAPSE_STATISTICS`: AHSML's losses); empty for other methods
    stats: dict[str, list[float]]


def _watched_statistics(method: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The collapse statistics the method's modules record: name -> the first module that
    records it (a loss, not a wrapper around it)."""
    from ..utils.ahsml import COLLAPSE_STATISTICS

    watched: dict[str, torch.nn.Module] = {}
    for module in method.modules():
        for name in COLLAPSE_STATISTICS:
            if hasattr(module, name):
                watched.setdefault(name, module)
    return watched


def _nanmean(values: list[float]) -> float | None:
    kept = [v for v in values if v == v]  # a batch without, e.g., augmentation pairs gives NaN
    return round(sum(kept) / len(kept), 5) if kept else None


def fit(
    method: torch.nn.Module,
    groups: list[dict[str, Any]],
    cfg: dict[str, Any],
    epoch_batches: Callable[[], Iterable[tuple]],
    two_view: bool,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_epoch_start: Callable[[], None] | None = None,
    clip: float = 10.0,
) -> FitHistory:
    """Train ``method`` for ``cfg["epochs"]`` epochs; return the per-epoch `FitHistory` (mean
    loss, seconds, and the collapse statistics of AHSML's losses, averaged over each epoch).

    Args:
        method: a benchmark method (``compute_loss(x, labels, index)``, ``receivers()``).
        groups: optimiser parameter groups (AdamW, `make_optimizer`).
        cfg: the run's resolved configuration (``epochs``, ``lr``, ``weight_decay``).
        epoch_batches: called once per epoch, yields that epoch's batches.
        two_view: batches are ``(view_1, view_2, label, index)``; the views are encoded as one
            ``[view_1; view_2]`` batch with labels doubled (``batch_getter`` layout "concat").
        encode: maps the batch's data to the method's input (default: identity).
        on_epoch_start: e.g. putting modules in train mode.
        clip: gradient value clipping.
    """
    hist = FitHistory([], [], {})
    if not groups or cfg["epochs"] <= 0:
        return hist
    opt = make_optimizer(groups, cfg)
    params = [p for grp in groups for p in grp["params"]]
    getter = batch_getter(*method.receivers(), layout="concat" if two_view else "single")
    watched = _watched_statistics(method)
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        if on_epoch_start is not None:
            on_epoch_start()
        total, steps = 0.0, 0
        batch_stats: dict[str, list[float]] = {name: [] for name in watched}
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
            for name, module in watched.items():
                batch_stats[name].append(float(getattr(module, name)))
        hist.losses.append(total / max(steps, 1))
        hist.seconds.append(round(time.perf_counter() - t0, 2))
        for name, values in batch_stats.items():
            hist.stats.setdefault(name, []).append(_nanmean(values))
    return hist


@dataclass(frozen=True)
class RunSpec:
    method: str
    noise: str = "clean"
    seed: int = 0
    mode: str = "test"  # "test": train on all training classes; "val": carved validation classes
    overrides: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    label: str | None = None  # name in tables (ablation variants); default: the method

    @property
    def name(self) -> str:
        return self.label or self.method

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


def balanced_sampler(labels: torch.Tensor, cfg: dict[str, Any], g: torch.Generator):
    """The run's `ClassBalancedBatchSampler` (cfg's batch size and
    ``m_per_class``), drawing from ``g``."""
    from ..datasets.sampler import ClassBalancedBatchSampler

    return ClassBalancedBatchSampler(labels, cfg["batch_size"], cfg["m_per_class"], generator=g)


def _auroc_curve(scores: torch.Tensor, noisy: torch.Tensor, points: int = 51):
    """AUROC of ``1 - score`` detecting noisy samples, and a downsampled ROC curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if noisy.all() or not noisy.any():
        return None
    y, s = noisy.numpy().astype(int), (-scores).numpy()
    fpr, tpr, _ = roc_curve(y, s)
    grid = torch.linspace(0, 1, points)
    tpr_i = torch.from_numpy(__import__("numpy").interp(grid.numpy(), fpr, tpr))
    return {"auroc": float(roc_auc_score(y, s)), "fpr": grid.tolist(), "tpr": tpr_i.tolist()}


def build_method(data, run: RunSpec, cfg: dict[str, Any], protocol: str = "frozen"):
    """Shared by both protocols: noisy labels of ``run``, the method (head + loss + miner) built
    on ``data.train_views`` and its optional first phase (Smooth PA's confidence module).

    Returns ``(cfg, noise result, TrainSet, method, views per sample k, seconds)``;
    ``seconds`` is the wall time after the noise injection (method building + first phase).
    """
    spec = get_method(run.method)
    cfg = spec.config(run.overrides_dict(), protocol=protocol) if cfg is None else cfg
    torch.manual_seed(run.seed)
    feats0 = data.train_views[:, 0]
    noise = apply_noise(
        data.train_labels, run.noise, seed=run.seed, features=feats0, num_classes=data.num_classes
    )
    train = TrainSet(
        data.train_views, noise.noisy_labels, data.train_labels, noise.noise_mask, data.num_classes
    )
    t0 = time.perf_counter()
    method = spec.load()(train, cfg, spec)
    distributed.prepare(method, train, run.seed)  # method.prepare (phase 1 once under torchrun)
    k = 2 if getattr(method, "two_view", spec.two_view) else 1
    return cfg, noise, train, method, k, time.perf_counter() - t0


def make_record(
    run: RunSpec,
    cfg,
    noise,
    method,
    train,
    metrics,
    hist: FitHistory,
    *,
    train_seconds: float,
    eval_seconds: float,
    feature_seconds: float,
    **extra,
) -> dict[str, Any]:
    """The JSONL record of one run (both protocols): its configuration, metrics and noisy
    labels, the training history ``hist`` (loss per epoch; AHSML's collapse statistics), the
    wall times, the torchrun fields, then the protocol's own ``extra`` fields."""
    scores = method.sample_scores(train)
    detection = None
    if scores is not None:
        detection = _auroc_curve(scores.detach().float().cpu(), noise.noise_mask.cpu())
    return {
        "method": run.name,
        "base_method": run.method,
        "noise": str(NoiseRecipe.parse(run.noise)),
        "seed": run.seed,
        "mode": run.mode,
        "cfg": cfg,
        "metrics": metrics,
        "achieved_noise_rate": float(noise.rate),
        "noisy_labels_sha1": hashlib.sha1(noise.noisy_labels.cpu().numpy().tobytes()).hexdigest(),
        **getattr(method, "phase1_info", {}),  # Smooth PA: phase-1 seconds, reused or not
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "feature_seconds": round(feature_seconds, 1),
        "loss_per_epoch": [round(v, 5) for v in hist.losses],
        **({"collapse_per_epoch": hist.stats} if hist.stats else {}),
        **distributed.record_fields(),
        **extra,
        "detection": detection,
    }
