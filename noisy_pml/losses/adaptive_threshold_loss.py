"""AHSML's adaptive per-pair thresholds for any pair-based PML loss."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import (
    BaseMetricLossFunction,
    ContrastiveLoss,
    MultiSimilarityLoss,
    TripletMarginLoss,
)
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.ahsml import (
    COLLAPSE_STATISTICS,
    AdaptiveThresholds,
    collapse_statistics,
    from_cosine_units,
)
from ..utils.checks import (
    check_finite,
    check_float_tensor,
    check_labels,
    check_ndim,
    check_positive,
)

SUPPORTED = (ContrastiveLoss, TripletMarginLoss, MultiSimilarityLoss)


class AdaptiveThresholdLoss(BaseMetricLossFunction):
    r"""Wrap a PML pair loss so its fixed margins become AHSML's per-pair thresholds.

    Yan et al., "Adaptive Hierarchical Similarity Metric Learning with Noisy Labels", TIP 2023:
    the adaptive strategy "extends to any pair-based metric loss". (R) Each margin of the wrapped
    loss is shifted on every pair by its threshold's offset from $\gamma$
    ($T_{ij} - \gamma$, $T$ from `noisy_pml.utils.ahsml.AdaptiveThresholds`, no gradient), so
    $T = \gamma$ gives back the wrapped loss exactly; the views of one image ($A$) are
    positives with the augmentation threshold $M_a$, other same-label pairs get $M_p$,
    different-label pairs $M_n$:

    - `ContrastiveLoss`: $[m_{pos} + T_{ap} - \gamma - s_{ap}]_+$ and
      $[s_{an} - (m_{neg} + T_{an} - \gamma)]_+$ (similarities).
    - `TripletMarginLoss`: $[s_{an} - s_{ap} + m + (T_{ap} - \gamma) - (T_{an} - \gamma)]_+$.
    - `MultiSimilarityLoss`: `base` becomes the matrix $b + T_{ij} - \gamma$.

    The augmentation pairs enter only once the consistency warm-up is over and, with
    `consistency_hinge`, only while below $M_a$ (pairs and triplets built on other
    augmentation pairs are dropped), as in `MultiSimilarityStarLoss`.

    Units: the offsets $T_{ij} - \gamma$ are taken in the wrapped loss's similarity units
    (`gamma`, `delta` in cosine units, mapped through $c$ for `PoincareSimilarity`); the
    wrapped loss's own margins are in its similarity's units, as PML defines them.

    The wrapped loss stays a genuine PML class (its reducer, regularisers and records are used);
    its tensor margins are aligned with the explicit indices this wrapper passes to it and reset
    afterwards. The loss's distance must be a similarity (`CosineSimilarity`, PML's default
    for these losses' AHSML use, or `PoincareSimilarity`). Collapse signals as in
    `MultiSimilarityStarLoss` (attributes set at every call, recordable stats).

    Args:
        loss: a `ContrastiveLoss`, `TripletMarginLoss` or `MultiSimilarityLoss` instance.
        gamma, delta, negative, augmentation, scope, num_samples: see `AdaptiveThresholds`.
        views, bank_view, bank_samples_per_class, memory_statistics: see `AdaptiveThresholds`.
        refresh_every, consistency, consistency_warmup, normalization: see
            `AdaptiveThresholds` (all these are ignored when `thresholds` is given).
        thresholds: a ready `AdaptiveThresholds` module.
        consistency_hinge: (R) keep only augmentation pairs below $M_a$ (default True).
        collect_stats: register the collapse signals as PML recordable stats (PML's default).

    Raises:
        TypeError: an unsupported wrapped loss.
        ValueError: a wrapped loss whose distance is not a similarity, or a wrapped
            `MultiSimilarityLoss` with `alpha <= 0` or `beta <= 0`.
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        gamma: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "class",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        thresholds: AdaptiveThresholds | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
        consistency: bool = True,
        consistency_warmup: float | None = None,
        normalization: str = "batch",
        consistency_hinge: bool = True,
        collect_stats: bool | None = None,
    ):
        if not isinstance(loss, SUPPORTED):
            raise TypeError(
                "loss must be a ContrastiveLoss, TripletMarginLoss or MultiSimilarityLoss "
                f"instance, got {type(loss).__name__}"
            )
        if not loss.distance.is_inverted:
            raise ValueError(
                "the wrapped loss's distance must be a similarity (thresholds are similarities), "
                f"got {type(loss.distance).__name__}; use CosineSimilarity or PoincareSimilarity"
            )
        if isinstance(loss, MultiSimilarityLoss):
            for name in ("alpha", "beta"):
                check_positive(f"the wrapped MultiSimilarityLoss's {name}", getattr(loss, name))
        super().__init__(distance=loss.distance, collect_stats=collect_stats)
        self.loss = loss
        self.consistency_hinge = bool(consistency_hinge)
        self.thresholds = thresholds or AdaptiveThresholds(
            gamma=gamma, delta=delta, negative=negative, augmentation=augmentation, scope=scope,
            num_samples=num_samples, views=views, bank_view=bank_view,
            bank_samples_per_class=bank_samples_per_class, memory_statistics=memory_statistics,
            refresh_every=refresh_every, consistency=consistency,
            consistency_warmup=consistency_warmup, normalization=normalization,
        )
        self.add_to_recordable_attributes(list_of_names=list(COLLAPSE_STATISTICS), is_stat=True)
        for name in COLLAPSE_STATISTICS:
            setattr(self, name, 0.0)

    def set_batch_info(
        self, indices=None, instance_ids=None, confidences=None, sample_indices=None
    ) -> None:
        """Dataset indices / instance ids of the next batch (see
        `AdaptiveThresholds.set_batch_info`; `sample_indices=` is a deprecated alias)."""
        self.thresholds.set_batch_info(indices, instance_ids, confidences, sample_indices)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if ref_emb is not None:
            raise ValueError(f"{type(self).__name__} does not support ref_emb")
        c_f.labels_required(labels)
        check_float_tensor("embeddings", embeddings)
        check_ndim("embeddings", embeddings, 2)
        check_finite("embeddings", embeddings)
        check_labels("labels", labels, length=len(embeddings))
        labels = c_f.to_device(labels, embeddings)
        inner = self.loss
        if len(embeddings) == 0:
            return inner(embeddings, labels)  # PML's zero loss (with a gradient)
        mat = inner.distance(embeddings)  # computed once, shared with the wrapped loss
        res = self.thresholds(inner.distance, embeddings, labels, sim=mat, validated=True)
        t = res.thresholds
        active = res.active_augmentation(mat, self.consistency_hinge)
        idle = res.aug_mask & ~active | _same_instance_excluded(res)  # pairs left out
        for name, value in collapse_statistics(embeddings, mat, res, active).items():
            setattr(self, name, value)
        offset = t - from_cosine_units(inner.distance, torch.tensor(
            self.thresholds.gamma, dtype=t.dtype, device=t.device))
        if isinstance(inner, TripletMarginLoss):
            names = ("margin",)
            a, p, n = lmu.convert_to_triplets(
                indices_tuple, labels, t_per_anchor=inner.triplets_per_anchor
            )
            keep = ~idle[a, p]
            a, p, n = a[keep], p[keep], n[keep]
            indices = (a, p, n)
            new = (inner.margin + offset[a, p] - offset[a, n],)
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels)
            keep = ~idle[a1, p]
            a1, p = a1[keep], p[keep]
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


def _same_instance_excluded(res) -> torch.Tensor:
    """Rows of one image that are in no mask (consistency off): never pairs of the loss."""
    same = res.instance_ids[:, None] == res.instance_ids[None, :]
    eye = torch.eye(len(same), dtype=torch.bool, device=same.device)
    return same & ~eye & ~res.aug_mask & ~res.pos_mask & ~res.neg_mask


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
