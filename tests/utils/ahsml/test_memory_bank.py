"""The one embedding memory bank: writes, class sums, exact pair statistics, save/load."""

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.utils import hyperbolic as hyp
from noisy_pml.utils.ahsml.memory_bank import EmbeddingMemoryBank
from noisy_pml.utils.ahsml.statistics import class_pair_means


def ball_points(n, d=5, dtype=torch.float64, generator=None):
    u = torch.randn(n, d, generator=generator, dtype=dtype)
    return hyp.project(hyp.exp0(0.8 * torch.nn.functional.normalize(u, dim=1), 1.0), 1.0)


def bank_brute_force(emb, labels, filled, sim, classes):
    """Mean of ``sim`` over the pairs (i != j, both filled, labels a and b), one mask per class
    pair: (intra, inter) for ``classes``."""
    s = sim(emb).double()
    distinct = ~torch.eye(len(labels), dtype=torch.bool) & filled[:, None] & filled[None, :]
    k = len(classes)
    intra = torch.full((k,), float("nan"), dtype=torch.float64)
    inter = torch.full((k, k), float("nan"), dtype=torch.float64)
    for p, a in enumerate(classes.tolist()):
        for q, b in enumerate(classes.tolist()):
            pairs = distinct & (labels == a)[:, None] & (labels == b)[None, :]
            if pairs.any():
                inter[p, q] = s[pairs].mean()
        intra[p] = inter[p, p]
    return intra, inter


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_incremental_bank_statistics_equal_brute_force_pair_averages(dtype):
    # random writes (repeated indices in a batch, label changes, new classes, singletons),
    # synced at irregular intervals, against pair loops over a shadow copy of the bank
    g = torch.Generator().manual_seed(0)
    n = 40
    sim = PoincareSimilarity()
    bank = EmbeddingMemoryBank(n, track_changes=True)
    shadow_x = torch.zeros(n, 5, dtype=dtype)
    shadow_y = torch.full((n,), -1)
    rebuilt = []
    for step in range(24):
        m = int(torch.randint(1, 9, (), generator=g))
        idx = torch.randint(0, n, (m,), generator=g)
        idx[-1] = idx[0]  # a repeated index: the last write wins, in both copies
        lab = torch.randint(0, 6 + step // 4, (m,), generator=g)
        x = ball_points(m, dtype=dtype, generator=g)
        bank.update(x, lab, idx)
        for i, (row, y) in enumerate(zip(idx.tolist(), lab.tolist(), strict=True)):
            shadow_x[row], shadow_y[row] = x[i], y
        if step % 3 == 1:
            continue  # several writes between syncs
        rebuilt.append(bank._rebuild)
        bank.sync_statistics(sim)
        classes = torch.arange(0, 13)  # includes classes with 0 and 1 members
        intra, inter, counts = bank.pair_statistics(classes)
        b_intra, b_inter = bank_brute_force(shadow_x, shadow_y, shadow_y >= 0, sim, classes)
        tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
        torch.testing.assert_close(intra, b_intra, equal_nan=True, **tol)
        torch.testing.assert_close(inter, b_inter, equal_nan=True, **tol)
        assert counts.tolist() == [int((shadow_y == c).sum()) for c in range(13)]
        assert torch.isnan(intra[counts < 2]).all()
    assert rebuilt[0] and not any(rebuilt[1:])  # the exactness above is the incremental path


def test_bank_statistics_are_rebuilt_when_the_similarity_changes():
    g = torch.Generator().manual_seed(1)
    bank = EmbeddingMemoryBank(30, track_changes=True)
    bank.update(ball_points(30, generator=g), torch.arange(30) % 4, torch.arange(30))
    bank.sync_statistics(PoincareSimilarity(c=1.0))
    bank.update(ball_points(5, generator=g), torch.arange(5) % 4, torch.arange(5))
    sim = PoincareSimilarity(c=0.5)  # e.g. a learnable curvature moved
    bank.sync_statistics(sim)
    classes = torch.arange(4)
    intra, inter, _ = bank.pair_statistics(classes)
    ref_intra, ref_inter, _ = class_pair_means(sim(bank.embeddings), bank.labels, classes)
    torch.testing.assert_close(intra, ref_intra)
    torch.testing.assert_close(inter, ref_inter)


def test_class_sums_follow_every_write_and_give_exact_cosine_statistics():
    g = torch.Generator().manual_seed(4)
    n = 30
    bank = EmbeddingMemoryBank(n)
    shadow_x, shadow_y = torch.zeros(n, 4, dtype=torch.float64), torch.full((n,), -1)
    for _ in range(15):
        idx = torch.randint(0, n, (6,), generator=g)
        idx[-1] = idx[0]  # repeated index: the last row wins
        lab = torch.randint(0, 5, (6,), generator=g)
        x = torch.randn(6, 4, generator=g, dtype=torch.float64)
        bank.update(x, lab, idx)
        for i, (row, y) in enumerate(zip(idx.tolist(), lab.tolist(), strict=True)):
            shadow_x[row], shadow_y[row] = x[i], y
    filled = shadow_y >= 0
    unit = torch.nn.functional.normalize(shadow_x[filled], dim=1)
    classes = torch.arange(6)  # class 5 never seen
    sums, counts = bank.class_sums_of(classes)
    onehot = (shadow_y[filled][:, None] == classes).double()
    torch.testing.assert_close(sums, onehot.T @ unit)
    assert counts.tolist() == onehot.sum(0).tolist()
    from noisy_pml.utils.ahsml.statistics import cosine_statistics_from_sums

    intra, inter, _ = cosine_statistics_from_sums(sums, counts)
    ref_intra, ref_inter, _ = class_pair_means(
        CosineSimilarity()(shadow_x[filled]), shadow_y[filled], classes
    )
    torch.testing.assert_close(intra, ref_intra, equal_nan=True)
    torch.testing.assert_close(inter, ref_inter, equal_nan=True)


def test_a_nan_batch_is_rejected_before_the_bank_changes():
    bank = EmbeddingMemoryBank(8)
    bank.update(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.arange(4))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    bad = torch.randn(4, 3)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="embeddings contains 1 NaN or infinite"):
        bank.update(bad, torch.tensor([0, 1, 0, 1]), torch.arange(4, 8))
    with pytest.raises(ValueError, match="indices must lie in 0..7"):
        bank.update(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([7, 8]))
    with pytest.raises(ValueError, match="memory bank holds 3"):
        bank.update(torch.randn(2, 5), torch.tensor([0, 1]), torch.tensor([5, 6]))
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())


def test_a_trained_bank_loads_into_a_fresh_one_and_continues_identically():
    g = torch.Generator().manual_seed(5)
    bank = EmbeddingMemoryBank(20, track_changes=True)
    bank.update(ball_points(12, generator=g), torch.arange(12) % 3, torch.arange(12))
    fresh = EmbeddingMemoryBank(20, track_changes=True)
    fresh.load_state_dict(bank.state_dict())
    x, lab, idx = ball_points(5, generator=g), torch.tensor([0, 1, 2, 3, 1]), torch.arange(8, 13)
    sim = PoincareSimilarity()
    for b in (bank, fresh):
        b.update(x, lab, idx)
        b.sync_statistics(sim)
    for a, b in zip(bank.pair_statistics(torch.arange(4)), fresh.pair_statistics(torch.arange(4)),
                    strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)
    for k, v in bank.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
