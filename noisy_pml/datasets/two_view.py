"""Two augmented views of every sample, for methods that compare a weak and a strong view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from .base import NoisyLabelDataset


class TwoViewDataset(Dataset):
    """Wrap a dataset so that item ``i`` is ``(weak_view, strong_view, label, i)``.

    Both views are computed from the same *untransformed* sample: for noisy-pml datasets the
    base's own ``transform`` is bypassed (its `load_sample` is used); for any other dataset
    ``base[i][0]`` is used, so give it no transform. ``label`` is the training label
    (``base.targets[i]``, noisy when the base has noise). ``targets``, ``clean_targets``,
    ``noise_mask`` and ``num_classes`` are forwarded from the base.

    See [`noisy_pml.datasets.transforms.weak_transform`][] and ``strong_transform`` for defaults.
    """

    def __init__(self, base: Dataset, weak_transform: Callable, strong_transform: Callable) -> None:
        if not callable(weak_transform) or not callable(strong_transform):
            raise TypeError(
                "weak_transform and strong_transform must be callables, got "
                f"{type(weak_transform).__name__} and {type(strong_transform).__name__}"
            )
        self.base = base
        self.weak_transform = weak_transform
        self.strong_transform = strong_transform

    def __len__(self) -> int:
        return len(self.base)

    def _raw(self, idx: int) -> Any:
        if isinstance(self.base, NoisyLabelDataset):
            return self.base.load_sample(idx)
        return self.base[idx][0]

    def _label(self, idx: int) -> int:
        targets = getattr(self.base, "targets", None)
        if targets is not None:
            return int(targets[idx])
        return int(self.base[idx][1])

    def __getitem__(self, idx: int) -> tuple[Any, Any, int, int]:
        sample = self._raw(idx)
        return self.weak_transform(sample), self.strong_transform(sample), self._label(idx), idx

    @property
    def targets(self) -> torch.Tensor:
        return self.base.targets

    @property
    def clean_targets(self) -> torch.Tensor:
        return self.base.clean_targets

    @property
    def noise_mask(self) -> torch.Tensor:
        return self.base.noise_mask

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def labels(self):
        return self.base.labels
