"""ClassBalancedBatchSampler: P classes x m samples per batch, seeded."""

import pytest
import torch

from noisy_pml.datasets import ClassBalancedBatchSampler

LABELS = torch.arange(10).repeat_interleave(6)  # 10 classes x 6 samples


def test_each_batch_has_m_samples_of_each_of_its_classes():
    sampler = ClassBalancedBatchSampler(LABELS, batch_size=12, m_per_class=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // 12
    for b in batches:
        counts = torch.bincount(LABELS[b], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [3, 3, 3, 3]
        assert len(set(b)) == 12  # classes with >= m samples: drawn without replacement


def test_same_seed_same_batches_and_rounding():
    a = list(ClassBalancedBatchSampler(LABELS, 12, 3, seed=5))
    b = list(ClassBalancedBatchSampler(LABELS, 12, 3, seed=5))
    c = list(ClassBalancedBatchSampler(LABELS, 12, 3, seed=6))
    assert a == b != c
    assert ClassBalancedBatchSampler(LABELS, 13, 3).batch_size == 12  # a multiple of m
    assert ClassBalancedBatchSampler(LABELS, 500, 3).batch_size == 30  # at most m x classes


def test_small_classes_are_sampled_with_replacement_and_errors_are_clear():
    labels = torch.tensor([0, 0, 0, 0, 1])
    (batch,) = list(ClassBalancedBatchSampler(labels, 4, 2, seed=0))
    assert torch.bincount(labels[batch]).tolist() == [2, 2]
    with pytest.raises(ValueError, match="must not be empty"):
        ClassBalancedBatchSampler([], 4, 2)
    with pytest.raises(ValueError, match="m_per_class must be >= 1"):
        ClassBalancedBatchSampler(labels, 4, 0)


def test_works_as_a_dataloader_batch_sampler():
    ds = torch.utils.data.TensorDataset(torch.arange(60), LABELS)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=ClassBalancedBatchSampler(LABELS, 12, 3, seed=0)
    )
    assert all(len(x) == 12 for x, _ in loader)
