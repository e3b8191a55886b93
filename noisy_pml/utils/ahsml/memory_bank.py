r"""One memory bank for AHSML's class statistics and PRISM's class centres.

The bank holds the latest (detached) embedding and label of every training sample, indexed by
the sample's dataset index, and keeps per-class sufficient statistics up to date with every
write: the class sums $\sigma_a = \sum_{i \in a} x_i$ (float64; of the L2-normalised rows with
`normalize_sums=True`) and the member counts $n_a$. From them

- PRISM's class centres are $\sigma_a / n_a$;
- AHSML's cosine class statistics are closed forms (see
  `noisy_pml.utils.ahsml.statistics.cosine_statistics_from_sums`), $O(B D)$ per write
  and $O(K^2 D)$ per query instead of a $B \times N$ similarity per step.

For any other similarity (e.g. `PoincareSimilarity`) the bank can also keep exact class-pair
sums of that similarity, updated incrementally with the rows written since the last sync
(`EmbeddingMemoryBank.sync_statistics`, $O(B N D)$ per step).

A bank starts empty (its width is that of the first batch); a state dict taken after training
loads into a freshly constructed bank (the buffers take the checkpoint's shapes).
"""

from __future__ import annotations

import torch

from ..checks import check_finite, check_labels, check_ndim

