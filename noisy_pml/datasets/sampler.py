"""Class-balanced batches: $P$ classes, $m$ samples of each, seeded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["ClassBalancedBatchSampler"]


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size // m_per_class`` random classes with ``m_per_class`` samples each.

    The batching of PML's ``MPerClassSampler``, as a *batch* sampler drawn from its own
    ``torch.Generator``, so an epoch's batches depend only on ``seed`` and the epoch number
    (PML's sampler draws from a global numpy generator). A class with fewer than $m$ samples
    is sampled with replacement. One epoch has ``len(labels) // batch_size`` batches (at least
    one). Use it as ``DataLoader(dataset, batch_sampler=ClassBalancedBatchSampler(...))``.

    Args:
        labels: (N,) training labels (the noisy ones when training under noise).
        batch_size: samples per batch; rounded down to a multiple of ``m_per_class`` and capped
            at ``m_per_class`` x number of classes.
        m_per_class: samples of each class in a batch.
        seed: seed of the generator (or pass ``generator``).
        generator: a ``torch.Generator`` to draw from (shared state across epochs).

    Raises:
        ValueError: for empty labels or sizes below 1.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor,
        batch_size: int,
        m_per_class: int,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        labels = torch.as_tensor(labels).long().flatten()
        if len(labels) == 0:
            raise ValueError("labels must not be empty")
        if int(m_per_class) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"batch_size and m_per_class must be >= 1, got {batch_size!r} and {m_per_class!r}"
            )
        self.labels = labels
        self.m = int(m_per_class)
        classes = labels.unique()
        self.by_class = [torch.nonzero(labels == k).flatten() for k in classes]
        bs = min(int(batch_size), self.m * len(classes))
        self.classes_per_batch = max(1, bs // self.m)
        self.batch_size = self.classes_per_batch * self.m
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.index_batches():
            yield batch.tolist()

    def index_batches(self) -> Iterator[torch.Tensor]:
        """The epoch's batches as LongTensors (what `__iter__` yields as lists)."""
        g, m = self.generator, self.m
        for _ in range(len(self)):
            chosen = torch.randperm(len(self.by_class), generator=g)[: self.classes_per_batch]
            idx = []
            for k in chosen.tolist():
                members = self.by_class[k]
                if len(members) >= m:
                    pick = members[torch.randperm(len(members), generator=g)[:m]]
                else:
                    pick = members[torch.randint(len(members), (m,), generator=g)]
                idx.append(pick)
            yield torch.cat(idx)
