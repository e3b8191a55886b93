"""AHSML per-pair thresholds: ranges, readings, units, scopes, consistency, errors."""


import pytest
import torch
from ahsml_reference import ball_batch, brute_stats
from pytorch_metric_learning.distances import CosineSimilarity

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.utils import hyperbolic as hyp
from noisy_pml.utils.ahsml import (
    AdaptiveThresholds,
    EmbeddingMemoryBank,
    class_pair_means,
    instance_ids_from_views,
    pair_masks,
)


def ball_points(n, d=5, dtype=torch.float64, generator=None):
    u = torch.randn(n, d, generator=generator, dtype=dtype)
    return hyp.project(hyp.exp0(0.8 * torch.nn.functional.normalize(u, dim=1), 1.0), 1.0)


@pytest.mark.parametrize("negative", ["literal", "divergence"])
def test_thresholds_stay_in_their_ranges_and_follow_the_masks(negative):
    x, labels = ball_batch()
    thr = AdaptiveThresholds(gamma=0.5, delta=0.2, negative=negative, scope="batch")
    res = thr(CosineSimilarity(), x, labels)
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
    lit = AdaptiveThresholds(negative="literal", scope="batch")(CosineSimilarity(), x, labels)
    div = AdaptiveThresholds(negative="divergence", scope="batch")(CosineSimilarity(), x, labels)
    n = lit.neg_mask
    # literal: gamma - S^ ; divergence: gamma - (delta - S^)  =>  sum = 2 gamma - delta
    torch.testing.assert_close(lit.thresholds[n] + div.thresholds[n],
                               torch.full_like(lit.thresholds[n], 0.8))
    # the most similar class pair gets the lowest literal threshold
    sim = CosineSimilarity()(x)
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
                gamma = PoincareSimilarity().from_cosine(0.5)  # gamma in the loss's units
                expected = pick(sim[same]) if same.any() else gamma
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
    thr.set_batch_info(indices=torch.arange(8))
    thr(dist, x, labels)
    x2, _ = ball_batch(seed=1)
    thr.set_batch_info(indices=torch.arange(10, 18))
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
            expected = dist.from_cosine(0.5 + 0.2 * (intra[k] - intra.min()) / span)
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
    with pytest.raises(ValueError, match="set_batch_info"):
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
    thr.set_batch_info(indices=torch.arange(5))
    with pytest.raises(ValueError, match="indices has 5 entries"):
        thr(PoincareSimilarity(), x, labels)


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
            thr.set_batch_info(indices=idx)
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
        thr.set_batch_info(indices=torch.arange(6) + 6 * step)
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
    thr.set_batch_info(indices=torch.arange(30, 36))
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


def sphere_pair(cos: float, c: float, d: int = 6):
    """Two points of the authors' head (exp0 of unit vectors) whose directions have cosine
    `cos`."""
    e1, e2 = torch.eye(d, dtype=torch.float64)[:2]
    u = torch.stack([e1, cos * e1 + (1 - cos**2) ** 0.5 * e2])
    return hyp.exp0(u, c)


@pytest.mark.parametrize("c", [1.0, 0.3, 0.1, None])
def test_a_threshold_of_one_half_asks_for_cosine_one_half_at_every_curvature(c):
    # gamma is in cosine units: on label pairs (delta = 0) T is the similarity of two points
    # of the authors' head whose cosine is exactly 0.5, whatever the curvature
    dist = CosineSimilarity() if c is None else PoincareSimilarity(c=c)
    x, labels = ball_batch()
    res = AdaptiveThresholds(gamma=0.5, delta=0.0, scope="batch")(dist, x, labels)
    at_half = dist(sphere_pair(0.5, 1.0 if c is None else c))[0, 1]
    values = res.thresholds[res.pos_mask | res.neg_mask]
    torch.testing.assert_close(values, at_half.expand_as(values))
    # and a pair of cosine 0.6 is above it, one of cosine 0.4 below it
    above = dist(sphere_pair(0.6, 1.0 if c is None else c))[0, 1]
    below = dist(sphere_pair(0.4, 1.0 if c is None else c))[0, 1]
    assert below < at_half < above