__all__ = ["EmbeddingMemoryBank", "distance_key"]

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

    Per-class sufficient statistics are updated with every write (`update`): the class
    sums $\sigma_a$ (float64, $C \times D$, of unit vectors with `normalize_sums`) and counts
    $n_a$ (see the module docstring). Exact class-pair statistics of a non-cosine similarity
    $s$ (`sync_statistics`, `pair_statistics`): the bank caches the sums
    $\Sigma_{ab} = \sum_{i \ne j,\ y_i = a,\ y_j = b} s(x_i, x_j)$ over the filled entries and
    the counts $n_a$; $S_{aa} = \Sigma_{aa} / (n_a(n_a - 1))$, $S_{ab} = \Sigma_{ab} / (n_a n_b)$.
    With `track_changes` a sync applies only the rows $R$ written since the previous sync: every
    changed row's contribution is subtracted with its old embedding and label and added back
    with its new one,

    $$
    \Sigma \mathrel{+}= D(X'_R) - D(X_R),\quad
    D(Z) = Q_Z^\top s(Z, X_U) P_U + \big(Q_Z^\top s(Z, X_U) P_U\big)^\top
    + Q_Z^\top s(Z, Z)_{i \ne j} Q_Z
    $$

    ($U$ the unchanged rows, $P, Q$ one-hot class matrices): $O(|R| N D)$ time. A full rebuild
    ($O(N^2 D / 2)$) runs instead when it is cheaper (more than $N/2$ rows changed), on the
    first sync, when the similarity's settings or parameter values changed (e.g. a learnable
    curvature), or after a reset, move or load.

    Args:
        num_samples: size of the training set (indices must lie in `0..num_samples-1`).
        track_changes: record the old value of every row written since the last sync (needed
            by the incremental `sync_statistics`).
        normalize_sums: keep the class sums of the L2-normalised rows (cosine statistics, PRISM
            with a normalising distance) rather than of the rows as stored.

    Raises:
        ValueError: `num_samples < 1`.
    """

    _RESIZABLE = ("embeddings", "labels", "class_sums", "class_counts")

    def __init__(self, num_samples: int, track_changes: bool = False, normalize_sums: bool = True):
        super().__init__()
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        self.num_samples = int(num_samples)
        self.track_changes = bool(track_changes)
        self.normalize_sums = bool(normalize_sums)
        self.register_buffer("embeddings", torch.zeros(0))
        self.register_buffer("labels", torch.full((self.num_samples,), -1, dtype=torch.long))
        self.register_buffer("class_sums", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("class_counts", torch.zeros(0, dtype=torch.float64))
        self._cache: tuple | None = None  # (key, classes, sums, counts)
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget the change log: the next sync rebuilds the statistics from scratch."""
        self._rebuild = True
        self._dirty: torch.Tensor | None = None
        self._log: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._logged = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the bank's width (and number of classes) is only known once it has seen a batch: take
        # the checkpoint's shapes so a trained bank loads into a freshly constructed one
        for name in self._RESIZABLE:
            incoming = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != current.shape:
                setattr(self, name, torch.empty(incoming.shape, dtype=incoming.dtype,
                                                device=current.device))
        self._cache = None
        self._invalidate()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def filled(self) -> torch.Tensor:
        """Boolean mask of the rows written at least once."""
        return self.labels >= 0

    def check_batch(self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
        """Validate one write without changing anything (finite 2-D embeddings, non-negative
        integer labels, indices in range, one of each per row).

        Raises:
            ValueError, TypeError: naming the argument, the value received and what was expected.
        """
        check_ndim("embeddings", embeddings, 2)
        check_finite("embeddings", embeddings)
        check_labels("indices", indices, num_classes=self.num_samples, length=len(embeddings))
        check_labels("labels", labels, length=len(embeddings))
        self._check_width(embeddings)

    def _check_width(self, embeddings: torch.Tensor) -> None:
        if self.embeddings.dim() == 2 and len(embeddings) and (
            embeddings.shape[1] != self.embeddings.shape[1]
        ):
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} dimensions, the memory bank holds "
                f"{self.embeddings.shape[1]}: call reset() to start a new bank"
            )

    def reset(self) -> None:
        """Empty the bank (every row unfilled, no class statistics)."""
        self.embeddings = torch.zeros(0, device=self.labels.device)
        self.labels.fill_(-1)
        self.class_sums = torch.zeros(0, 0, dtype=torch.float64, device=self.labels.device)
        self.class_counts = torch.zeros(0, dtype=torch.float64, device=self.labels.device)
        self._cache = None
        self._invalidate()

    @torch.no_grad()
    def update(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        validated: bool = False,
    ):
        """Write a batch (the last row wins for a repeated index) and update the class sums.

        Everything is validated before the bank changes (see `check_batch`), so a bad
        batch (e.g. NaN embeddings) leaves the bank as it was. `validated=True`: the caller has
        checked the embeddings (finite, 2-D) and labels already; indices are still checked.
        """
        indices = torch.as_tensor(indices, device=embeddings.device)
        if validated:
            check_labels("indices", indices, num_classes=self.num_samples, length=len(embeddings))
            self._check_width(embeddings)
        else:
            self.check_batch(embeddings, labels, indices)
        if len(embeddings) == 0:
            return
        n, device, dtype = self.num_samples, embeddings.device, embeddings.dtype
        indices, labels = indices.long(), labels.to(device).long()
        uniq, inv = torch.unique(indices, return_inverse=True)
        if len(uniq) < len(indices):  # keep the last row of a repeated index
            last = torch.zeros(len(uniq), dtype=torch.long, device=device).scatter_reduce(
                0, inv, torch.arange(len(indices), device=device), reduce="amax"
            )
            embeddings, labels, indices = embeddings[last], labels[last], uniq
        if self.embeddings.dim() != 2:
            self.embeddings = embeddings.new_zeros(n, embeddings.shape[1])
            self.labels = self.labels.to(device)
            self._invalidate()
        if self.embeddings.device != device or self.embeddings.dtype != dtype:
            self._invalidate()
        self.embeddings = self.embeddings.to(device, dtype)
        self.labels = self.labels.to(device)
        self._update_class_sums(embeddings, labels, indices)
        if self.track_changes and not self._rebuild:
            self._log_old_rows(indices)
        self.embeddings[indices] = embeddings.detach()
        self.labels[indices] = labels

    def _rows_for_sums(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().double()
        return torch.nn.functional.normalize(x, dim=1) if self.normalize_sums else x

    def _update_class_sums(self, embeddings, labels, indices) -> None:
        # sigma_a -= old rows of a, sigma_a += new rows of a (float64, O(B D))
        device, d = embeddings.device, embeddings.shape[1]
        need = int(labels.max()) + 1
        if self.class_sums.shape[1:] != (d,) or self.class_sums.device != device:
            self._rebuild_class_sums(max(need, len(self.class_counts)), d, device)
        if need > len(self.class_counts):
            grow = need - len(self.class_counts)
            self.class_sums = torch.cat([self.class_sums, self.class_sums.new_zeros(grow, d)])
            self.class_counts = torch.cat([self.class_counts, self.class_counts.new_zeros(grow)])
        old = self.labels[indices]
        was = old >= 0
        if was.any():
            self.class_sums.index_add_(
                0, old[was], self._rows_for_sums(self.embeddings[indices[was]]), alpha=-1
            )
            ones = torch.ones_like(old[was], dtype=torch.float64)
            self.class_counts.index_add_(0, old[was], -ones)
        self.class_sums.index_add_(0, labels, self._rows_for_sums(embeddings))
        self.class_counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))

    def _rebuild_class_sums(self, num_classes: int, d: int, device) -> None:
        self.class_sums = torch.zeros(num_classes, d, dtype=torch.float64, device=device)
        self.class_counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
        filled = self.filled.to(device)
        if filled.any() and self.embeddings.dim() == 2:
            lab = self.labels.to(device)[filled]
            self.class_sums.index_add_(0, lab, self._rows_for_sums(self.embeddings[filled]))
            self.class_counts.index_add_(0, lab, torch.ones_like(lab, dtype=torch.float64))

    def _log_old_rows(self, indices: torch.Tensor) -> None:
        n = self.num_samples
        if self._dirty is None:
            self._dirty = torch.zeros(n, dtype=torch.bool, device=indices.device)
        idx = indices[~self._dirty[indices]]  # first write since the last sync: keep the old row
        old_labels = self.labels[idx]
        idx, old_labels = idx[old_labels >= 0], old_labels[old_labels >= 0]
        if len(idx):
            self._log.append((idx, self.embeddings[idx].clone(), old_labels))
            self._logged += len(idx)
        self._dirty[indices] = True
        if self._logged > n // 2:
            self._invalidate()

    def class_sums_of(self, classes: torch.Tensor):
        """`(sums, n)`: the class sums (float64, K x D) and member counts (K) of `classes`
        (zeros for a class the bank has not seen)."""
        classes = classes.to(self.class_counts.device).long()
        known = classes < len(self.class_counts)
        at = classes.clamp_max(max(len(self.class_counts) - 1, 0))
        if len(self.class_counts) == 0:
            d = self.embeddings.shape[1] if self.embeddings.dim() == 2 else 0
            return (torch.zeros(len(classes), d, dtype=torch.float64, device=classes.device),
                    torch.zeros(len(classes), dtype=torch.float64, device=classes.device))
        sums = self.class_sums[at] * known[:, None]
        n = torch.where(known, self.class_counts[at], torch.zeros_like(self.class_counts[at]))
        return sums, n

    def members(self, classes: torch.Tensor, per_class: int | None = None):
        """Embeddings and labels of the filled entries whose label is in `classes`; with
        `per_class`, a uniformly random subset of at most that many members per class."""
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
        """``(intra, inter, n)`` as `class_pair_means` over the whole bank at the last
        `sync_statistics` (float64): ``intra[k]`` = mean similarity of distinct member
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
