"""Label-noise injection: exact rates, reproducibility, noise stays inside the training classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisy_pml.noise import (
    NoiseRecipe,
    NoiseResult,
    apply_noise,
    pair_flip_mapping,
    pair_flip_noise,
    small_cluster_noise,
    symmetric_noise,
)


def balanced_labels(num_classes: int = 20, per_class: int = 60) -> torch.Tensor:
    return torch.arange(num_classes).repeat_interleave(per_class)


def uneven_labels(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    counts = rng.integers(24, 69, size=30)  # Cars196-like class sizes
    return torch.from_numpy(np.repeat(np.arange(30), counts))


ALL_NOISES = [symmetric_noise, small_cluster_noise, pair_flip_noise]


# ------------------------------------------------------------------ symmetric


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5, 0.7])
def test_symmetric_changes_exactly_round_rate_n(rate):
    y = uneven_labels()
    res = symmetric_noise(y, rate, seed=3)
    assert int(res.noise_mask.sum()) == round(rate * len(y))
    assert res.rate == round(rate * len(y)) / len(y)


def test_symmetric_never_keeps_own_class_and_stays_in_training_classes():
    y = torch.tensor([3, 3, 5, 5, 9, 9, 9, 3] * 20)  # classes {3, 5, 9}, ids 0-2, 4, 6-8 absent
    res = symmetric_noise(y, 0.6, num_classes=12, seed=1)
    assert set(res.noisy_labels.tolist()) <= {3, 5, 9}
    changed = res.noise_mask
    assert torch.all(res.noisy_labels[changed] != y[changed])


def test_symmetric_targets_are_roughly_uniform_over_other_classes():
    y = torch.zeros(30000, dtype=torch.long)
    y[:10] = torch.arange(10)  # 10 classes present, class 0 dominant
    res = symmetric_noise(y, 0.5, seed=0)
    flipped_from_0 = res.noisy_labels[res.noise_mask & (y == 0)]
    counts = torch.bincount(flipped_from_0, minlength=10)[1:].double()
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


# ------------------------------------------------------------------ shared properties


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_same_seed_same_result_different_seed_different_result(fn):
    y = balanced_labels()
    a, b, c = fn(y, 0.3, seed=7), fn(y, 0.3, seed=7), fn(y, 0.3, seed=8)
    assert torch.equal(a.noisy_labels, b.noisy_labels)
    assert not torch.equal(a.noisy_labels, c.noisy_labels)


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_mask_is_exactly_where_labels_changed_and_rate_is_its_mean(fn):
    y = uneven_labels(1)
    res = fn(y, 0.4, seed=2)
    assert isinstance(res, NoiseResult)
    assert res.noisy_labels.dtype == torch.long and res.noise_mask.dtype == torch.bool
    assert torch.equal(res.noise_mask, res.noisy_labels != y)
    assert res.rate == pytest.approx(res.noise_mask.double().mean().item(), abs=0)


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_noise_never_leaves_the_training_classes(fn):
    y = uneven_labels(2) * 2 + 1  # odd ids only
    res = fn(y, 0.45, seed=0)
    assert set(res.noisy_labels.unique().tolist()) <= set(y.unique().tolist())


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_accepts_tensor_numpy_and_list_alike(fn):
    y = balanced_labels(6, 40)
    ref = fn(y, 0.3, seed=5).noisy_labels
    assert torch.equal(fn(y.numpy(), 0.3, seed=5).noisy_labels, ref)
    assert torch.equal(fn(y.tolist(), 0.3, seed=5).noisy_labels, ref)
    assert torch.equal(fn(y.int(), 0.3, seed=5).noisy_labels, ref)


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_rate_zero_changes_nothing(fn):
    y = balanced_labels()
    res = fn(y, 0.0)
    assert torch.equal(res.noisy_labels, y) and not res.noise_mask.any() and res.rate == 0


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("fn", ALL_NOISES)
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_rate_is_rejected_with_its_value(fn, rate):
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\), got"):
        fn(balanced_labels(), rate)


@pytest.mark.parametrize("fn", ALL_NOISES)
def test_fewer_than_two_classes_is_rejected(fn):
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        fn(torch.zeros(50, dtype=torch.long), 0.2)


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.4, got values in 0\.\.7"):
        symmetric_noise(torch.tensor([0, 1, 7]), 0.2, num_classes=5)
    with pytest.raises(ValueError, match="labels must lie in >= 0"):
        pair_flip_noise([-1, 0, 1], 0.2)


def test_non_integer_and_2d_labels_are_rejected():
    with pytest.raises(TypeError, match="integer class ids"):
        symmetric_noise(torch.tensor([0.0, 1.0]), 0.2)
    with pytest.raises(TypeError, match="integer class ids"):
        symmetric_noise(np.array([0.5, 1.0]), 0.2)
    with pytest.raises(ValueError, match="labels must be 1-D"):
        symmetric_noise(torch.zeros(2, 3, dtype=torch.long), 0.2)


# ------------------------------------------------------------------ small cluster


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_small_cluster_breaks_round_rate_k_classes_entirely(rate):
    y = uneven_labels(3)
    res = small_cluster_noise(y, rate, seed=4)
    broken = [c for c in y.unique().tolist() if res.noise_mask[y == c].any()]
    assert len(broken) == round(rate * 30)
    for c in broken:  # every sample of a broken class is relabelled, into an unbroken class
        assert res.noise_mask[y == c].all()
        assert not set(res.noisy_labels[y == c].tolist()) & set(broken)
    assert res.rate == pytest.approx(sum(int((y == c).sum()) for c in broken) / len(y))


@pytest.mark.parametrize("with_features", [False, True])
def test_small_cluster_sizes_within_bounds_and_one_target_per_cluster(with_features, monkeypatch):
    import noisy_pml.noise as noise

    recorded: list[np.ndarray] = []
    split = noise._split_class

    def spy(*args, **kwargs):
        clusters = split(*args, **kwargs)
        recorded.extend(clusters)
        return clusters

    monkeypatch.setattr(noise, "_split_class", spy)
    y = uneven_labels(4)
    feats = torch.randn(len(y), 8) if with_features else None
    res = small_cluster_noise(y, 0.5, features=feats, seed=0)
    assert recorded
    covered = np.concatenate(recorded)
    assert len(covered) == len(set(covered.tolist())) == int(res.noise_mask.sum())
    for cluster in recorded:
        assert 15 <= len(cluster) <= 35
        assert len(set(res.noisy_labels[torch.from_numpy(cluster)].tolist())) == 1
        assert len(set(y[torch.from_numpy(cluster)].tolist())) == 1


def test_small_cluster_kmeans_clusters_follow_the_features():
    # one broken class whose samples form two well-separated blobs of 30: k-means must find them
    y = torch.tensor([0] * 60 + [1] * 60 + [2] * 60)
    feats = torch.zeros(180, 2)
    feats[:180:2, 0] = 100.0  # even indices in blob A, odd in blob B (not contiguous)
    feats += 0.01 * torch.randn(180, 2)
    res = small_cluster_noise(y, 1 / 3, features=feats, seed=0, cluster_size=(25, 35))
    broken = next(c for c in range(3) if res.noise_mask[y == c].all())
    idx = torch.nonzero(y == broken).flatten()
    for blob in (idx[idx % 2 == 0], idx[idx % 2 == 1]):
        assert len(set(res.noisy_labels[blob].tolist())) == 1


def test_small_cluster_class_below_min_size_is_one_cluster():
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    res = small_cluster_noise(y, 0.5, seed=1)
    for c in range(4):
        if res.noise_mask[y == c].any():
            assert len(set(res.noisy_labels[y == c].tolist())) == 1


def test_small_cluster_needs_an_unbroken_class_and_valid_features():
    y = torch.tensor([0] * 20 + [1] * 20)
    with pytest.raises(ValueError, match="leaving no class"):
        small_cluster_noise(y, 0.9)
    with pytest.raises(ValueError, match="features must have one row per label"):
        small_cluster_noise(y, 0.5, features=torch.randn(39, 4))
    bad = torch.randn(40, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="features contains 1 NaN"):
        small_cluster_noise(y, 0.5, features=bad)
    with pytest.raises(ValueError, match="cluster_size"):
        small_cluster_noise(y, 0.5, cluster_size=(30, 10))


# ------------------------------------------------------------------ pair flip


def test_pair_flip_mapping_has_no_fixed_point_and_is_a_permutation():
    classes = list(range(3, 40))
    mp = pair_flip_mapping(classes, seed=5)
    assert set(mp) == set(classes) == set(mp.values())
    assert all(a != b for a, b in mp.items())


def test_pair_flip_sends_each_class_to_one_partner_with_per_class_rate():
    y = uneven_labels(5)
    rate = 0.3
    res = pair_flip_noise(y, rate, seed=9)
    targets = {}
    for c in y.unique().tolist():
        m = y == c
        assert int(res.noise_mask[m].sum()) == round(rate * int(m.sum()))
        t = set(res.noisy_labels[m & res.noise_mask].tolist())
        assert len(t) == 1 and c not in t
        targets[c] = t.pop()
    assert len(set(targets.values())) == len(targets)  # partners form a permutation


# ------------------------------------------------------------------ recipes


@pytest.mark.parametrize(
    "text,kind,rate",
    [
        ("clean", "clean", 0.0),
        ("symmetric:0.2", "symmetric", 0.2),
        ("small_cluster:0.25", "small_cluster", 0.25),
        ("pair_flip:0.2", "pair_flip", 0.2),
    ],
)
def test_recipe_parse_and_str_round_trip(text, kind, rate):
    r = NoiseRecipe.parse(text)
    assert (r.kind, r.rate) == (kind, rate)
    assert str(r) == text and NoiseRecipe.parse(str(r)) == r


def test_recipe_rate_zero_prints_clean_and_bad_recipes_fail():
    assert str(NoiseRecipe("symmetric", 0.0)) == "clean"
    assert NoiseRecipe.parse(None).is_clean
    with pytest.raises(ValueError, match="noise kind must be one of"):
        NoiseRecipe.parse("gaussian:0.2")
    with pytest.raises(ValueError, match="is not a number"):
        NoiseRecipe.parse("symmetric:abc")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\), got 1.2"):
        NoiseRecipe.parse("symmetric:1.2")
    with pytest.raises(ValueError, match="'<kind>:<rate>'"):
        NoiseRecipe.parse("symmetric")


@pytest.mark.parametrize(
    "fn,text",
    [
        (symmetric_noise, "symmetric:0.3"),
        (pair_flip_noise, "pair_flip:0.3"),
        (small_cluster_noise, "small_cluster:0.3"),
    ],
)
def test_apply_noise_dispatches_to_the_named_protocol(fn, text):
    y = balanced_labels()
    a, b = apply_noise(y, text, seed=4), fn(y, 0.3, seed=4)
    assert torch.equal(a.noisy_labels, b.noisy_labels) and a.recipe == text


def test_apply_noise_clean_returns_a_copy_and_empty_mask():
    y = balanced_labels()
    res = apply_noise(y, "clean")
    assert torch.equal(res.noisy_labels, y) and res.noisy_labels is not y
    assert res.rate == 0 and res.recipe == "clean" and not res.noise_mask.any()


# ------------------------------------------------------------------ property tests


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=2, max_size=12),
    rate=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_symmetric_property(counts, rate, seed):
    y = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
    res = symmetric_noise(y, rate, seed=seed)
    assert int(res.noise_mask.sum()) == round(rate * len(y))
    assert torch.all(res.noisy_labels[res.noise_mask] != y[res.noise_mask])
    assert res.noisy_labels.min() >= 0 and res.noisy_labels.max() < len(counts)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 80), min_size=2, max_size=10),
    rate=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_pair_flip_and_small_cluster_property(counts, rate, seed):
    y = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
    pf = pair_flip_noise(y, rate, seed=seed)
    assert int(pf.noise_mask.sum()) == sum(round(rate * n) for n in counts)
    assert torch.equal(pf.noise_mask, pf.noisy_labels != y)
    if round(rate * len(counts)) < len(counts):
        sc = small_cluster_noise(y, rate, seed=seed)
        n_broken = len(set(y[sc.noise_mask].tolist()))
        assert n_broken == round(rate * len(counts))
        assert math.isclose(sc.rate, float(sc.noise_mask.double().mean()))
