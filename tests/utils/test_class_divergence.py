"""AHSML class statistics and per-pair thresholds against brute-force pair loops."""

import itertools

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.utils import hyperbolic as hyp
from noisy_pml.utils.class_divergence import (
    AdaptiveThresholds,
    EmbeddingMemoryBank,
    class_pair_means,
    cosine_class_means,
    instance_ids_from_views,
    pair_masks,
)


def ball_batch(n_images=8, views=2, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = hyp.exp0(torch.nn.functional.normalize(torch.randn(n_images * views, d, generator=g,
                                                            dtype=torch.float64), dim=1), 1.0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3][:n_images]).repeat(views)
    return x, labels


def brute_stats(sim, labels, inst):
    classes = labels.unique().tolist()
    intra, inter = {}, {}
    for a in classes:
        vals = [sim[i, j] for i, j in itertools.permutations(range(len(labels)), 2)
                if labels[i] == a and labels[j] == a and inst[i] != inst[j]]
        intra[a] = torch.stack(vals).mean() if vals else None
        for b in classes:
            if a != b:
                inter[a, b] = torch.stack([sim[i, j] for i in range(len(labels))
                                           for j in range(len(labels))
                                           if labels[i] == a and labels[j] == b]).mean()
    return intra, inter


def test_class_pair_means_equal_brute_force_pair_averages():
    x, labels = ball_batch()
    inst = instance_ids_from_views(len(labels), 2)
    sim = PoincareSimilarity()(x)
    classes = labels.unique()
    same = inst[:, None] == inst[None, :]
    intra, inter, n = class_pair_means(sim, labels, classes, exclude=same)
    b_intra, b_inter = brute_stats(sim, labels, inst)
    for k, a in enumerate(classes.tolist()):
        if b_intra[a] is None:  # class 3 has one image: no distinct-image pair
            assert torch.isnan(intra[k])
        else:
            torch.testing.assert_close(intra[k], b_intra[a])
        for l, b in enumerate(classes.tolist()):
            if a != b:
                torch.testing.assert_close(inter[k, l], b_inter[a, b])
    assert n.tolist() == [6, 4, 4, 2]


