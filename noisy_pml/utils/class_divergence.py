r"""AHSML's class-wise divergence and sample-wise consistency as per-pair thresholds.

Yan, Luo, Deng, Huang, "Adaptive Hierarchical Similarity Metric Learning with Noisy Labels",
IEEE TIP 32:1245-1256, 2023 (arXiv:2111.00006). The full text was not available; the formulas
follow a secondary summary and every reconstructed choice is marked (R) and configurable.

A batch holds N = V * B embeddings (V augmented views of B images), their (noisy) labels and the
instance id of each row (rows of one image share it). Pair masks:
``A`` same instance, different row (augmentation pairs); ``P`` same label, different instance;
``N`` different label. With $s$ the loss's similarity (detached), per class ``a``
($n_a$ members) and class pair ``(a, b)``:

$$
S_{aa} = \operatorname{mean}_{i \ne j \in a} s_{ij},\qquad
S_{ab} = \operatorname{mean}_{i \in a, j \in b} s_{ij},\qquad
\hat S = \delta\,\frac{S - \min S}{\max S - \min S} \in [0, \delta]
$$

$$
M_p(a) = \gamma + \hat S_{aa},\qquad
M_n(a, b) = \gamma - \hat S_{ab}\ \text{(literal)}\ \text{or}\
\gamma - (\delta - \hat S_{ab})\ \text{("divergence")},\qquad
M_a(a) = \min_{(i,j) \in P,\ i \in a} s_{ij}\ \text{(or max)}
$$

The threshold matrix ``T`` takes ``M_a`` on ``A``, ``M_p`` on ``P`` and ``M_n`` on ``N``.

Scope (R): ``"batch"`` takes the pairs of the batch (views of one image excluded); ``"memory"``
(default) takes every pair of distinct filled entries of a memory bank holding the latest
embedding of every training sample, after the batch has been written to it. For a non-cosine
similarity the bank keeps exact class-pair sums and updates them with the rewritten rows only
(O(B N D) per step, [`EmbeddingMemoryBank`][]); cosine uses the closed form from class means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_metric_learning.distances import CosineSimilarity

from .checks import check_labels, check_ndim, check_rate

NEGATIVE_READINGS = ("literal", "divergence")
AUGMENTATION_READINGS = ("min", "max")
SCOPES = ("memory", "batch")
MEMORY_STATISTICS = ("incremental", "direct")


def instance_ids_from_views(n: int, views: int, device=None) -> torch.Tensor:
    """Instance ids of a batch stacked as ``[view_1; ...; view_V]`` (PML's TwoStreamMetricLoss
    order): ``arange(n // views)`` repeated ``views`` times."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if n % views:
        raise ValueError(
            f"batch of {n} embeddings cannot be split into views={views} equal blocks "
            "(expected [view_1; ...; view_V] with the same images in each block)"
        )
    return torch.arange(n // views, device=device).repeat(views)


def pair_masks(labels: torch.Tensor, instance_ids: torch.Tensor):
    """Boolean N x N masks ``(A, P, N)``: augmentation pairs (same instance, i != j), label
    positives of different instances, and negatives (different labels)."""
    same_inst = instance_ids[:, None] == instance_ids[None, :]
    same_label = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same_inst & ~eye, same_label & ~same_inst, ~same_label


def class_pair_means(
    sim: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    exclude: torch.Tensor | None = None,
):
    r"""Class statistics of a square similarity matrix over samples with ``labels``.

    Returns ``(intra, inter, n)``: ``intra[k]`` = mean of ``sim`` over distinct pairs inside
    ``classes[k]`` (NaN when fewer than one pair), ``inter[k, l]`` = mean over pairs across
    ``classes[k]`` and ``classes[l]``, ``n[k]`` = member counts. Pairs where ``exclude`` is True
    (e.g. two views of one image) are left out. One-hot matmuls, no loops.
    """
    onehot = (labels[:, None] == classes[None, :]).to(sim.dtype)  # M x K
    valid = ~torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    if exclude is not None:
        valid = valid & ~exclude
    v = valid.to(sim.dtype)
    sums = onehot.T @ (sim * v) @ onehot
    counts = onehot.T @ v @ onehot
    means = sums / counts.clamp_min(1)
    means = means.masked_fill(counts == 0, float("nan"))
    return means.diagonal().clone(), means, onehot.sum(0)


def cosine_class_means(emb: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor):
    r"""Closed form of [`class_pair_means`][] for cosine similarity, from class means of the
    unit vectors $\mu_a$: $S_{ab} = \mu_a\cdot\mu_b$,
    $S_{aa} = (n_a\|\mu_a\|^2 - 1)/(n_a - 1)$. O(M D + K^2 D)."""
    x = torch.nn.functional.normalize(emb, dim=1)
    onehot = (labels[:, None] == classes[None, :]).to(x.dtype)
    n = onehot.sum(0)
    mu = (onehot.T @ x) / n.clamp_min(1)[:, None]
    inter = mu @ mu.T
    intra = (n * inter.diagonal() - 1) / (n - 1)
    intra = intra.masked_fill(n < 2, float("nan"))
    inter = inter.clone()
    inter.diagonal().copy_(intra)  # distinct pairs only, as class_pair_means
    return intra, inter, n


def minmax_to_range(x: torch.Tensor, delta: float) -> torch.Tensor:
    r"""Map the finite entries of ``x`` linearly onto $[0, \delta]$ (min-max); NaN entries
    and a degenerate range (max == min) map to 0."""
    finite = torch.isfinite(x)
    if not finite.any():
        return torch.zeros_like(x)
    lo, hi = x[finite].min(), x[finite].max()
    scaled = delta * (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return torch.where(finite, scaled, torch.zeros_like(x))


_BLOCK_ELEMENTS = 1 << 22  # similarity entries per block (16 MB in float32)


def distance_key(distance) -> tuple:
    """Fingerprint of a distance's class, settings and parameter values; cached bank statistics
    are rebuilt when it changes (e.g. a learnable curvature moved)."""
    stats = set(getattr(distance, "_record_these_stats", ())) | {"training"}
    scalars = tuple(
        sorted(
            (k, v)
            for k, v in vars(distance).items()
            if not k.startswith("_") and k not in stats and isinstance(v, bool | int | float | str)
        )
    )
    tensors = tuple(
        (k, tuple(v.detach().flatten().tolist()) if v.numel() <= 64 else (v.data_ptr(), v._version))
        for k, v in distance.state_dict().items()
    )
    return type(distance), scalars, tensors


def _rowsums(distance, z, x, onehot, self_pairs: bool = False) -> torch.Tensor:
    r"""$\sum_j s(z_i, x_j)\,\text{onehot}_{jc}$ (float64, ``len(z) x C``) in row blocks
    (one similarity matrix and one matmul per block). ``self_pairs``: ``z`` is ``x``, and the
    pairs ``(i, i)`` are left out."""
    out = torch.zeros(len(z), onehot.shape[1], dtype=torch.float64, device=z.device)
    step = max(1, _BLOCK_ELEMENTS // max(1, len(x)))
    for i0 in range(0, len(z), step):
        s = distance(z[i0 : i0 + step], x)
        if self_pairs:
            s[:, i0 : i0 + step].fill_diagonal_(0)
        out[i0 : i0 + step] = (s @ onehot).double()
    return out


class EmbeddingMemoryBank(torch.nn.Module):
    r"""The latest (detached) embedding and label of every training sample, by dataset index.

    Exact class-pair statistics over the whole bank ([`sync_statistics`][],
    [`pair_statistics`][]): the bank caches, for one similarity $s$, the sums
    $\Sigma_{ab} = \sum_{i \ne j,\ y_i = a,\ y_j = b} s(x_i, x_j)$ over the filled entries
    (a C x C float64 matrix over every class in the bank) and the member counts $n_a$;
    $S_{aa} = \Sigma_{aa} / (n_a(n_a - 1))$ and $S_{ab} = \Sigma_{ab} / (n_a n_b)$
    are then the brute-force pair averages over the current bank. With ``track_changes`` a sync
    applies only the rows $R$ written since the previous sync: every changed row's
    contribution is subtracted with its old embedding and label and added back with its new one,

    $$
    \Sigma \mathrel{+}= D(X'_R) - D(X_R),\quad
    D(Z) = Q_Z^\top s(Z, X_U) P_U + \big(Q_Z^\top s(Z, X_U) P_U\big)^\top
    + Q_Z^\top s(Z, Z)_{i \ne j} Q_Z
    $$

    ($U$ the unchanged rows, $P, Q$ one-hot class matrices): one matmul per row
    block, O(|R| N D) time and O(block x N) memory. A full rebuild (all pairs, O(N^2 D / 2))
    runs instead when it is cheaper (more than N/2 rows changed), on the first sync, when the
    similarity's settings or parameter values changed (e.g. a learnable curvature), or when the
    bank was reset, moved or loaded. Without ``track_changes`` every sync is a full rebuild.

    Args:
        num_samples: size of the training set (indices must lie in ``0..num_samples-1``).
        track_changes: record the old value of every row written since the last sync (at most
            one copy per row, and at most ``num_samples / 2`` rows before a rebuild is due).
    """

    def __init__(self, num_samples: int, track_changes: bool = False):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.track_changes = bool(track_changes)
        self.register_buffer("embeddings", torch.zeros(0))
        self.register_buffer("labels", torch.full((self.num_samples,), -1, dtype=torch.long))
        self._cache: tuple | None = None  # (key, classes, sums, counts)
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget the change log: the next sync rebuilds the statistics from scratch."""
        self._rebuild = True
        self._dirty: torch.Tensor | None = None
        self._log: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._logged = 0

    def _load_from_state_dict(self, *args, **kwargs):
        self._invalidate()
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def update(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        check_ndim("embeddings", embeddings, 2)
        n = self.num_samples
        check_labels("sample_indices", indices, num_classes=n, length=len(embeddings))
        check_labels("labels", labels, length=len(embeddings))
        device, dtype = embeddings.device, embeddings.dtype
        if self.embeddings.dim() != 2 or self.embeddings.shape[1] != embeddings.shape[1]:
            self.embeddings = embeddings.new_zeros(n, embeddings.shape[1])
            self.labels = torch.full((n,), -1, dtype=torch.long, device=device)
            self._invalidate()
        if self.embeddings.device != device or self.embeddings.dtype != dtype:
            self._invalidate()
        self.embeddings = self.embeddings.to(device, dtype)
        self.labels = self.labels.to(device)
        indices = indices.to(device).long()
        if self.track_changes and not self._rebuild:
            if self._dirty is None:
                self._dirty = torch.zeros(n, dtype=torch.bool, device=device)
            idx = torch.unique(indices)
            idx = idx[~self._dirty[idx]]  # first write since the last sync: keep the old row
            old_labels = self.labels[idx]
            idx, old_labels = idx[old_labels >= 0], old_labels[old_labels >= 0]
            if len(idx):
                self._log.append((idx, self.embeddings[idx].clone(), old_labels))
                self._logged += len(idx)
            self._dirty[indices] = True
            if self._logged > n // 2:
                self._invalidate()
        self.embeddings[indices] = embeddings.detach()
        self.labels[indices] = labels.to(device)

    def members(self, classes: torch.Tensor, per_class: int | None = None):
        """Embeddings and labels of the filled entries whose label is in ``classes``; with
        ``per_class``, a uniformly random subset of at most that many members per class."""
        keep = torch.isin(self.labels, classes.to(self.labels.device)).nonzero().squeeze(1)
        if per_class is not None:
            keep = keep[torch.randperm(len(keep), device=keep.device)]
            lab = self.labels[keep]
            order = torch.argsort(lab, stable=True)
            keep, lab = keep[order], lab[order]
            rank = torch.arange(len(lab), device=lab.device) - torch.searchsorted(lab, lab)
            keep = keep[rank < per_class]
        return self.embeddings[keep], self.labels[keep]

    def statistics_cover(self, classes: torch.Tensor) -> bool:
        """Whether the cached statistics exist and count every class in ``classes``."""
        if self._cache is None:
            return False
        cached = self._cache[1]
        return bool(torch.isin(classes.to(cached.device), cached).all())

    @torch.no_grad()
    def sync_statistics(self, distance) -> None:
        """Bring the cached class-pair sums up to date with the bank for ``distance`` (a PML
        distance/similarity called as ``distance(query, ref)``), incrementally when possible."""
        key = (distance_key(distance), self.embeddings.dtype, self.embeddings.device,
               tuple(self.embeddings.shape))
        filled = int((self.labels >= 0).sum())
        changed = 0 if self._dirty is None else int(self._dirty.sum())
        if self.embeddings.dim() != 2 or filled == 0:
            empty = torch.zeros(0, dtype=torch.long, device=self.labels.device)
            zeros = torch.zeros(0, 0, dtype=torch.float64, device=self.labels.device)
            self._cache = (key, empty, zeros, zeros.new_zeros(0))
        elif (
            not self.track_changes
            or self._rebuild
            or self._cache is None
            or self._cache[0] != key
            or 2 * (self._logged + changed) > filled
        ):
            self._cache = (key, *self._full_sums(distance))
        elif changed:
            self._cache = (key, *self._incremental_sums(distance))
        self._invalidate()
        self._rebuild = False

    def _full_sums(self, distance):
        """All pairs of distinct filled entries, upper block triangle only (s is symmetric)."""
        rows = (self.labels >= 0).nonzero().squeeze(1)
        x = self.embeddings[rows]
        classes, slot = torch.unique(self.labels[rows], return_inverse=True)
        p = torch.nn.functional.one_hot(slot, len(classes)).to(x.dtype)  # F x C
        sums = torch.zeros(len(classes), len(classes), dtype=torch.float64, device=x.device)
        step = max(1, _BLOCK_ELEMENTS // max(1, len(x)))
        for i0 in range(0, len(x), step):
            i1 = min(i0 + step, len(x))
            s = distance(x[i0:i1], x[i0:])  # block rows against columns i0..F-1
            s[:, : i1 - i0].fill_diagonal_(0)
            q = p[i0:i1].double().T
            sums += q @ (s[:, : i1 - i0] @ p[i0:i1]).double()  # pairs inside the block
            if i1 < len(x):
                across = q @ (s[:, i1 - i0 :] @ p[i1:]).double()  # pairs (block, later rows)
                sums += across + across.T
        return classes, sums, torch.bincount(slot, minlength=len(classes)).double()

    def _incremental_sums(self, distance):
        _, classes, sums, _ = self._cache
        rows = self._dirty.nonzero().squeeze(1)  # changed since the last sync (all filled now)
        if self._log:
            old_idx, old_emb, old_lab = (torch.cat(t) for t in zip(*self._log, strict=True))
        else:
            old_idx = rows[:0]
            old_emb, old_lab = self.embeddings[old_idx], self.labels[old_idx]
        new_emb, new_lab = self.embeddings[rows], self.labels[rows]
        # classes new to the bank get zero rows and columns
        grown = torch.unique(torch.cat([classes, new_lab]))
        if len(grown) > len(classes):
            at = torch.searchsorted(grown, classes)
            wide = sums.new_zeros(len(grown), len(grown))
            wide[at[:, None], at[None, :]] = sums
            classes, sums = grown, wide
        c = len(classes)
        # columns: the whole bank, with unfilled and changed rows out of the one-hot (no gather)
        keep = (self.labels >= 0) & ~self._dirty
        slot_all = torch.searchsorted(classes, self.labels.clamp_min(0)).clamp_max(c - 1)
        p_u = torch.nn.functional.one_hot(slot_all, c).to(self.embeddings.dtype) * keep[:, None]
        z = torch.cat([new_emb, old_emb])  # one row-block pass for the new and the old rows
        rowsums = _rowsums(distance, z, self.embeddings, p_u)
        m = len(new_emb)

        def contribution(z, lab, across):  # D(Z): pairs (Z, U), (U, Z), distinct pairs in Z
            q = torch.nn.functional.one_hot(torch.searchsorted(classes, lab), c)
            across = q.double().T @ across
            inside = q.double().T @ _rowsums(distance, z, z, q.to(z.dtype), self_pairs=True)
            return across + across.T + inside

        sums = (
            sums
            + contribution(new_emb, new_lab, rowsums[:m])
            - contribution(old_emb, old_lab, rowsums[m:])
        )
        slot = torch.searchsorted(classes, self.labels[self.labels >= 0])
        return classes, sums, torch.bincount(slot, minlength=c).double()

    def pair_statistics(self, classes: torch.Tensor):
        """``(intra, inter, n)`` as [`class_pair_means`][] over the whole bank at the last
        [`sync_statistics`][] (float64): ``intra[k]`` = mean similarity of distinct member
        pairs of ``classes[k]`` (NaN with fewer than two members), ``inter[k, l]`` = mean over
        member pairs across ``classes[k]`` and ``classes[l]`` (NaN when one has no member; its
        diagonal holds ``intra``), ``n[k]`` = member counts."""
        if self._cache is None:
            raise RuntimeError("no cached statistics: call sync_statistics(distance) first")
        _, cached, sums, counts = self._cache
        classes = classes.to(cached.device)
        k = len(classes)
        if len(cached) == 0:
            n = torch.zeros(k, dtype=torch.float64, device=cached.device)
        else:
            at = torch.searchsorted(cached, classes).clamp_max(len(cached) - 1)
            present = cached[at] == classes
            n = torch.where(present, counts[at], torch.zeros_like(counts[at]))
            sums = sums[at[:, None], at[None, :]]
        pairs = n[:, None] * n[None, :]
        pairs.diagonal().copy_(n * (n - 1))
        means = (sums if len(cached) else pairs.new_zeros(k, k)) / pairs.clamp_min(1)
        means = means.masked_fill(pairs == 0, float("nan"))
        return means.diagonal().clone(), means, n


@dataclass
class ThresholdResult:
    """Per-pair thresholds ``T`` (N x N, no grad) and the pair masks they were built on."""

    thresholds: torch.Tensor
    aug_mask: torch.Tensor
    pos_mask: torch.Tensor
    neg_mask: torch.Tensor
    instance_ids: torch.Tensor


class AdaptiveThresholds(torch.nn.Module):
    r"""AHSML's adaptive per-pair thresholds (see the module docstring for the formulas).

    Args:
        gamma: base threshold $\gamma$ (0.5), in the units of the loss's similarity.
        delta: range $\delta$ of the normalised class statistics (0.2). ``delta=0`` gives
            ``T = gamma`` on every label pair.
        negative: (R) ``"literal"`` $M_n = \gamma - \hat S_{ab}$ (similar classes pushed
            harder) or ``"divergence"`` $M_n = \gamma - (\delta - \hat S_{ab})$.
        augmentation: (R) ``"min"`` (literal) or ``"max"`` same-class similarity in the batch as
            the augmentation threshold $M_a$; $\gamma$ for a class without such pairs.
        scope: (R) ``"memory"`` (class statistics over the latest embedding of every training
            sample of the batch's classes; needs ``num_samples`` and the samples' dataset indices)
            or ``"batch"`` (the current batch only, view pairs of one image excluded).
        num_samples: training-set size, required for ``scope="memory"``.
        views: (R) number of stacked views when no instance ids are given: row ``i`` belongs to
            image ``i mod (N / views)`` (PML's TwoStreamMetricLoss gives ``[view1; view2]``).
        bank_view: which view's embedding the memory bank stores (0 = the first/weak view).
        bank_samples_per_class: (R) estimate the memory-scope statistics from at most this many
            random bank members per class (``None``: every member, exact); implies
            ``memory_statistics="direct"``. Cosine similarity uses an exact closed form from
            class means and ignores it.
        memory_statistics: how ``scope="memory"`` computes the statistics for a non-cosine
            similarity (both exact: the mean over every pair of distinct bank members, bank
            taken after this batch is written):
            ``"incremental"`` (the default unless ``bank_samples_per_class`` is given) keeps the
            class-pair sums of the whole bank and updates them with the old and new
            contributions of the rows the batch rewrote, O(B N D) per step (see
            [`EmbeddingMemoryBank`][]); ``"direct"`` compares all bank members of the
            batch's classes with each other at every step, O((sum_a n_a)^2 D).
        refresh_every: (R) with ``"incremental"``, bring the cached statistics up to date every
            this many calls (1: every step, exact). Larger values use the statistics of the
            last refresh in between (stale by at most ``refresh_every - 1`` steps, like any
            memory bank) and amortise the update; a refresh is forced when a batch class is not
            in the cache. With a learnable curvature every refresh after a change of ``c``
            is a full O(N^2 D / 2) rebuild: use a refresh interval of about an epoch (or
            ``"direct"``).
    """

    def __init__(
        self,
        gamma: float = 0.5,
        delta: float = 0.2,
        negative: str = "literal",
        augmentation: str = "min",
        scope: str = "memory",
        num_samples: int | None = None,
        views: int = 2,
        bank_view: int = 0,
        bank_samples_per_class: int | None = None,
        memory_statistics: str | None = None,
        refresh_every: int = 1,
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
        self.bank_samples_per_class = bank_samples_per_class
        self.memory_statistics, self.refresh_every = memory_statistics, refresh_every
        self._memory_calls = 0
        check_rate("delta", delta, allow_one=True)
        for name, value, allowed in (
            ("negative", negative, NEGATIVE_READINGS),
            ("augmentation", augmentation, AUGMENTATION_READINGS),
            ("scope", scope, SCOPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if scope == "memory" and num_samples is None:
            raise ValueError(
                "scope='memory' needs num_samples (the training-set size) for the memory bank; "
                "pass num_samples=len(train_dataset) or use scope='batch'"
            )
        if not 0 <= bank_view < views:
            raise ValueError(f"bank_view must lie in 0..{views - 1}, got {bank_view}")
        self.gamma, self.delta = float(gamma), float(delta)
        self.negative, self.augmentation, self.scope = negative, augmentation, scope
        self.views, self.bank_view = int(views), int(bank_view)
        self.bank = (
            EmbeddingMemoryBank(num_samples, track_changes=memory_statistics == "incremental")
            if scope == "memory"
            else None
        )
        self._pending: dict[str, torch.Tensor | None] = {}

    def set_batch_info(
        self, sample_indices: torch.Tensor | None = None, instance_ids: torch.Tensor | None = None
    ) -> None:
        """Side channel for the next call: dataset indices (one per image, length N / views, or
        one per row) and/or explicit instance ids (one per row). Consumed by that call."""
        self._pending = {"sample_indices": sample_indices, "instance_ids": instance_ids}

    def resolve_batch(self, labels: torch.Tensor):
        """Instance ids and per-row sample indices of the current batch (consumes the side
        channel); checks that rows of one image carry one label."""
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
        idx = pending.get("sample_indices")
        if idx is not None:
            idx = torch.as_tensor(idx, device=device).long().flatten()
            if len(idx) == len(inst_unique):
                idx = idx[inst]
            elif len(idx) != n:
                raise ValueError(
                    f"sample_indices has {len(idx)} entries, expected one per image "
                    f"({len(inst_unique)}) or one per row ({n})"
                )
        return inst, idx

    @torch.no_grad()
    def class_statistics(
        self, distance, embeddings, labels, classes, instance_ids, sample_indices, sim
    ):
        """``(S_aa, S_ab)`` for ``classes`` from the configured scope (``sim``: the batch's
        similarity matrix)."""
        if self.scope == "batch":
            same = instance_ids[:, None] == instance_ids[None, :]
            intra, inter, _ = class_pair_means(sim, labels, classes, exclude=same)
            return intra, inter
        if sample_indices is None:
            raise ValueError(
                "scope='memory' needs the dataset index of every sample: call "
                "set_batch_info(sample_indices=...) before each forward (e.g. with "
                "noisy_pml.losses.two_view_batch_getter as the trainer's data_and_label_getter), "
                "or use scope='batch'"
            )
        # the bank stores one row per image: its bank_view-th row (view order within the batch)
        same = instance_ids[:, None] == instance_ids[None, :]
        ordinal = torch.tril(same, diagonal=-1).sum(1)
        keep = ordinal == self.bank_view
        self.bank.update(embeddings[keep], labels[keep], sample_indices[keep])
        if isinstance(distance, CosineSimilarity):
            emb, lab = self.bank.members(classes)
            intra, inter, _ = cosine_class_means(emb, lab, classes)
        elif self.memory_statistics == "direct":
            emb, lab = self.bank.members(classes, self.bank_samples_per_class)
            intra, inter, _ = class_pair_means(distance(emb), lab, classes)
        else:
            due = self._memory_calls % self.refresh_every == 0
            self._memory_calls += 1
            if due or not self.bank.statistics_cover(classes):
                self.bank.sync_statistics(distance)
            intra, inter, _ = self.bank.pair_statistics(classes)
            intra, inter = intra.to(sim.dtype), inter.to(sim.dtype)
        return intra, inter

    @torch.no_grad()
    def forward(
        self,
        distance,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        sim: torch.Tensor | None = None,
    ) -> ThresholdResult:
        """Threshold matrix for one batch; ``distance`` is the loss's (inverted) similarity and
        ``sim`` optionally its matrix over ``embeddings`` when the caller has it already."""
        if not getattr(distance, "is_inverted", False):
            raise ValueError(
                "AHSML thresholds live in similarity units: the loss's distance must be a "
                f"similarity (is_inverted=True), got {type(distance).__name__}; use "
                "noisy_pml.distances.PoincareSimilarity (hyperbolic) or CosineSimilarity"
            )
        inst, idx = self.resolve_batch(labels)
        emb = embeddings.detach()
        classes, k = torch.unique(labels, return_inverse=True)
        sim = distance(emb) if sim is None else sim.detach()
        intra, inter = self.class_statistics(distance, emb, labels, classes, inst, idx, sim)
        a_mask, p_mask, n_mask = pair_masks(labels, inst)
        # M_p(a) = gamma + S^_aa
        m_p = self.gamma + minmax_to_range(intra, self.delta)
        # M_n(a, b) = gamma - S^_ab (literal) or gamma - (delta - S^_ab) (divergence)
        off = ~torch.eye(len(classes), dtype=torch.bool, device=emb.device)
        s_ab = torch.zeros_like(inter)
        if off.any():
            s_ab[off] = minmax_to_range(inter[off], self.delta)
        if self.negative == "divergence":
            s_ab = torch.where(off, self.delta - s_ab, s_ab)
        m_n = self.gamma - s_ab
        # M_a(a) = min (or max) similarity over same-class pairs of class a in the batch
        m_a = self._augmentation_thresholds(sim, p_mask, k, len(classes))
        t = torch.where(a_mask, m_a[k][:, None], torch.where(p_mask, m_p[k][:, None], m_n[k][:, k]))
        return ThresholdResult(t.to(embeddings.dtype), a_mask, p_mask, n_mask, inst)

    def _augmentation_thresholds(self, sim, p_mask, k, num_classes):
        fill = float("inf") if self.augmentation == "min" else float("-inf")
        row = torch.where(p_mask, sim, torch.full_like(sim, fill))
        row = row.amin(1) if self.augmentation == "min" else row.amax(1)
        out = torch.full((num_classes,), fill, dtype=sim.dtype, device=sim.device)
        reduce = "amin" if self.augmentation == "min" else "amax"
        out = out.scatter_reduce(0, k, row, reduce=reduce)
        return torch.where(torch.isfinite(out), out, torch.full_like(out, self.gamma))
