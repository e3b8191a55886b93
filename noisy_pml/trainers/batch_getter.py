"""One ``data_and_label_getter`` for PML trainers that hands each batch's indices to components.

Datasets yield ``(x, label, index)`` for one view and ``(view_1, view_2, label, index)`` for two
(`TwoViewDataset`, ``return_index=True`` datasets). PML's trainers
call ``loss(embeddings, labels, indices_tuple)`` and ``miner(embeddings, labels)`` only, so
per-sample information travels through ``set_batch_info(indices=...)``: the getter calls it on
every receiver before the trainer computes the batch's loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["LAYOUTS", "batch_getter"]

LAYOUTS = ("single", "two_stream", "concat")


def batch_getter(*receivers: Any, layout: str = "single") -> Callable[[Sequence], tuple]:
    """A PML ``data_and_label_getter`` that calls ``r.set_batch_info(indices=index)`` on each
    receiver, then returns what the trainer expects.

    Args:
        *receivers: losses, miners or other components with ``set_batch_info`` (e.g.
            ``MultiSimilarityStarLoss``, ``AdaptiveThresholdLoss``, ``NoiseAwarePairMiner``).
        layout: ``"single"``: ``(x, label, index)`` -> ``(x, label)`` (``MetricLossOnly``);
            ``"two_stream"``: ``(view_1, view_2, label, index)`` -> ``(view_1, view_2, label)``
            (``TwoStreamMetricLoss``); ``"concat"``: ``(view_1, view_2, label, index)`` ->
            ``(cat[view_1; view_2], cat[label; label])`` (``MetricLossOnly`` on both views; the
            receivers get the batch's $B$ indices, row $i$ and row $B + i$ being sample $i$).

    Returns:
        ``getter(batch) -> tuple`` to pass as ``data_and_label_getter=``.

    Raises:
        ValueError: for an unknown ``layout``; the getter raises when a batch has the wrong
            number of fields or its indices do not match its labels.
        TypeError: for a receiver without ``set_batch_info``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    calls = [_setter(r) for r in receivers]
    fields = 3 if layout == "single" else 4
    expected = "(x, label, index)" if fields == 3 else "(view_1, view_2, label, index)"

    def getter(batch: Sequence) -> tuple:
        if len(batch) != fields:
            raise ValueError(
                f"batch_getter(layout={layout!r}) expects {expected} batches, got "
                f"{len(batch)} field(s); give the dataset return_index=True or wrap it in "
                "TwoViewDataset"
            )
        *views, labels, index = batch
        index = torch.as_tensor(index)
        if index.dim() != 1 or len(index) != len(labels):
            raise ValueError(
                f"batch indices must be a 1-D tensor with one index per label ({len(labels)}), "
                f"got shape {tuple(index.shape)}"
            )
        for call in calls:
            call(index)
        if layout == "single":
            return views[0], labels
        if layout == "two_stream":
            return views[0], views[1], labels
        return torch.cat(views), torch.cat([labels, labels])

    return getter


def _setter(receiver: Any) -> Callable[[torch.Tensor], None]:
    """``index -> receiver.set_batch_info(indices=index)``. Receivers that still name the
    keyword ``sample_indices`` (its deprecated alias) get it under that name."""
    method = getattr(receiver, "set_batch_info", None)
    if not callable(method):
        raise TypeError(
            f"receiver {type(receiver).__name__} has no set_batch_info(indices=...) method"
        )
    params = inspect.signature(method).parameters
    if "indices" in params or "sample_indices" not in params:
        return lambda index: method(indices=index)
    return lambda index: method(sample_indices=index)