def test_cosine_closed_form_equals_pairwise_means():
    x = torch.randn(30, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,))
    classes = labels.unique()
    closed = cosine_class_means(x, labels, classes)
    direct = class_pair_means(CosineSimilarity()(x), labels, classes)
    for a, b in zip(closed, direct, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("negative", ["literal", "divergence"])
def test_thresholds_stay_in_their_ranges_and_follow_the_masks(negative):
    x, labels = ball_batch()
    thr = AdaptiveThresholds(gamma=0.5, delta=0.2, negative=negative, scope="batch")
    res = thr(PoincareSimilarity(), x, labels)
    t = res.thresholds
    assert ((t[res.pos_mask] >= 0.5 - 1e-12) & (t[res.pos_mask] <= 0.7 + 1e-12)).all()
    assert ((t[res.neg_mask] >= 0.3 - 1e-12) & (t[res.neg_mask] <= 0.5 + 1e-12)).all()
    # the extremes of the min-max map are reached
    assert t[res.neg_mask].min() == pytest.approx(0.3)
    assert t[res.neg_mask].max() == pytest.approx(0.5)
    a_mask, p_mask, n_mask = pair_masks(labels, instance_ids_from_views(16, 2))
    assert torch.equal(res.aug_mask, a_mask) and torch.equal(res.pos_mask, p_mask)
    assert not (res.aug_mask & res.pos_mask).any()  # views never count as label positives


def test_negative_readings_are_reflections_of_each_other():
    x, labels = ball_batch()
    lit = AdaptiveThresholds(negative="literal", scope="batch")(PoincareSimilarity(), x, labels)
    div = AdaptiveThresholds(negative="divergence", scope="batch")(PoincareSimilarity(), x, labels)
    n = lit.neg_mask
    # literal: gamma - S^ ; divergence: gamma - (delta - S^)  =>  sum = 2 gamma - delta
    torch.testing.assert_close(lit.thresholds[n] + div.thresholds[n],
                               torch.full_like(lit.thresholds[n], 0.8))
    # the most similar class pair gets the lowest literal threshold
    sim = PoincareSimilarity()(x)
    inst = instance_ids_from_views(16, 2)
    _, inter = brute_stats(sim, labels, inst)
    a, b = max(inter, key=lambda k: inter[k])
    i, j = (labels == a).nonzero()[0, 0], (labels == b).nonzero()[0, 0]
    assert lit.thresholds[i, j] == pytest.approx(0.3)


@pytest.mark.parametrize("reading", ["min", "max"])
def test_augmentation_threshold_is_extreme_same_class_similarity(reading):
    x, labels = ball_batch()
    res = AdaptiveThresholds(augmentation=reading, scope="batch")(PoincareSimilarity(), x, labels)
    sim = PoincareSimilarity()(x)
    pick = torch.min if reading == "min" else torch.max
    for i in range(16):
        for j in range(16):
            if res.aug_mask[i, j]:
                same = res.pos_mask & (labels[:, None] == labels[i])
                expected = pick(sim[same]) if same.any() else torch.tensor(0.5)
                assert res.thresholds[i, j].item() == pytest.approx(expected.item())


def test_delta_zero_gives_gamma_on_every_label_pair():
    x, labels = ball_batch()
    res = AdaptiveThresholds(gamma=0.4, delta=0.0, scope="batch")(CosineSimilarity(), x, labels)
    label_pairs = res.pos_mask | res.neg_mask
    values = res.thresholds[label_pairs]
    assert torch.equal(values, torch.full_like(values, 0.4))


def test_memory_scope_statistics_cover_the_whole_bank():
    x, labels = ball_batch()
    dist = PoincareSimilarity()
    thr = AdaptiveThresholds(scope="memory", num_samples=20, delta=0.2)
    # first batch fills indices 0..7 (view 1 is stored); second batch sees indices 10..17
    thr.set_batch_info(sample_indices=torch.arange(8))
    thr(dist, x, labels)
    x2, _ = ball_batch(seed=1)
    thr.set_batch_info(sample_indices=torch.arange(10, 18))
    res = thr(dist, x2, labels)
    bank_x, bank_y = torch.cat([x[:8], x2[:8]]), torch.cat([labels[:8], labels[:8]])
    assert torch.equal(thr.bank.embeddings[list(range(8)) + list(range(10, 18))], bank_x)
    intra, _, _ = class_pair_means(dist(bank_x), bank_y, labels.unique())
    # M_p = gamma + minmax(S_aa) over the bank: reproduce on a positive pair of each class
    span = intra.max() - intra.min()
    for k, a in enumerate(labels.unique().tolist()):
        i = (labels == a).nonzero()[0, 0]
        js = ((labels == a) & res.pos_mask[i]).nonzero()
        if len(js):
            expected = 0.5 + 0.2 * (intra[k] - intra.min()) / span
            assert res.thresholds[i, js[0, 0]].item() == pytest.approx(expected.item())


def test_bank_subsampling_caps_members_per_class():
    thr = AdaptiveThresholds(scope="memory", num_samples=40, bank_samples_per_class=3)
    x = hyp.exp0(torch.randn(40, 4, dtype=torch.float64), 1.0)
    thr.bank.update(x, torch.arange(40) % 4, torch.arange(40))
    emb, lab = thr.bank.members(torch.tensor([1, 2]), per_class=3)
    assert sorted(lab.tolist()) == [1, 1, 1, 2, 2, 2]
    rows = [int((x == e).all(1).nonzero()) for e in emb]
    assert all(r % 4 == lab_i for r, lab_i in zip(rows, lab.tolist(), strict=True))
    with pytest.raises(ValueError, match="bank_samples_per_class"):
        AdaptiveThresholds(scope="memory", num_samples=4, bank_samples_per_class=1)


def test_bad_input_raises_clear_errors():
    x, labels = ball_batch()
    with pytest.raises(ValueError, match="num_samples"):
        AdaptiveThresholds(scope="memory")
    thr = AdaptiveThresholds(scope="memory", num_samples=100)
    with pytest.raises(ValueError, match="sample_indices"):
        thr(PoincareSimilarity(), x, labels)
    batch = AdaptiveThresholds(scope="batch")
    with pytest.raises(ValueError, match="views=2"):
        batch(PoincareSimilarity(), x[:15], labels[:15])
    with pytest.raises(ValueError, match="different labels"):
        batch(PoincareSimilarity(), x, torch.cat([labels[:8], labels[:8].flip(0)]))
    with pytest.raises(ValueError, match="similarity"):
        from noisy_pml.distances import PoincareDistance

        batch(PoincareDistance(), x, labels)
    with pytest.raises(ValueError, match="negative"):
        AdaptiveThresholds(negative="reverse", scope="batch")
    thr.set_batch_info(sample_indices=torch.arange(5))
    with pytest.raises(ValueError, match="sample_indices has 5 entries"):
        thr(PoincareSimilarity(), x, labels)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("negative", ["literal", "divergence"])
def test_incremental_memory_thresholds_equal_the_direct_path(dtype, negative):
    g = torch.Generator().manual_seed(2)
    sim = PoincareSimilarity()
    fast = AdaptiveThresholds(scope="memory", num_samples=64, negative=negative)
    slow = AdaptiveThresholds(scope="memory", num_samples=64, negative=negative,
                              memory_statistics="direct")
    assert fast.memory_statistics == "incremental"
    for _ in range(6):
        labels = torch.randint(0, 5, (8,), generator=g).repeat(2)
        x = ball_points(16, dtype=dtype, generator=g)
        idx = torch.randint(0, 64, (8,), generator=g)
        for thr in (fast, slow):
            thr.set_batch_info(sample_indices=idx)
        a, b = fast(sim, x, labels), slow(sim, x, labels)
        assert a.thresholds.dtype == dtype
        tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
        torch.testing.assert_close(a.thresholds, b.thresholds, **tol)


def test_refresh_every_uses_the_statistics_of_the_last_refresh():
    g = torch.Generator().manual_seed(3)
    sim = PoincareSimilarity()
    thr = AdaptiveThresholds(scope="memory", num_samples=40, refresh_every=3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(2)
    snapshots = []
    for step in range(4):
        thr.set_batch_info(sample_indices=torch.arange(6) + 6 * step)
        thr(sim, ball_points(12, generator=g), labels)
        snapshots.append(thr.bank.pair_statistics(torch.arange(3))[1])
    # steps 1 and 2 reuse the refresh of step 0; step 3 refreshes over the 24 written rows
    torch.testing.assert_close(snapshots[1], snapshots[0], equal_nan=True)
    torch.testing.assert_close(snapshots[2], snapshots[0], equal_nan=True)
    emb, lab = thr.bank.members(torch.arange(3))
    _, expected, _ = class_pair_means(sim(emb), lab, torch.arange(3))
    torch.testing.assert_close(snapshots[3], expected)
    assert not torch.allclose(snapshots[3], snapshots[0])
    # a batch class missing from the cache forces a refresh
    thr.set_batch_info(sample_indices=torch.arange(30, 36))
    thr(sim, ball_points(12, generator=g), torch.tensor([7, 7, 8, 8, 2, 2]).repeat(2))
    assert thr.bank.statistics_cover(torch.tensor([7, 8]))


def test_memory_statistics_options_are_checked():
    with pytest.raises(ValueError, match="memory_statistics"):
        AdaptiveThresholds(num_samples=4, memory_statistics="cached")
    with pytest.raises(ValueError, match="memory_statistics='direct'"):
        AdaptiveThresholds(num_samples=4, memory_statistics="incremental",
                           bank_samples_per_class=3)
    with pytest.raises(ValueError, match="refresh_every"):
        AdaptiveThresholds(num_samples=4, refresh_every=0)
    assert AdaptiveThresholds(num_samples=4, bank_samples_per_class=3).memory_statistics == "direct"
    with pytest.raises(ValueError, match="labels must lie in >= 0"):
        EmbeddingMemoryBank(4).update(torch.zeros(2, 3), torch.tensor([0, -1]), torch.arange(2))
