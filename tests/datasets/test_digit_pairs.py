"""DigitPairs: 100 pair classes of scikit-learn digits, class- and image-disjoint split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from noisy_pml.datasets import DigitPairs, get_dataset


@pytest.fixture(scope="module")
def sk():
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32).reshape(-1, 8, 8), bunch.target


@pytest.fixture(scope="module")
def splits():
    return DigitPairs("train"), DigitPairs("test"), DigitPairs("train+test")


def test_sizes_and_labels_of_the_default_split(splits):
    train, test, both = splits
    assert train.num_classes == test.num_classes == 50 and both.num_classes == 100
    assert len(train) == 50 * 30 and len(test) == 50 * 20 and len(both) == len(train) + len(test)
    for ds, per_class in ((train, 30), (test, 20)):
        counts = torch.bincount(ds.targets, minlength=ds.num_classes)
        assert counts.tolist() == [per_class] * ds.num_classes
    assert train.data.shape == (1500, 128) and train.data.dtype == np.float32


def test_classes_are_disjoint_and_cover_the_100_ordered_pairs(splits):
    train, test, both = splits
    assert len(set(train.pairs)) == 50 and not set(train.pairs) & set(test.pairs)
    assert set(train.pairs) | set(test.pairs) == {(a, b) for a in range(10) for b in range(10)}
    # train+test: the training classes first, with their training labels
    assert both.pairs == train.pairs + test.pairs
    assert torch.equal(both.targets[: len(train)], train.targets)
    assert torch.equal(both.targets[len(train) :], test.targets + 50)


def test_each_image_is_its_classs_left_and_right_digit(splits, sk):
    x, y = sk
    for ds in splits:
        img = ds.data.reshape(-1, 8, 16)
        assert np.array_equal(img[:, :, :8], x[ds.sources[:, 0]])
        assert np.array_equal(img[:, :, 8:], x[ds.sources[:, 1]])
        pairs = np.array(ds.pairs)[ds.targets.numpy()]
        assert np.array_equal(y[ds.sources[:, 0]], pairs[:, 0])
        assert np.array_equal(y[ds.sources[:, 1]], pairs[:, 1])


def test_source_images_are_not_shared_between_train_and_test(splits):
    train, test, _ = splits
    assert not set(train.sources.ravel().tolist()) & set(test.sources.ravel().tolist())


def test_no_composite_repeats_within_a_split(splits):
    for ds in splits[:2]:
        assert len({tuple(s) for s in ds.sources.tolist()}) == len(ds)


def test_seed_changes_the_split_and_the_default_is_fixed():
    a, b, c = DigitPairs("train"), DigitPairs("train"), DigitPairs("train", seed=1)
    assert a.pairs == b.pairs and np.array_equal(a.data, b.data)
    assert a.pairs != c.pairs


def test_sample_is_1x8x16_and_registry_builds_it():
    ds = get_dataset("digit_pairs", split="test", return_index=True)
    x, label, idx = ds[5]
    assert x.shape == (1, 8, 16) and idx == 5 and label == int(ds.targets[5])
    assert torch.equal(x.flatten(), torch.from_numpy(ds.data[5]))


def test_noise_goes_to_the_train_split_over_its_50_classes():
    noisy = DigitPairs("train", noise="symmetric:0.5", noise_seed=0)
    assert noisy.noise_result.rate == pytest.approx(0.5, abs=0.05)
    assert set(noisy.targets.tolist()) <= set(range(50))
    assert torch.equal(noisy.clean_targets, DigitPairs("train").targets)
    with pytest.raises(ValueError, match="train split only"):
        DigitPairs("test", noise="symmetric:0.5")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_classes": 0}, "train_classes must be in 1..99"),
        ({"train_classes": 100}, "train_classes must be in 1..99"),
        ({"train_per_class": 0}, "train_per_class must be in 1.."),
        ({"test_per_class": 10**6}, "test_per_class must be in 1.."),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    split = "test" if "test_per_class" in kwargs else "train"
    with pytest.raises(ValueError, match=match):
        DigitPairs(split, **kwargs)
