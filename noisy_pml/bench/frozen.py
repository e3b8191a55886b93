"""The ``frozen`` protocol: an embedding head (+ loss) trained on cached backbone features."""

from __future__ import annotations

import time
from typing import Any

import torch

from . import distributed
from .data import BenchData
from .training import RunSpec, balanced_sampler, build_method, fit, make_record, resolve_device

__all__ = ["run_frozen"]


def _pick_views(views: torch.Tensor, idx: torch.Tensor, k: int, mode: str, g: torch.Generator):
    """``(x,)`` one view per sample (k=1) or ``(view_1, view_2)`` two different views (k=2)."""
    n_views = views.shape[1] if mode == "all" else 1
    if k == 1:
        v = torch.randint(n_views, (len(idx),), generator=g)
        return (views[idx, v],)
    if n_views < 2:
        return views[idx, 0], views[idx, 0]
    v1 = torch.randint(n_views, (len(idx),), generator=g)
    v2 = (v1 + torch.randint(1, n_views, (len(idx),), generator=g)) % n_views
    return views[idx, v1], views[idx, v2]


@torch.no_grad()
def _embed_all(method, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    method.eval()
    out = torch.cat([method.embed(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    method.train()
    return out


def run_frozen(
    data: BenchData,
    run: RunSpec,
    cfg: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any] | None:
    """Train one method's head on cached features of one noisy copy of the training labels;
    evaluate retrieval on ``data.eval_feats``. ``device``: see
    `resolve_device`. Under torchrun (`noisy_pml.bench.distributed`) every rank trains
    on its share of each batch; rank 0 evaluates and returns the record, the others None."""
    from ..utils.accuracy_calculator import evaluate_retrieval

    device = resolve_device(device)
    cfg, noise, train, method, k, build_seconds = build_method(data, run, cfg)
    t0 = time.perf_counter() - build_seconds
    method.to(device)
    g = torch.Generator().manual_seed(run.seed)
    groups = method.param_groups()
    sampler = balanced_sampler(train.labels, cfg, g) if groups and cfg["epochs"] > 0 else None

    def epoch_batches():
        for idx in sampler.index_batches():
            views = _pick_views(train.views, idx, k, cfg["train_views"], g)
            batch = (*views, train.labels[idx], idx)
            batch = distributed.local_share(batch, sampler.m)  # this rank's classes (torchrun)
            yield tuple(t.to(device) for t in batch)

    with distributed.training(method):
        hist = fit(method, groups, cfg, epoch_batches, two_view=k == 2)
    train_seconds = time.perf_counter() - t0
    if not distributed.is_main():
        return None  # rank 0 evaluates and writes
    t1 = time.perf_counter()
    emb = _embed_all(method, data.eval_feats.to(device)).cpu()
    method.cpu()
    metrics = evaluate_retrieval(emb, data.eval_labels, distance=method.eval_distance)
    eval_seconds = time.perf_counter() - t1
    return make_record(
        run,
        cfg,
        noise,
        method,
        train,
        metrics,
        hist,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        feature_seconds=data.feature_seconds,
    )
