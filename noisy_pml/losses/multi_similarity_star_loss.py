"""MS*: Multi-Similarity with AHSML's per-pair thresholds and augmentation pairs."""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..distances import PoincareSimilarity
from ..utils.class_divergence import AdaptiveThresholds


class MultiSimilarityStarLoss(BaseMetricLossFunction):
    r"""AHSML's three-term Multi-Similarity loss (Yan et al., IEEE TIP 2023).

    For anchor $i$ of a batch of ``N = V * B`` embeddings (V views of B images), with the
    masks ``A`` (other views of the same image), ``P`` (same label, other image), ``N`` (other
    label) and the per-pair thresholds $T$ of
    [`AdaptiveThresholds`][noisy_pml.utils.class_divergence.AdaptiveThresholds] (no gradient):

    $$
    \ell_i = \frac{1}{\alpha}\log\Big(1 + \sum_{j \in A_i} e^{-\alpha(s_{ij} - T_{ij})}\Big)
    + \frac{1}{\alpha}\log\Big(1 + \sum_{j \in P_i} e^{-\alpha(s_{ij} - T_{ij})}\Big)
    + \frac{1}{\beta}\log\Big(1 + \sum_{j \in N_i} e^{\beta(s_{ij} - T_{ij})}\Big)
    $$

    averaged over anchors (``MeanReducer``, as PML's ``MultiSimilarityLoss``). With
    ``delta=0`` and one view it equals ``MultiSimilarityLoss(alpha, beta, base)``.

    Args:
        alpha, beta: MS scales $\rho = 2$, $\sigma = 50$ (PML defaults).
        base: the base threshold $\gamma$ (0.5), in the similarity's units.
        delta, negative, augmentation, scope, num_samples: see ``AdaptiveThresholds``
            (ignored when ``thresholds`` is given).
        views, bank_view, bank_samples_per_class, memory_statistics, refresh_every: see
            ``AdaptiveThresholds`` (ignored when ``thresholds`` is given).
        mining_epsilon: (R) MS hard-pair mining on label pairs: keep a negative if
            $s_{in} > \min_{P_i} s - \epsilon$, a positive if
            $s_{ip} < \max_{N_i} s + \epsilon$; ``None`` (default) disables it.
        thresholds: a ready ``AdaptiveThresholds`` module.
        distance: a similarity (``is_inverted``); default ``PoincareSimilarity(c=1)``.
            ``CosineSimilarity()`` is the Euclidean ablation ("hyperbolic off").

    Dataset indices for ``scope="memory"`` arrive through [`set_batch_info`][] (see
    ``noisy_pml.losses.two_view_batch_getter``). ``indices_tuple`` (a miner's pairs or PML's
    TwoStreamMetricLoss triplets) restricts the pairs; ``ref_emb`` is not supported.
    """

    def __init__(
        self,
        alpha: float = 2,
        beta: float = 50,
        base: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "min",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        mining_epsilon: float | None = None,
        thresholds: AdaptiveThresholds | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.base = alpha, beta, base
        self.mining_epsilon = mining_epsilon
        self.thresholds = thresholds or AdaptiveThresholds(
            base, delta, negative, augmentation, scope, num_samples, views, bank_view,
            bank_samples_per_class, memory_statistics, refresh_every,
        )
        self.add_to_recordable_attributes(
            list_of_names=["alpha", "beta", "base"], is_stat=False
        )

    def set_batch_info(self, sample_indices=None, instance_ids=None) -> None:
        """Dataset indices / instance ids of the next batch (see ``AdaptiveThresholds``)."""
        self.thresholds.set_batch_info(sample_indices, instance_ids)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if ref_emb is not embeddings:
            raise ValueError(f"{type(self).__name__} does not support ref_emb")
        c_f.labels_required(labels)
        mat = self.distance(embeddings)
        res = self.thresholds(self.distance, embeddings, labels, sim=mat)
        aug, pos, neg = res.aug_mask, res.pos_mask, res.neg_mask
        if indices_tuple is not None:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels)
            given = torch.zeros_like(aug)
            given[a1, p] = True
            given[a2, n] = True
            aug, pos, neg = aug & given, pos & given, neg & given
        if self.mining_epsilon is not None:
            pos, neg = self._mine(mat.detach(), pos, neg)
        t = res.thresholds
        pos_exp = self.alpha * self.distance.margin(mat, t)  # -alpha (s_ij - T_ij)
        neg_exp = self.beta * self.distance.margin(t, mat)  # beta (s_ij - T_ij)
        rows, cols = aug.nonzero(as_tuple=True)  # few per row: a sparse log(1 + sum exp)
        aug_loss = _log1p_sum_exp(pos_exp[rows, cols], rows, len(mat)) / self.alpha
        pos_loss = lmu.logsumexp(pos_exp, keep_mask=pos, add_one=True) / self.alpha
        neg_loss = lmu.logsumexp(neg_exp, keep_mask=neg, add_one=True) / self.beta
        return {
            "loss": {
                "losses": aug_loss + (pos_loss + neg_loss).squeeze(1),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def _mine(self, mat, pos, neg):
        # MS mining in "more similar" orientation (works for distances too via margin signs)
        sim = mat if self.distance.is_inverted else -mat
        inf = torch.finfo(sim.dtype).max
        min_pos = torch.where(pos, sim, torch.full_like(sim, inf)).amin(1, keepdim=True)
        max_neg = torch.where(neg, sim, torch.full_like(sim, -inf)).amax(1, keepdim=True)
        eps = self.mining_epsilon
        return pos & (sim < max_neg + eps), neg & (sim > min_pos - eps)

    def get_default_distance(self):
        return PoincareSimilarity(c=1.0)


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
