"""Digits: class-disjoint split of scikit-learn's bundled digits, noise on the train split only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from noisy_pml.datasets import Digits


@pytest.fixture(scope="module")
def sk_target() -> np.ndarray:
    return load_digits().target


def test_train_is_digits_0_to_4_and_test_is_5_to_9_remapped(sk_target):
    train, test = Digits("train"), Digits("test")
    assert len(train) == int((sk_target < 5).sum()) and len(test) == int((sk_target >= 5).sum())
    assert train.num_classes == test.num_classes == 5
    assert set(train.targets.tolist()) == set(test.targets.tolist()) == set(range(5))
    assert torch.equal(test.targets, torch.from_numpy(sk_target[sk_target >= 5] - 5))
    both = Digits("train+test")
    assert len(both) == len(sk_target) and both.num_classes == 10


def test_samples_are_float_1x8x8_in_unit_range_and_data_matches():
    ds = Digits("train", return_index=True)
    x, label, idx = ds[7]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0
    assert label == int(ds.targets[7]) and idx == 7
    assert ds.data.dtype == np.float32 and ds.data.shape == (len(ds), 64)
    assert torch.equal(x.flatten(), torch.from_numpy(ds.data[7]))
    assert len(ds[0]) == 3 and len(Digits("train")[0]) == 2


def test_transform_is_applied_to_the_sample():
    ds = Digits("train", transform=lambda t: t * 2)
    assert torch.equal(ds[3][0], Digits("train")[3][0] * 2)


@pytest.mark.parametrize("noise", ["symmetric:0.3", "pair_flip:0.2", "small_cluster:0.4"])
def test_noise_changes_targets_keeps_clean_targets_and_mask(noise):
    clean = Digits("train")
    noisy = Digits("train", noise=noise, noise_seed=1)
    assert torch.equal(noisy.clean_targets, clean.targets)
    assert torch.equal(noisy.noise_mask, noisy.targets != noisy.clean_targets)
    assert noisy.noise_mask.any() and noisy.noise_result.recipe == noise
    assert noisy.noise_result.rate == pytest.approx(noisy.noise_mask.double().mean().item())
    assert set(noisy.targets.tolist()) <= set(range(5))
    assert noisy[0][1] == int(noisy.targets[0])
    assert not clean.noise_mask.any() and clean.noise_result is None


def test_noise_is_reproducible_by_seed():
    a = Digits("train", noise="symmetric:0.2", noise_seed=3)
    b = Digits("train", noise="symmetric:0.2", noise_seed=3)
    c = Digits("train", noise="symmetric:0.2", noise_seed=4)
    assert torch.equal(a.targets, b.targets) and not torch.equal(a.targets, c.targets)


def test_noise_on_test_split_and_bad_split_are_rejected():
    with pytest.raises(ValueError, match="train split only"):
        Digits("test", noise="symmetric:0.2")
    with pytest.raises(ValueError, match="split must be one of"):
        Digits("val")
    assert not Digits("test", noise="clean").noise_mask.any()
