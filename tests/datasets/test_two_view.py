"""TwoViewDataset: two views of the same untransformed sample, training label and index."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from noisy_pml.datasets import Digits, TwoViewDataset


def test_items_are_weak_strong_label_index_from_the_raw_sample():
    base = Digits("train", transform=lambda t: t * 100, noise="symmetric:0.3")
    two = TwoViewDataset(base, weak_transform=lambda t: t + 1, strong_transform=lambda t: -t)
    raw = base.load_sample(5)
    weak, strong, label, idx = two[5]
    assert torch.equal(weak, raw + 1) and torch.equal(strong, -raw)  # base transform bypassed
    assert label == int(base.targets[5]) and idx == 5 and len(two) == len(base)


def test_forwards_label_attributes():
    base = Digits("train", noise="pair_flip:0.2")
    two = TwoViewDataset(base, lambda t: t, lambda t: t)
    assert two.targets is base.targets and two.clean_targets is base.clean_targets
    assert two.noise_mask is base.noise_mask and two.num_classes == 5


def test_works_with_a_plain_dataset_and_a_dataloader():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    two = TwoViewDataset(TensorDataset(x, y), lambda t: t * 2, lambda t: t * 3)
    weak, strong, label, idx = next(iter(torch.utils.data.DataLoader(two, batch_size=10)))
    assert torch.equal(weak, 2 * x) and torch.equal(strong, 3 * x)
    assert torch.equal(label, y) and torch.equal(idx, torch.arange(10))


def test_rejects_non_callable_transforms():
    with pytest.raises(TypeError, match="must be callables"):
        TwoViewDataset(Digits("train"), None, lambda t: t)