def test_poincare_thresholds_are_the_cosine_thresholds_mapped_through_c():
    x, labels = ball_batch()
    dist = PoincareSimilarity(c=0.3)
    thr = AdaptiveThresholds(scope="batch", augmentation="min")
    cos_t = thr(CosineSimilarity(), x, labels)  # the statistics differ, the bands do not
    hyp_t = thr(dist, x, labels)
    label_pairs = hyp_t.pos_mask | hyp_t.neg_mask
    back = dist.to_cosine(hyp_t.thresholds[label_pairs])
    assert back.min() >= 0.3 - 1e-9 and back.max() <= 0.7 + 1e-9
    assert cos_t.thresholds[label_pairs].min() >= 0.3 - 1e-9


@pytest.mark.parametrize("scope", ["batch", "memory"])
def test_class_augmentation_threshold_is_the_class_mean_similarity(scope):
    x, labels = ball_batch()
    dist = CosineSimilarity()
    thr = AdaptiveThresholds(scope=scope, num_samples=8 if scope == "memory" else None)
    thr.set_batch_info(indices=torch.arange(8))
    res = thr(dist, x, labels)
    inst = instance_ids_from_views(16, 2)
    if scope == "batch":
        same = inst[:, None] == inst[None, :]
        intra, _, _ = class_pair_means(dist(x), labels, labels.unique(), exclude=same)
    else:  # the bank holds view 1 of each image
        intra, _, _ = class_pair_means(dist(x[:8]), labels[:8], labels.unique())
    for i, j in res.aug_mask.nonzero().tolist():
        k = int((labels.unique() == labels[i]).nonzero())
        expected = intra[k] if torch.isfinite(intra[k]) else torch.tensor(0.5, dtype=x.dtype)
        assert res.thresholds[i, j].item() == pytest.approx(expected.item())


def test_consistency_warms_up_over_the_given_epochs_of_training_images():
    x, labels = ball_batch()
    thr = AdaptiveThresholds(scope="memory", num_samples=16, consistency_warmup=1.5)
    seen = []
    for step in range(4):
        thr.set_batch_info(indices=torch.arange(8) + 8 * (step % 2))
        seen.append(thr(CosineSimilarity(), x, labels).consistency_on)
    assert seen == [False, False, False, True]  # on once 24 = 1.5 x 16 images were seen
    assert int(thr.images_seen) == 32
    thr.eval()  # evaluation calls do not count
    thr.set_batch_info(indices=torch.arange(8))
    thr(CosineSimilarity(), x, labels)
    assert int(thr.images_seen) == 32
    assert AdaptiveThresholds(scope="batch").consistency_warmup == 0
    assert AdaptiveThresholds(num_samples=10).consistency_warmup == 1
    with pytest.raises(ValueError, match="consistency_warmup"):
        AdaptiveThresholds(scope="batch", consistency_warmup=2)


def test_consistency_off_leaves_the_views_of_one_image_out_of_every_mask():
    x, labels = ball_batch()
    res = AdaptiveThresholds(scope="batch", consistency=False)(CosineSimilarity(), x, labels)
    inst = instance_ids_from_views(16, 2)
    same = (inst[:, None] == inst[None, :]) & ~torch.eye(16, dtype=torch.bool)
    assert not res.aug_mask.any() and not res.consistency_on
    assert not ((res.pos_mask | res.neg_mask) & same).any()


def test_hinge_keeps_only_augmentation_pairs_below_their_threshold():
    x, labels = ball_batch()
    dist = CosineSimilarity()
    res = AdaptiveThresholds(scope="batch")(dist, x, labels)
    sim = dist(x)
    active = res.active_augmentation(sim, hinge=True)
    assert torch.equal(active, res.aug_mask & (sim < res.thresholds))
    assert torch.equal(res.active_augmentation(sim, hinge=False), res.aug_mask)


def test_sample_indices_is_a_deprecated_alias_of_indices():
    x, labels = ball_batch()
    a = AdaptiveThresholds(num_samples=8, consistency_warmup=0)
    b = AdaptiveThresholds(num_samples=8, consistency_warmup=0)
    a.set_batch_info(indices=torch.arange(8))
    b.set_batch_info(sample_indices=torch.arange(8))
    torch.testing.assert_close(a(CosineSimilarity(), x, labels).thresholds,
                               b(CosineSimilarity(), x, labels).thresholds)
    with pytest.raises(ValueError, match="not both"):
        a.set_batch_info(indices=torch.arange(8), sample_indices=torch.arange(8))


