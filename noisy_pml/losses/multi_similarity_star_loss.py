"""MS*: Multi-Similarity with AHSML's per-pair thresholds and augmentation pairs."""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.ahsml import (
    COLLAPSE_STATISTICS,
    AdaptiveThresholds,
    collapse_statistics,
    to_cosine_units,
)
from ..utils.checks import (
    check_finite,
    check_float_tensor,
    check_labels,
    check_ndim,
    check_positive,
)


class MultiSimilarityStarLoss(BaseMetricLossFunction):
    r"""AHSML's three-term Multi-Similarity loss (Yan et al., IEEE TIP 2023).

    For anchor $i$ of a batch of $N = V B$ embeddings ($V$ views of $B$ images), with the masks
    $A$ (other views of the same image), $P$ (same label, other image), $N$ (other label) and the
    per-pair thresholds $T$ of `noisy_pml.utils.ahsml.AdaptiveThresholds` (no gradient):

    $$
    \ell_i = \frac{1}{\rho}\log\Big(1 + \sum_{j \in A'_i} e^{-\rho(s_{ij} - T_{ij})}\Big)
           + \frac{1}{\alpha}\log\Big(1 + \sum_{j \in P_i} e^{-\alpha(s_{ij} - T_{ij})}\Big)
           + \frac{1}{\beta}\log\Big(1 + \sum_{j \in N_i} e^{\beta(s_{ij} - T_{ij})}\Big)
    $$

    averaged over anchors (`MeanReducer`, as PML's `MultiSimilarityLoss`). The consistency
    term (the first) has its own scale $\rho$ and pulls only $A'_i$: the augmentation pairs once
    the warm-up is over and, with `consistency_hinge`, only those still below their threshold
    $M_a$ ($s_{ij} < T_{ij}$), so its gradient is exactly zero once two views agree that well.
    With `delta=0`, one view and `CosineSimilarity` it equals `MultiSimilarityLoss(alpha, beta,
    base)`.

    Units: `base`, `delta` and `mining_epsilon` are cosine units; the default similarity is
    `CosineSimilarity` (spec A7). With `distance=PoincareSimilarity(c)` the thresholds are
    mapped through $c$ (`PoincareSimilarity.from_cosine`) and mining compares cosines, so no
    constant changes meaning with the curvature.

    Collapse signals, set at every call (registered with PML's `add_to_recordable_attributes`,
    `is_stat=True`, when `collect_stats` is on, so a trainer can record them per epoch):
    `mean_negative_similarity`, `mean_positive_similarity`, `mean_augmentation_similarity`
    (loss units), `embedding_spread` ($1 - \|\bar u\|^2$ of the normalised embeddings) and
    `consistency_active_fraction` (share of augmentation pairs the consistency term pulls).

    Args:
        alpha: positive scale $\alpha$ (2, PML's MS default).
        beta: negative scale $\beta$ (50, PML's MS default).
        base: the base threshold $\gamma$ in cosine units (0.5, the paper's and MS's value).
        delta, negative, augmentation, scope, num_samples: see `AdaptiveThresholds`.
        views, bank_view, bank_samples_per_class, memory_statistics: see `AdaptiveThresholds`.
        refresh_every, consistency, consistency_warmup, normalization: see
            `AdaptiveThresholds` (all these are ignored when `thresholds` is given).
        mining_epsilon: (R) MS hard-pair mining on label pairs, in cosine units: keep a negative
            if $s_{in} > \min_{P_i} s - \epsilon$, a positive if
            $s_{ip} < \max_{N_i} s + \epsilon$; `None` (default) disables it.
        thresholds: a ready `AdaptiveThresholds` module.
        rho: (R) scale $\rho$ of the consistency term (20). Reusing $\alpha = 2$ there
            collapsed the embedding (Cars196, symmetric 30 %, frozen features, 2 seeds: 35.5
            R@1 with $\alpha$, 44.8 with $\rho = 20$, 45.2 with the term off, MS 46.0; issue #10).
            Those numbers predate the hinge: with it, $\rho$ = 10 / 20 / 40 change R@1 by at
            most 0.07 (benchmarks/results/ahsml_v3_*, 3 seeds).
        consistency_hinge: (R) pull only augmentation pairs below $M_a$ (default True).
        distance: a similarity (`is_inverted`); default `CosineSimilarity()` (one view on
            Cars196 at symmetric 30 %: cosine 45.4 R@1, Poincare with cosine-unit constants
            unmapped 41.5 at c = 1, 45.3 at c = 0.3, 46.1 at c = 0.1; issue #10).
            `PoincareSimilarity(c)` is the hyperbolic option.

    Raises:
        ValueError: `alpha`, `beta` or `rho` not finite and > 0, or a negative `mining_epsilon`.

    Dataset indices for `scope="memory"` arrive through `set_batch_info`. `indices_tuple` (a
    miner's pairs or PML's TwoStreamMetricLoss triplets) restricts the pairs; `ref_emb` is not
    supported.
    """

    def __init__(
        self,
        alpha: float = 2,
        beta: float = 50,
        base: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "class",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        mining_epsilon: float | None = None,
        thresholds: AdaptiveThresholds | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
        rho: float = 20,
        consistency: bool = True,
        consistency_warmup: float | None = None,
        normalization: str = "batch",
        consistency_hinge: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("alpha", alpha), ("beta", beta), ("rho", rho)):
            check_positive(name, value)
        if mining_epsilon is not None and not (
            isinstance(mining_epsilon, int | float) and math.isfinite(mining_epsilon)
            and mining_epsilon >= 0
        ):
            raise ValueError(
                f"mining_epsilon must be None or a finite number >= 0, got {mining_epsilon!r}"
            )
        self.alpha, self.beta, self.base, self.rho = float(alpha), float(beta), base, float(rho)
        self.mining_epsilon, self.consistency_hinge = mining_epsilon, bool(consistency_hinge)
        self.thresholds = thresholds or AdaptiveThresholds(
            gamma=base, delta=delta, negative=negative, augmentation=augmentation, scope=scope,
            num_samples=num_samples, views=views, bank_view=bank_view,
            bank_samples_per_class=bank_samples_per_class, memory_statistics=memory_statistics,
            refresh_every=refresh_every, consistency=consistency,
            consistency_warmup=consistency_warmup, normalization=normalization,
        )
        self.add_to_recordable_attributes(
            list_of_names=["alpha", "beta", "base", "rho"], is_stat=False
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

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if ref_emb is not embeddings:
            raise ValueError(f"{type(self).__name__} does not support ref_emb")
        c_f.labels_required(labels)
        check_float_tensor("embeddings", embeddings)
        check_ndim("embeddings", embeddings, 2)
        check_finite("embeddings", embeddings)
        check_labels("labels", labels, length=len(embeddings))
        if len(embeddings) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings)
        res = self.thresholds(self.distance, embeddings, labels, sim=mat, validated=True)
        aug = res.active_augmentation(mat, self.consistency_hinge)
        pos, neg = res.pos_mask, res.neg_mask
        for name, value in collapse_statistics(embeddings, mat, res, aug).items():
            setattr(self, name, value)
        if indices_tuple is not None:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels)
            given = torch.zeros_like(aug)
            given[a1, p] = True
            given[a2, n] = True
            aug, pos, neg = aug & given, pos & given, neg & given
        if self.mining_epsilon is not None:
            pos, neg = self._mine(to_cosine_units(self.distance, mat.detach()), pos, neg)
        t = res.thresholds
        pos_exp = self.alpha * self.distance.margin(mat, t)  # -alpha (s_ij - T_ij)
        neg_exp = self.beta * self.distance.margin(t, mat)  # beta (s_ij - T_ij)
        rows, cols = aug.nonzero(as_tuple=True)  # few per row: a sparse log(1 + sum exp)
        aug_exp = self.rho * self.distance.margin(mat[rows, cols], t[rows, cols])
        aug_loss = _log1p_sum_exp(aug_exp, rows, len(mat)) / self.rho
        pos_loss = lmu.logsumexp(pos_exp, keep_mask=pos, add_one=True) / self.alpha
        neg_loss = lmu.logsumexp(neg_exp, keep_mask=neg, add_one=True) / self.beta
        return {
            "loss": {
                "losses": aug_loss + (pos_loss + neg_loss).squeeze(1),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def _mine(self, cos, pos, neg):
        # MS mining (Wang et al. 2019) on cosines: epsilon is a cosine-unit margin
        inf = torch.finfo(cos.dtype).max
        min_pos = torch.where(pos, cos, torch.full_like(cos, inf)).amin(1, keepdim=True)
        max_neg = torch.where(neg, cos, torch.full_like(cos, -inf)).amax(1, keepdim=True)
        eps = self.mining_epsilon
        return pos & (cos < max_neg + eps), neg & (cos > min_pos - eps)

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()


def _log1p_sum_exp(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    r"""Per row $\log(1 + \sum_{k: rows_k = i} e^{v_k})$ (0 for rows without entries),
    stabilised by the detached row maximum (the value does not depend on it)."""
    out = values.new_zeros(n)
    if len(values) == 0:
        return out
    m = torch.zeros(n, dtype=values.dtype, device=values.device)
    m = m.scatter_reduce(0, rows, values.detach(), reduce="amax", include_self=True)
    total = torch.exp(-m).index_add(0, rows, torch.exp(values - m[rows]))
    return m + torch.log(total)
