"""PRISMMiner: ranking-based instance selection (Liu et al., CVPR 2021) as a PML pair miner."""

import pytest
import torch
from pytorch_metric_learning.miners import MultiSimilarityMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from noisy_pml.miners import PRISMMiner


def _clusters(per_class=8, classes=3, dim=8, spread=0.05):
    """Tight clusters around orthogonal centres; returns embeddings and their true labels."""
    centres = torch.eye(dim)[:classes] * 3
    x = centres.repeat_interleave(per_class, 0) + spread * torch.randn(per_class * classes, dim)
    y = torch.arange(classes).repeat_interleave(per_class)
    return x, y


def _pairs(t):
    a1, p, a2, n = t
    return set(zip(a1.tolist(), p.tolist(), strict=True)), set(
        zip(a2.tolist(), n.tolist(), strict=True)
    )


def test_needs_sample_indices():
    miner = PRISMMiner(num_samples=10, num_classes=2)
    x, y = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="set_batch_info"):
        miner(x, y)


def test_first_batch_keeps_every_label_pair():
    x, y = _clusters()
    miner = PRISMMiner(num_samples=len(x), num_classes=3)
    got = miner(x, y, indices=torch.arange(len(x)))
    assert _pairs(got) == _pairs(lmu.get_all_pairs_indices(y))
    assert miner.filled.all()


def test_mislabelled_sample_loses_its_pairs_once_the_bank_is_filled():
    x, y_true = _clusters()
    y = y_true.clone()
    y[0] = 2  # a class-0 image labelled 2: far from class 2's centre
    idx = torch.arange(len(x))
    miner = PRISMMiner(num_samples=len(x), num_classes=3, warmup=1.0)
    miner(x, y, indices=idx)  # fills the bank
    a1, p, a2, n = miner(x, y, indices=idx)
    touched = set(a1.tolist()) | set(p.tolist()) | set(a2.tolist()) | set(n.tolist())
    assert 0 not in touched
    assert touched == set(range(1, len(x)))
    assert miner.scores[0] == miner.scores.min()
    assert miner.estimated_noise_rate == pytest.approx(1 / len(x))


def test_known_noise_rate_sets_the_kept_fraction():
    x, y = _clusters(per_class=10, spread=1.0)
    idx = torch.arange(len(x))
    miner = PRISMMiner(num_samples=len(x), num_classes=3, noise_rate=0.3, warmup=1.0)
    miner(x, y, indices=idx)
    miner(x, y, indices=idx)  # scores of every sample stored
    miner(x, y, indices=idx)
    assert miner.kept_fraction == pytest.approx(0.7, abs=1 / len(x))


@pytest.mark.parametrize("route", ["set_batch_info", "sample_indices", "set_batch_indices"])
def test_set_batch_info_route_for_pml_trainers(route):
    x, y = _clusters()
    miner = PRISMMiner(num_samples=len(x), num_classes=3)
    if route == "set_batch_info":
        miner.set_batch_info(indices=torch.arange(len(x)))
    elif route == "sample_indices":  # deprecated keyword, kept working
        miner.set_batch_info(sample_indices=torch.arange(len(x)))
    else:  # deprecated alias
        miner.set_batch_indices(torch.arange(len(x)))
    miner(x, y)  # what a PML trainer calls
    assert miner.filled.all()
    with pytest.raises(ValueError, match="indices"):
        miner(x, y)  # the indices were consumed by the previous call


def test_inner_miner_pairs_are_filtered_not_extended():
    x, y = _clusters(spread=1.0)
    idx = torch.arange(len(x))
    inner = MultiSimilarityMiner(epsilon=0.1)
    miner = PRISMMiner(num_samples=len(x), num_classes=3, inner_miner=inner, warmup=0.0)
    miner(x, y, indices=idx)
    pos, neg = _pairs(miner(x, y, indices=idx))
    inner_pos, inner_neg = _pairs(inner(x, y))
    assert pos <= inner_pos and neg <= inner_neg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": 4}, "top_k"),
        ({"noise_rate": 1.0}, "noise_rate"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"num_samples": 10, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        PRISMMiner(**args)


def test_out_of_range_indices_are_rejected():
    miner = PRISMMiner(num_samples=4, num_classes=2)
    with pytest.raises(ValueError, match="indices"):
        miner(torch.randn(2, 3), torch.tensor([0, 1]), indices=torch.tensor([0, 7]))


def test_one_nan_batch_is_rejected_and_leaves_the_miner_untouched():
    # issue #13 item 2: a NaN batch used to be stored, and every later call failed in quantile
    torch.manual_seed(0)
    m = PRISMMiner(num_samples=16, num_classes=5, warmup=0.0)
    lab = torch.arange(16) % 5
    m(torch.randn(16, 4), lab, indices=torch.arange(16))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    stats = (m.kept_fraction, m.threshold, m.estimated_noise_rate)
    nan_emb = torch.full((16, 4), float("nan"))
    with pytest.raises(ValueError, match="embeddings contains 64 NaN"):
        m(nan_emb, lab, indices=torch.arange(16))
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "scores")
    assert torch.equal(before["scores"].isnan(), after["scores"].isnan())
    assert (m.kept_fraction, m.threshold, m.estimated_noise_rate) == stats
    a1, p, a2, n = m(torch.randn(16, 4), lab, indices=torch.arange(16))  # later calls work
    assert 0 <= m.threshold <= 1 and len(a2) > 0


def test_a_fresh_miner_on_a_nan_batch_keeps_an_empty_bank():
    m = PRISMMiner(num_samples=16, num_classes=5, warmup=0.0)
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((16, 4), float("nan")), torch.arange(16) % 5, indices=torch.arange(16))
    assert not m.filled.any()


@pytest.mark.parametrize("labels, error", [(torch.tensor([0, -1]), ValueError),
                                           (torch.tensor([0.0, 1.0]), TypeError)])
def test_negative_or_float_labels_are_rejected(labels, error):
    with pytest.raises(error, match="labels"):
        PRISMMiner(num_samples=4, num_classes=2)(torch.randn(2, 3), labels,
                                                 indices=torch.tensor([0, 1]))


def test_state_dict_after_training_loads_into_a_fresh_miner_and_continues_identically():
    x, y = _clusters(spread=1.0)
    idx = torch.arange(len(x))
    trained = PRISMMiner(num_samples=len(x), num_classes=3, warmup=0.0)
    trained(x, y, indices=idx)
    trained(x + 0.1, y, indices=idx)
    fresh = PRISMMiner(num_samples=len(x), num_classes=3, warmup=0.0)
    fresh.load_state_dict(trained.state_dict())
    x2 = x + 0.3 * torch.randn_like(x)
    for a, b in zip(trained(x2, y, indices=idx), fresh(x2, y, indices=idx), strict=True):
        assert torch.equal(a, b)
    assert trained.threshold == fresh.threshold
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, equal_nan=True)