@pytest.mark.parametrize("scope", ["batch", "memory"])
def test_nan_embeddings_and_bad_labels_leave_every_state_untouched(scope):
    x, labels = ball_batch()
    thr = AdaptiveThresholds(scope=scope, num_samples=8)
    thr.set_batch_info(indices=torch.arange(8))
    thr(CosineSimilarity(), x, labels)
    before = {k: v.clone() for k, v in thr.state_dict().items()}
    bad = x.clone()
    bad[3, 0] = float("nan")
    for emb, lab, match in ((bad, labels, "NaN"), (x, labels - 1, ">= 0"),
                            (x, labels.double(), "integer")):
        thr.set_batch_info(indices=torch.arange(8))
        with pytest.raises((ValueError, TypeError), match=match):
            thr(CosineSimilarity(), emb, lab)
        after = thr.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    thr.set_batch_info(indices=torch.arange(8))
    assert torch.isfinite(thr(CosineSimilarity(), x, labels).thresholds).all()


def test_bank_normalization_does_not_depend_on_the_batch_company():
    # pair (0, 1) in two batches with different other classes: with normalization="bank" its
    # negative threshold is the same; with "batch" the min-max over the batch's pairs moves it
    g = torch.Generator().manual_seed(7)
    bank_x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    bank_y = torch.arange(40) % 5
    out = {}
    for norm in ("bank", "batch"):
        thr = AdaptiveThresholds(num_samples=40, normalization=norm, consistency=False)
        thr.bank.update(bank_x, bank_y, torch.arange(40))
        values = []
        for others in ((2, 3), (3, 4)):
            rows = torch.cat([torch.tensor([0, 5, 1, 6]), torch.tensor([others[0], others[1]])])
            x, y = bank_x[rows].repeat(2, 1), bank_y[rows].repeat(2)
            thr.set_batch_info(indices=rows)
            res = thr(CosineSimilarity(), x, y)
            values.append(res.thresholds[0, 2].item())  # a class-0 row against a class-1 row
        out[norm] = values
    assert out["bank"][0] == pytest.approx(out["bank"][1])
    assert out["batch"][0] != pytest.approx(out["batch"][1])
    # and the bank value is the literal threshold with the min-max over every bank class pair
    _, inter, _ = class_pair_means(CosineSimilarity()(bank_x), bank_y, torch.arange(5))
    off = ~torch.eye(5, dtype=torch.bool)
    lo, hi = inter[off].min(), inter[off].max()
    assert out["bank"][0] == pytest.approx((0.5 - 0.2 * (inter[0, 1] - lo) / (hi - lo)).item())
    with pytest.raises(ValueError, match="normalization='bank' needs scope='memory'"):
        AdaptiveThresholds(scope="batch", normalization="bank")


def test_bank_normalization_with_poincare_uses_every_bank_class_pair():
    g = torch.Generator().manual_seed(8)
    dist = PoincareSimilarity()
    bank_x, bank_y = ball_points(40, generator=g), torch.arange(40) % 5
    thr = AdaptiveThresholds(num_samples=40, normalization="bank", consistency=False)
    thr.bank.update(bank_x, bank_y, torch.arange(40))
    rows = torch.tensor([0, 5, 1, 6])
    thr.set_batch_info(indices=rows)
    res = thr(dist, bank_x[rows].repeat(2, 1), bank_y[rows].repeat(2))
    _, inter, _ = class_pair_means(dist(bank_x), bank_y, torch.arange(5))
    off = ~torch.eye(5, dtype=torch.bool)
    lo, hi = inter[off].min(), inter[off].max()
    expected = dist.from_cosine(0.5 - 0.2 * (inter[0, 1] - lo) / (hi - lo))
    assert res.thresholds[0, 2].item() == pytest.approx(expected.item())
    direct = AdaptiveThresholds(num_samples=40, normalization="bank", memory_statistics="direct")
    direct.set_batch_info(indices=rows)
    with pytest.raises(ValueError, match="memory_statistics='incremental'"):
        direct(dist, bank_x[rows].repeat(2, 1), bank_y[rows].repeat(2))
    assert not direct.bank.filled.any()  # refused before the bank changed
