"""AHSML's adaptive per-pair thresholds for any pair-based PML loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_metric_learning.losses import (
    BaseMetricLossFunction,
    ContrastiveLoss,
    MultiSimilarityLoss,
    TripletMarginLoss,
)
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.class_divergence import AdaptiveThresholds

SUPPORTED = (ContrastiveLoss, TripletMarginLoss, MultiSimilarityLoss)


class AdaptiveThresholdLoss(BaseMetricLossFunction):
    r"""Wrap a PML pair loss so its fixed margins become AHSML's per-pair thresholds.

    Yan et al., "Adaptive Hierarchical Similarity Metric Learning with Noisy Labels", TIP 2023:
    the adaptive strategy "extends to any pair-based metric loss". (R) Each margin of the wrapped
    loss is shifted on every pair by its threshold's offset from $\gamma$
    ($T_{ij} - \gamma$, ``T`` from [`AdaptiveThresholds`][], no gradient), so
    ``T == gamma`` gives back the wrapped loss exactly; the views of one image (``A``) are
    positives with the augmentation threshold $M_a$, other same-label pairs get
    $M_p$, different-label pairs $M_n$:

    - ``ContrastiveLoss``: $[m_{pos} + T_{ap} - \gamma - s_{ap}]_+$ and
      $[s_{an} - (m_{neg} + T_{an} - \gamma)]_+$ (similarities).
    - ``TripletMarginLoss``:
      $[s_{an} - s_{ap} + m + (T_{ap} - \gamma) - (T_{an} - \gamma)]_+$.
    - ``MultiSimilarityLoss``: ``base`` becomes the matrix $b + T_{ij} - \gamma$.

    The wrapped loss stays a genuine PML class (its reducer, regularisers and records are used);
    its tensor margins are aligned with the explicit indices this wrapper passes to it and reset
    afterwards. The loss's distance must be a similarity (``PoincareSimilarity`` or, for the
    Euclidean ablation, ``CosineSimilarity``) because the thresholds are similarities.

    Args:
        loss: a ``ContrastiveLoss``, ``TripletMarginLoss`` or ``MultiSimilarityLoss`` instance.
        gamma, delta, negative, augmentation, scope, num_samples: see ``AdaptiveThresholds``
            (ignored when ``thresholds`` is given).
        views, bank_view, bank_samples_per_class, memory_statistics, refresh_every: see
            ``AdaptiveThresholds`` (ignored when ``thresholds`` is given).
        thresholds: a ready ``AdaptiveThresholds`` module.
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        gamma: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "min",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        thresholds: AdaptiveThresholds | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
    ):
        if not isinstance(loss, SUPPORTED):
            raise TypeError(
                "loss must be a ContrastiveLoss, TripletMarginLoss or MultiSimilarityLoss "
                f"instance, got {type(loss).__name__}"
            )
        if not loss.distance.is_inverted:
            raise ValueError(
                "the wrapped loss's distance must be a similarity (thresholds are similarities), "
                f"got {type(loss.distance).__name__}; use PoincareSimilarity or CosineSimilarity"
            )
        super().__init__(distance=loss.distance)
        self.loss = loss
        self.thresholds = thresholds or AdaptiveThresholds(
            gamma, delta, negative, augmentation, scope, num_samples, views, bank_view,
            bank_samples_per_class, memory_statistics, refresh_every,
        )

    def set_batch_info(self, sample_indices=None, instance_ids=None) -> None:
        """Dataset indices / instance ids of the next batch (see ``AdaptiveThresholds``)."""
        self.thresholds.set_batch_info(sample_indices, instance_ids)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if ref_emb is not None:
            raise ValueError(f"{type(self).__name__} does not support ref_emb")
        c_f.labels_required(labels)
        labels = c_f.to_device(labels, embeddings)
        inner = self.loss
        mat = inner.distance(embeddings)  # computed once, shared with the wrapped loss
        t = self.thresholds(inner.distance, embeddings, labels, sim=mat).thresholds
        offset = t - self.thresholds.gamma
        if isinstance(inner, TripletMarginLoss):
            names = ("margin",)
            a, p, n = lmu.convert_to_triplets(
                indices_tuple, labels, t_per_anchor=inner.triplets_per_anchor
            )
            indices = (a, p, n)
            new = (inner.margin + offset[a, p] - offset[a, n],)
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels)
            indices = (a1, p, a2, n)
            if isinstance(inner, ContrastiveLoss):
                names = ("pos_margin", "neg_margin")
                new = (inner.pos_margin + offset[a1, p], inner.neg_margin + offset[a2, n])
            else:
                names = ("base",)
                new = (inner.base + offset,)
        names, new = names + ("distance",), new + (_Precomputed(inner.distance, mat),)
        old = tuple(getattr(inner, k) for k in names)
        try:
            for k, v in zip(names, new, strict=True):
                setattr(inner, k, v)
            return inner(embeddings, labels, indices)
        finally:
            for k, v in zip(names, old, strict=True):
                setattr(inner, k, v)


class _Precomputed(torch.nn.Module):
    """Stands in for a distance for one call: returns a matrix already computed on the same
    embeddings, and forwards the orientation helpers to the real distance."""

    def __init__(self, distance, mat: torch.Tensor):
        super().__init__()
        self.base, self.mat = distance, mat
        self.is_inverted = distance.is_inverted

    def forward(self, query_emb, ref_emb=None):
        return self.mat

    def margin(self, x, y):
        return self.base.margin(x, y)

    def smallest_dist(self, *args, **kwargs):
        return self.base.smallest_dist(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        return self.base.largest_dist(*args, **kwargs)


def two_view_batch_getter(*receivers, layout: str = "two_stream") -> Callable:
    """A ``data_and_label_getter`` for PML trainers over ``TwoViewDataset`` batches.

    Batches of ``(weak_view, strong_view, label, index)`` items are turned into what the trainer
    expects, and the dataset indices are handed to every receiver (an AHSML loss or miner) through
    ``receiver.set_batch_info(sample_indices=index)`` before the trainer calls it.

    Args:
        *receivers: objects with ``set_batch_info`` (``MultiSimilarityStarLoss``,
            ``AdaptiveThresholdLoss``, ``NoiseAwarePairMiner``).
        layout: ``"two_stream"`` returns ``(weak, strong, labels)`` for ``TwoStreamMetricLoss``
            (the loss then receives ``[weak; strong]`` with labels doubled); ``"concat"`` returns
            ``(cat([weak, strong]), cat([labels, labels]))`` for ``MetricLossOnly``.

    Without a miner, ``TwoStreamMetricLoss`` hands the loss its cross-view triplets (view-1
    anchors, view-2 partners), which then restrict the pairs; ``MetricLossOnly`` with
    ``layout="concat"`` (or a miner) uses every pair of the 2B rows.
    """
    if layout not in ("two_stream", "concat"):
        raise ValueError(f"layout must be 'two_stream' or 'concat', got {layout!r}")

    def getter(batch):
        if len(batch) != 4:
            raise ValueError(
                f"expected (weak_view, strong_view, label, index) batches, got {len(batch)} fields"
            )
        weak, strong, labels, index = batch
        for r in receivers:
            r.set_batch_info(sample_indices=index)
        if layout == "two_stream":
            return weak, strong, labels
        return torch.cat([weak, strong]), torch.cat([labels, labels])

    return getter
