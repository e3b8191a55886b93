r"""AHSML's adaptive per-pair thresholds (class-wise divergence and sample-wise consistency).

Yan, Luo, Deng, Huang, "Adaptive Hierarchical Similarity Metric Learning with Noisy Labels",
IEEE TIP 32:1245-1256, 2023 (arXiv:2111.00006). The full text was not available; the formulas
follow a secondary summary and every reconstructed choice is marked (R) and configurable.

Pair masks of a batch of $N = V B$ rows: $A$ (same instance, other row: augmentation pairs),
$P$ (same label, other instance), $N$ (other label). With the class statistics $S_{aa}$,
$S_{ab}$ of `statistics` (detached) mapped onto $[0, \delta]$ by min-max ($\hat S$):

$$
M_p(a) = \gamma + \hat S_{aa}, \qquad
M_n(a, b) = \gamma - \hat S_{ab}\ \text{(literal)}\ \text{or}\
\gamma - (\delta - \hat S_{ab})\ \text{("divergence")}, \qquad
M_a(a) = S_{aa}\ \text{("class")}\ \text{or}\ \min / \max_{(i,j) \in P,\ i \in a} s_{ij}.
$$

The threshold matrix $T$ takes $M_a$ on $A$, $M_p$ on $P$ and $M_n$ on $N$.

Units (spec A7): $\gamma$ and $\delta$ are cosine units. With `CosineSimilarity` (the losses'
default) they are used as they are; with `PoincareSimilarity(c)` each threshold is mapped
through the curvature by `PoincareSimilarity.from_cosine` (the gyro-cosine of two points of the
authors' head at that cosine), so $\gamma = 0.5$ always asks for cosine 0.5. The class
statistics are those of the loss's similarity (Poincare geometry where the loss is
hyperbolic); they enter $M_p, M_n$ only through the unit-free min-max offsets, and
$M_a = S_{aa}$ is already in the loss's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_metric_learning.distances import CosineSimilarity

from ..checks import check_finite, check_labels, check_ndim, check_rate, resolve_alias
from .memory_bank import EmbeddingMemoryBank
from .statistics import (
    class_pair_means,
    cosine_statistics_from_sums,
    instance_ids_from_views,
    minmax_to_range,
    pair_masks,
)

__all__ = [
    "COLLAPSE_STATISTICS",
    "AdaptiveThresholds",
    "ThresholdResult",
    "collapse_statistics",
    "from_cosine_units",
    "to_cosine_units",
]

NEGATIVE_READINGS = ("literal", "divergence")
AUGMENTATION_READINGS = ("class", "min", "max")
SCOPES = ("memory", "batch")
NORMALIZATIONS = ("batch", "bank")
MEMORY_STATISTICS = ("incremental", "direct")


def from_cosine_units(distance, value):
    """A threshold given in cosine units, in the units of `distance`'s similarity
    (`distance.from_cosine` when it has one, e.g. `PoincareSimilarity`; unchanged otherwise)."""
    convert = getattr(distance, "from_cosine", None)
    return convert(value) if convert is not None else value


def to_cosine_units(distance, sim: torch.Tensor) -> torch.Tensor:
    """Similarities of `distance` in cosine units (inverse of `from_cosine_units`)."""
    convert = getattr(distance, "to_cosine", None)
    return convert(sim) if convert is not None else sim


@dataclass
class ThresholdResult:
    """Per-pair thresholds `T` (N x N, no grad), the pair masks they were built on and whether
    the consistency (augmentation-pair) term is on for this batch."""

    thresholds: torch.Tensor
    aug_mask: torch.Tensor
    pos_mask: torch.Tensor
    neg_mask: torch.Tensor
    instance_ids: torch.Tensor
    consistency_on: bool = True

    def active_augmentation(self, sim: torch.Tensor, hinge: bool) -> torch.Tensor:
        """The augmentation pairs the consistency term pulls: none before the warm-up ends or
        with consistency off; with `hinge`, only pairs still below their threshold
        ($s_{ij} < M_a$), so the pull stops once two views agree that much."""
        if not self.consistency_on:
            return torch.zeros_like(self.aug_mask)
        if hinge:
            return self.aug_mask & (sim.detach() < self.thresholds)
        return self.aug_mask


COLLAPSE_STATISTICS = (
    "mean_negative_similarity",
    "mean_positive_similarity",
    "mean_augmentation_similarity",
    "embedding_spread",
    "consistency_active_fraction",
)


@torch.no_grad()
def collapse_statistics(
    embeddings: torch.Tensor, sim: torch.Tensor, res: ThresholdResult, active: torch.Tensor
) -> dict[str, float]:
    r"""Signals of an embedding collapse for one batch (`COLLAPSE_STATISTICS`, floats; NaN
    where a mask is empty): the mean similarity of negatives, positives and augmentation pairs
    (loss units), the spread $1 - \|\bar u\|^2$ of the L2-normalised embeddings $u_i$ (near 1
    for directions spread evenly, 0 when every embedding points the same way) and the share of
    augmentation pairs the consistency term pulls (`active`, 0 during the warm-up)."""

    def masked_mean(mask):
        count = int(mask.sum())
        return float(torch.where(mask, sim, 0).sum()) / count if count else float("nan")

    u = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    n_aug = int(res.aug_mask.sum())
    return {
        "mean_negative_similarity": masked_mean(res.neg_mask),
        "mean_positive_similarity": masked_mean(res.pos_mask),
        "mean_augmentation_similarity": masked_mean(res.aug_mask),
        "embedding_spread": float(1 - u.mean(0).pow(2).sum()) if len(u) else float("nan"),
        "consistency_active_fraction": int(active.sum()) / n_aug if n_aug else 0.0,
    }


class AdaptiveThresholds(torch.nn.Module):
    r"""AHSML's adaptive per-pair thresholds (formulas in the module docstring).

    Args:
        gamma: base threshold $\gamma$, cosine units (0.5: the paper's value and PML's MS base;
            mapped through the curvature for `PoincareSimilarity`).
        delta: range $\delta$ of the normalised class statistics, cosine units (0.2, paper).
            `delta=0` gives $T = \gamma$ on every label pair.
        negative: (R) `"literal"` $M_n = \gamma - \hat S_{ab}$ (similar classes pushed
            harder; chosen: it beat `"divergence"` by 0.3-1.8 R@1 in the CUB and Cars196
            ablations of `benchmarks/results/{cub,cars196}/results.md`) or `"divergence"`
            $M_n = \gamma - (\delta - \hat S_{ab})$.
        augmentation: (R) the augmentation threshold $M_a$. `"class"` (default): $S_{aa}$, the
            class's mean similarity of distinct members from the scope's statistics (the memory
            bank in memory scope): two views need only agree as well as two typical members of
            their class, a target that does not rise with the views' own agreement. `"min"`
            (the literal reading) / `"max"`: the lowest / highest same-class similarity of the
            current batch; as positives tighten, `"min"` rises and with it the pull (the
            collapse of issue #10: augmentation pairs at 0.978, negatives at 0.924 on Cars196).
            A class without the statistic falls back to $\gamma$.
        scope: (R) `"memory"` (class statistics over the latest embedding of every training
            sample, which is what resists noise; needs `num_samples` and the dataset indices)
            or `"batch"` (the current batch only, view pairs of one image excluded).
        num_samples: training-set size, required for `scope="memory"` and for a warm-up.
        views: (R) number of stacked views when no instance ids are given: row $i$ belongs to
            image $i \bmod (N / V)$ (PML's TwoStreamMetricLoss gives `[view1; view2]`).
        bank_view: which view's embedding the memory bank stores (0 = the first/weak view).
        bank_samples_per_class: (R) estimate non-cosine memory statistics from at most this
            many random bank members per class (`None`: every member, exact); implies
            `memory_statistics="direct"`. Cosine statistics are exact closed forms from the
            bank's class sums and ignore it.
        memory_statistics: how `scope="memory"` computes the statistics of a non-cosine
            similarity (both exact): `"incremental"` (default unless `bank_samples_per_class`)
            keeps the class-pair sums of the whole bank and updates them with the rows the batch
            rewrote, $O(B N D)$ per step; `"direct"` compares all bank members of the batch's
            classes at every step. The cosine statistics cost $O(B D + K^2 D)$ either way.
        refresh_every: (R) with `"incremental"`, bring the cached statistics up to date every
            this many calls (1: every step, exact).
        consistency: include the augmentation pairs $A$ at all (`False`: the views of one image
            are neither augmentation pairs nor label positives; the "consistency off"
            ablation).
        normalization: (R) the classes over which the min-max of $S$ is taken: `"batch"` (the
            batch's classes, the summary's reading; it stretches whatever spread a batch's
            classes have onto the whole $[0, \delta]$) or `"bank"` (every class in the memory
            bank, so $\hat S$ of a class pair does not depend on which classes share its
            batch; memory scope, cosine or `"incremental"` statistics). Not yet measured.
        consistency_warmup: (R) epochs (training images seen / `num_samples`) before the
            consistency term switches on, so class statistics and embeddings settle first.
            `None` (default): 1 epoch when `num_samples` is known, else 0. Counted in training
            mode only, and saved with the state dict.

    Raises:
        ValueError: an argument outside its range or set (named in the message).
    """

    def __init__(
        self,
        gamma: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "class",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
        consistency: bool = True,
        consistency_warmup: float | None = None,
        normalization: str = "batch",
    ):
        super().__init__()
        if bank_samples_per_class is not None and bank_samples_per_class < 2:
            raise ValueError(
                f"bank_samples_per_class must be None or >= 2, got {bank_samples_per_class}"
            )
        if memory_statistics is None:
            memory_statistics = "direct" if bank_samples_per_class is not None else "incremental"
        if memory_statistics not in MEMORY_STATISTICS:
            raise ValueError(
                f"memory_statistics must be one of {MEMORY_STATISTICS}, got {memory_statistics!r}"
            )
        if memory_statistics == "incremental" and bank_samples_per_class is not None:
            raise ValueError(
                "bank_samples_per_class subsamples the bank at every step, which needs "
                "memory_statistics='direct'; got memory_statistics='incremental'"
            )
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or (
            refresh_every < 1
        ):
            raise ValueError(f"refresh_every must be an integer >= 1, got {refresh_every!r}")
        if not isinstance(gamma, int | float) or not -1 <= gamma <= 1:
            raise ValueError(f"gamma must be a number in [-1, 1] (cosine units), got {gamma!r}")
        check_rate("delta", delta, allow_one=True)
        for name, value, allowed in (
            ("negative", negative, NEGATIVE_READINGS),
            ("augmentation", augmentation, AUGMENTATION_READINGS),
            ("scope", scope, SCOPES),
            ("normalization", normalization, NORMALIZATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if num_samples is not None and (
            isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1
        ):
            raise ValueError(f"num_samples must be None or an integer >= 1, got {num_samples!r}")
        if normalization == "bank" and scope != "memory":
            raise ValueError(
                f"normalization='bank' needs scope='memory' (a memory bank), got scope={scope!r}"
            )
        if scope == "memory" and num_samples is None:
            raise ValueError(
                "scope='memory' needs num_samples (the training-set size) for the memory bank; "
                "pass num_samples=len(train_dataset) or use scope='batch'"
            )
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"views must be an integer >= 1, got {views!r}")
        if not 0 <= bank_view < views:
            raise ValueError(f"bank_view must lie in 0..{views - 1}, got {bank_view}")
        if consistency_warmup is None:
            consistency_warmup = 1.0 if num_samples is not None else 0.0
        if not isinstance(consistency_warmup, int | float) or not consistency_warmup >= 0:
            raise ValueError(
                f"consistency_warmup must be a number of epochs >= 0, got {consistency_warmup!r}"
            )
        if consistency_warmup > 0 and num_samples is None:
            raise ValueError(
                f"consistency_warmup={consistency_warmup} epochs needs num_samples (the "
                "training-set size) to count epochs; pass num_samples or consistency_warmup=0"
            )
        self.gamma, self.delta = float(gamma), float(delta)
        self.negative, self.augmentation, self.scope = negative, augmentation, scope
        self.normalization = normalization
        self.num_samples = None if num_samples is None else int(num_samples)
        self.views, self.bank_view = int(views), int(bank_view)
        self.bank_samples_per_class = bank_samples_per_class
        self.memory_statistics, self.refresh_every = memory_statistics, refresh_every
        self.consistency, self.consistency_warmup = bool(consistency), float(consistency_warmup)
        self.bank = (
            EmbeddingMemoryBank(num_samples, track_changes=memory_statistics == "incremental")
            if scope == "memory"
            else None
        )
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_calls", torch.zeros((), dtype=torch.long))
        self._pending: dict[str, torch.Tensor | None] = {}

    def set_batch_info(
        self,
        indices: torch.Tensor | None = None,
        instance_ids: torch.Tensor | None = None,
        confidences: torch.Tensor | None = None,
        sample_indices: torch.Tensor | None = None,
    ) -> None:
        """Per-sample side information for the next call (consumed by it).

        Args:
            indices: dataset indices, one per image (length N / views) or one per row.
            instance_ids: explicit instance ids, one per row (rows of one image share one).
            confidences: accepted for the library-wide convention; AHSML does not use them.
            sample_indices: deprecated alias of `indices`.

        Raises:
            ValueError: both `indices` and `sample_indices` given.
        """
        indices = resolve_alias("indices", indices, "sample_indices", sample_indices)
        self._pending = {"indices": indices, "instance_ids": instance_ids}

    @property
    def consistency_on(self) -> bool:
        """Whether the augmentation pairs count now (consistency on and the warm-up over)."""
        if not self.consistency:
            return False
        if self.consistency_warmup == 0:
            return True
        return int(self.images_seen) >= self.consistency_warmup * self.num_samples

    def resolve_batch(self, labels: torch.Tensor):
        """Instance ids and per-row dataset indices of the current batch (consumes the side
        channel); checks that the rows of one image carry one label."""
        pending, self._pending = self._pending, {}
        n, device = len(labels), labels.device
        inst = pending.get("instance_ids")
        if inst is None:
            inst = instance_ids_from_views(n, self.views, device)
        else:
            inst = torch.as_tensor(inst, device=device)
            check_labels("instance_ids", inst, length=n)
        inst_unique, inst = torch.unique(inst, return_inverse=True)
        first = torch.full((len(inst_unique),), -1, dtype=labels.dtype, device=device)
        first[inst] = labels
        if (first[inst] != labels).any():
            raise ValueError(
                "views of one image carry different labels: the batch is not stacked as "
                f"[view_1; ...; view_{self.views}] of the same images (check views= or pass "
                "instance_ids via set_batch_info)"
            )
        idx = pending.get("indices")
        if idx is not None:
            idx = torch.as_tensor(idx, device=device)
            idx = idx.flatten()
            check_labels("indices", idx, num_classes=self.num_samples)
            idx = idx.long()
            if len(idx) == len(inst_unique):
                idx = idx[inst]
            elif len(idx) != n:
                raise ValueError(
                    f"indices has {len(idx)} entries, expected one per image "
                    f"({len(inst_unique)}) or one per row ({n})"
                )
        return inst, idx

    @torch.no_grad()
    def class_statistics(
        self, distance, embeddings, labels, classes, instance_ids, sample_indices, sim
    ):
        """`(S_aa, S_ab, reference)` for `classes` from the configured scope, in the units of
        `distance` (`sim`: the batch's similarity matrix); `reference` is `None` or, with
        `normalization="bank"`, `(S_aa, S_ab)` of every class in the bank (for the min-max)."""
        if self.scope == "batch":
            same = instance_ids[:, None] == instance_ids[None, :]
            intra, inter, _ = class_pair_means(sim, labels, classes, exclude=same)
            return intra, inter, None
        cosine = isinstance(distance, CosineSimilarity)
        if self.normalization == "bank" and not cosine and self.memory_statistics == "direct":
            raise ValueError(
                "normalization='bank' with a non-cosine similarity needs "
                "memory_statistics='incremental' (statistics of every bank class)"
            )
        # the bank stores one row per image: its bank_view-th row (view order within the batch)
        same = instance_ids[:, None] == instance_ids[None, :]
        ordinal = torch.tril(same, diagonal=-1).sum(1)
        keep = ordinal == self.bank_view
        self.bank.update(embeddings[keep], labels[keep], sample_indices[keep], validated=True)
        wanted = classes
        if self.normalization == "bank":
            wanted = torch.unique(torch.cat([classes, self.bank.labels[self.bank.filled]]))
        if cosine:
            sums, n = self.bank.class_sums_of(wanted)
            intra, inter, _ = cosine_statistics_from_sums(sums, n)
        elif self.memory_statistics == "direct":
            emb, lab = self.bank.members(classes, self.bank_samples_per_class)
            intra, inter, _ = class_pair_means(distance(emb), lab, classes)
        else:
            due = int(self.memory_calls) % self.refresh_every == 0
            self.memory_calls += 1
            if due or not self.bank.statistics_cover(classes):
                self.bank.sync_statistics(distance)
            intra, inter, _ = self.bank.pair_statistics(wanted)
        intra, inter = intra.to(sim.dtype), inter.to(sim.dtype)
        if self.normalization == "batch":
            return intra, inter, None
        at = torch.searchsorted(wanted, classes)
        off = ~torch.eye(len(wanted), dtype=torch.bool, device=inter.device)
        return intra[at], inter[at[:, None], at[None, :]], (intra, inter[off])

    @torch.no_grad()
    def forward(
        self,
        distance,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        sim: torch.Tensor | None = None,
        validated: bool = False,
    ) -> ThresholdResult:
        """Threshold matrix for one batch.

        Args:
            distance: the loss's similarity (`is_inverted`).
            embeddings: N x D, finite.
            labels: N non-negative integer class ids.
            sim: optionally `distance(embeddings)` when the caller has it already.
            validated: the caller has already checked `embeddings` (2-D, finite) and `labels`
                (skips the repeated checks; the losses of this package do).

        Raises:
            ValueError, TypeError: a distance that is not a similarity, non-finite embeddings,
                bad labels or indices; nothing (memory bank, warm-up counter) changes then.
        """
        if not getattr(distance, "is_inverted", False):
            raise ValueError(
                "AHSML thresholds live in similarity units: the loss's distance must be a "
                f"similarity (is_inverted=True), got {type(distance).__name__}; use "
                "CosineSimilarity or noisy_pml.distances.PoincareSimilarity (hyperbolic)"
            )
        if not validated:
            check_ndim("embeddings", embeddings, 2)
            check_finite("embeddings", embeddings)
            check_labels("labels", labels, length=len(embeddings))
        if self.scope == "memory" and self._pending.get("indices") is None:
            raise ValueError(
                "scope='memory' needs the dataset index of every sample: call "
                "set_batch_info(indices=...) before each forward (e.g. from the trainer's "
                "data_and_label_getter), or use scope='batch'"
            )
        inst, idx = self.resolve_batch(labels)
        emb = embeddings.detach()
        classes, k = torch.unique(labels, return_inverse=True)
        sim = distance(emb) if sim is None else sim.detach()
        consistency_on = self.consistency_on
        # the memory bank validates its write before it changes; the counter moves after it
        intra, inter, ref = self.class_statistics(distance, emb, labels, classes, inst, idx, sim)
        ref_intra, ref_inter = (None, None) if ref is None else ref
        if self.training and len(inst):
            self.images_seen += int(inst.max()) + 1
        a_mask, p_mask, n_mask = pair_masks(labels, inst)
        if not self.consistency:  # the views of one image are then in no mask at all
            a_mask = torch.zeros_like(a_mask)
        # M_p(a) = gamma + S^_aa (cosine units)
        m_p = self.gamma + minmax_to_range(intra, self.delta, ref_intra)
        # M_n(a, b) = gamma - S^_ab (literal) or gamma - (delta - S^_ab) (divergence)
        off = ~torch.eye(len(classes), dtype=torch.bool, device=emb.device)
        s_ab = torch.zeros_like(inter)
        if off.any():
            s_ab[off] = minmax_to_range(inter[off], self.delta, ref_inter)
        if self.negative == "divergence":
            s_ab = torch.where(off, self.delta - s_ab, s_ab)
        m_n = self.gamma - s_ab
        m_p, m_n = from_cosine_units(distance, m_p), from_cosine_units(distance, m_n)
        gamma = from_cosine_units(distance, torch.tensor(self.gamma, dtype=sim.dtype))
        m_a = self._augmentation_thresholds(sim, p_mask, k, intra, gamma.to(sim.device))
        t = torch.where(a_mask, m_a[k][:, None], torch.where(p_mask, m_p[k][:, None], m_n[k][:, k]))
        return ThresholdResult(
            t.to(embeddings.dtype), a_mask, p_mask, n_mask, inst, consistency_on
        )

    def _augmentation_thresholds(self, sim, p_mask, k, intra, gamma):
        """$M_a$ per class (loss units); `gamma` where a class has no statistic."""
        if self.augmentation == "class":
            out = intra
        else:
            fill = float("inf") if self.augmentation == "min" else float("-inf")
            row = torch.where(p_mask, sim, torch.full_like(sim, fill))
            row = row.amin(1) if self.augmentation == "min" else row.amax(1)
            out = torch.full((len(intra),), fill, dtype=sim.dtype, device=sim.device)
            reduce = "amin" if self.augmentation == "min" else "amax"
            out = out.scatter_reduce(0, k, row, reduce=reduce)
        return torch.where(torch.isfinite(out), out, gamma.to(out.dtype).expand_as(out))
