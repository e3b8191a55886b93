"""MS*: reduction to PML's MultiSimilarityLoss, a literal three-term reference, the consistency
term, units, save/load, collapse statistics and input checks."""

import copy
import math

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import MultiSimilarityLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner
from pytorch_metric_learning.reducers import SumReducer

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.losses import MultiSimilarityStarLoss
from noisy_pml.utils import hyperbolic as hyp
from noisy_pml.utils.ahsml import COLLAPSE_STATISTICS, AdaptiveThresholds


def batch(views=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3]).repeat(views)
    u = torch.randn(len(labels), 6, generator=g, dtype=dtype)
    return hyp.exp0(torch.nn.functional.normalize(u, dim=1), 1.0), labels


def test_defaults_are_cosine_units_and_the_measured_choices():
    loss = MultiSimilarityStarLoss(num_samples=10)
    assert isinstance(loss.distance, CosineSimilarity)
    assert (loss.alpha, loss.beta, loss.base, loss.rho) == (2, 50, 0.5, 20)
    thr = loss.thresholds
    assert (thr.augmentation, thr.negative, thr.scope, thr.consistency_warmup) == (
        "class", "literal", "memory", 1.0)
    assert loss.consistency_hinge and loss.mining_epsilon is None


def test_reduces_exactly_to_pml_multi_similarity_in_float64():
    x, labels = batch(views=1)
    star = MultiSimilarityStarLoss(alpha=2, beta=40, base=0.3, delta=0.0, scope="batch", views=1)
    ms = MultiSimilarityLoss(alpha=2, beta=40, base=0.3)
    torch.testing.assert_close(star(x, labels), ms(x, labels), rtol=1e-13, atol=0)
    mined = MultiSimilarityMiner(epsilon=0.1)(x, labels)
    torch.testing.assert_close(star(x, labels, mined), ms(x, labels, mined), rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1.0, 0.1])
def test_poincare_reduces_to_multi_similarity_with_the_mapped_base(c, dtype):
    x, labels = batch(views=1, dtype=dtype)
    dist = PoincareSimilarity(c=c)
    star = MultiSimilarityStarLoss(alpha=2, beta=40, base=0.3, delta=0.0, scope="batch", views=1,
                                   distance=dist)
    ms = MultiSimilarityLoss(alpha=2, beta=40, base=float(dist.from_cosine(0.3)),
                             distance=PoincareSimilarity(c=c))
    out = star(hyp.exp0(torch.nn.functional.normalize(x, dim=1), c), labels)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ms(hyp.exp0(torch.nn.functional.normalize(x, dim=1), c),
                                       labels))


def reference(labels, alpha, beta, rho, res, sim, hinge):
    """Literal per-anchor three-term MS* with Python loops."""
    total = 0.0
    n = len(labels)
    for i in range(n):
        terms = []
        for mask, sign, scale in ((res.aug_mask, -1, rho), (res.pos_mask, -1, alpha),
                                  (res.neg_mask, 1, beta)):
            s = 0.0
            for j in range(n):
                if not mask[i, j]:
                    continue
                if mask is res.aug_mask and hinge and sim[i, j] >= res.thresholds[i, j]:
                    continue  # the consistency term does not pull views that agree
                s += math.exp(sign * scale * (sim[i, j] - res.thresholds[i, j]).item())
            terms.append(math.log(1 + s) / scale)
        total += sum(terms)
    return total / n


@pytest.mark.parametrize("hinge", [True, False])
@pytest.mark.parametrize("negative", ["literal", "divergence"])
@pytest.mark.parametrize("augmentation", ["class", "min"])
def test_equals_literal_three_term_reference_with_augmentation_pairs(negative, augmentation,
                                                                     hinge):
    x, labels = batch()
    loss = MultiSimilarityStarLoss(alpha=2, beta=10, rho=7, base=0.5, negative=negative,
                                   augmentation=augmentation, scope="batch",
                                   consistency_hinge=hinge)
    res = AdaptiveThresholds(0.5, 0.2, negative, augmentation, "batch")(loss.distance, x, labels)
    expected = reference(labels, 2, 10, 7, res, loss.distance(x), hinge)
    assert loss(x, labels).item() == pytest.approx(expected, rel=1e-10)
    assert res.aug_mask.any()


def consistency_term(loss, x, labels):
    """The loss minus the same loss with the consistency term off."""
    off = copy.deepcopy(loss)
    off.thresholds.consistency = False
    return loss(x, labels) - off(x, labels)


def test_consistency_term_stops_pulling_once_views_agree():
    x, labels = batch()
    loss = MultiSimilarityStarLoss(scope="batch")  # M_a = the class's mean similarity
    # views far apart: the consistency term pulls them together
    apart = x.clone().requires_grad_()
    consistency_term(loss, apart, labels).backward()
    assert apart.grad.abs().sum() > 0
    # second view = first view moved a little: every augmentation pair is above M_a
    close = torch.cat([x[:8], x[:8] + 0.3 * x[8:]]).requires_grad_()
    res = loss.thresholds(loss.distance, close.detach(), labels)
    sim = loss.distance(close.detach())
    assert (sim[res.aug_mask] > res.thresholds[res.aug_mask]).all()
    term = consistency_term(loss, close, labels)
    term.backward()
    assert term.item() == 0 and close.grad.abs().max() < 1e-15  # round-off of the difference
    assert loss.consistency_active_fraction == 0.0
    # the previous design (alpha = 2 as scale, M_a = lowest positive similarity of the batch,
    # no hinge) keeps pulling views that already agree: the collapse of issue #10
    soft = MultiSimilarityStarLoss(scope="batch", rho=2, augmentation="min",
                                   consistency_hinge=False)
    close.grad = None
    consistency_term(soft, close, labels).backward()
    assert close.grad.abs().max() > 1e-6


def test_consistency_warmup_then_the_term_switches_on():
    x, labels = batch()
    loss = MultiSimilarityStarLoss(num_samples=16, consistency_warmup=1.0)
    no_aug = MultiSimilarityStarLoss(num_samples=16, consistency=False)
    values = []
    for step in range(3):
        for m in (loss, no_aug):
            m.set_batch_info(indices=torch.arange(8) + 8 * (step % 2))
        values.append((loss(x, labels).item(), no_aug(x, labels).item(),
                       loss.consistency_active_fraction))
    assert values[0][0] == values[0][1] and values[1][0] == values[1][1]  # warming up
    assert values[2][0] > values[2][1] and values[2][2] > 0  # 16 images seen: on


def test_rho_is_the_consistency_scale_only():
    x, labels = batch()
    a = MultiSimilarityStarLoss(scope="batch", rho=5)(x, labels)
    b = MultiSimilarityStarLoss(scope="batch", rho=50)(x, labels)
    c = MultiSimilarityStarLoss(scope="batch", rho=5, consistency=False)(x, labels)
    d = MultiSimilarityStarLoss(scope="batch", rho=50, consistency=False)(x, labels)
    assert a != b and c == d


def test_collapse_statistics_are_recorded():
    x, labels = batch()
    loss = MultiSimilarityStarLoss(scope="batch", collect_stats=True)
    loss(x, labels)
    assert set(COLLAPSE_STATISTICS) <= set(loss._record_these_stats)
    sim = CosineSimilarity()(x)
    res = loss.thresholds(loss.distance, x, labels)
    assert loss.mean_negative_similarity == pytest.approx(sim[res.neg_mask].mean().item())
    assert loss.mean_augmentation_similarity == pytest.approx(sim[res.aug_mask].mean().item())
    u = torch.nn.functional.normalize(x, dim=1)
    assert loss.embedding_spread == pytest.approx(1 - u.mean(0).pow(2).sum().item())
    collapsed = x[:1].expand_as(x) + 1e-6 * x
    loss(collapsed, labels)
    assert loss.embedding_spread < 1e-6 and loss.mean_negative_similarity > 0.999


def test_gradients_are_finite_at_the_edge_of_the_ball():
    x, labels = batch(dtype=torch.float32)
    for c in (1.0, 0.1):
        edge = hyp.project(torch.nn.functional.normalize(x, dim=1) * 10, c)  # |x| = (1-eps)/sqrt c
        edge = edge.clone().requires_grad_()
        loss = MultiSimilarityStarLoss(scope="batch", distance=PoincareSimilarity(c=c))
        loss(edge, labels).backward()
        assert torch.isfinite(edge.grad).all() and edge.grad.abs().sum() > 0


def test_reducer_and_memory_scope():
    x, labels = batch()
    loss = MultiSimilarityStarLoss(scope="memory", num_samples=50, reducer=SumReducer())
    loss.set_batch_info(indices=torch.arange(20, 28))
    total = loss(x, labels)
    mean = MultiSimilarityStarLoss(scope="memory", num_samples=50)
    mean.set_batch_info(sample_indices=torch.arange(20, 28))  # deprecated alias
    assert total.item() == pytest.approx(16 * mean(x, labels).item())


def test_mining_epsilon_large_keeps_every_pair():
    x, labels = batch()
    keep = labels < 2  # every anchor has a positive (MS mining drops anchors without one)
    x, labels = x[keep], labels[keep]
    plain = MultiSimilarityStarLoss(scope="batch")(x, labels)
    mined = MultiSimilarityStarLoss(scope="batch", mining_epsilon=10.0)(x, labels)
    strict = MultiSimilarityStarLoss(scope="batch", mining_epsilon=0.0)(x, labels)
    torch.testing.assert_close(plain, mined)
    assert strict < plain


def test_mining_epsilon_is_in_cosine_units_whatever_the_curvature():
    x, labels = batch(views=1)
    cos = MultiSimilarityStarLoss(scope="batch", views=1, mining_epsilon=0.1, delta=0)
    for c in (1.0, 0.1):
        hyp_loss = MultiSimilarityStarLoss(scope="batch", views=1, mining_epsilon=0.1, delta=0,
                                           distance=PoincareSimilarity(c=c))
        xc = hyp.exp0(torch.nn.functional.normalize(x, dim=1), c)
        kept = []
        for loss, emb in ((cos, x), (hyp_loss, xc)):
            sim = loss.distance(emb)
            res = loss.thresholds(loss.distance, emb, labels)
            from noisy_pml.utils.ahsml import to_cosine_units

            pos, neg = loss._mine(to_cosine_units(loss.distance, sim), res.pos_mask, res.neg_mask)
            kept.append((pos, neg))
        assert torch.equal(kept[0][0], kept[1][0]) and torch.equal(kept[0][1], kept[1][1])


@pytest.mark.parametrize("distance", [CosineSimilarity, PoincareSimilarity])
def test_state_dict_after_training_loads_into_a_fresh_loss_and_continues_identically(distance):
    g = torch.Generator().manual_seed(0)
    x, labels = batch()

    def make():
        return MultiSimilarityStarLoss(num_samples=40, consistency_warmup=0.5,
                                       distance=distance())

    trained = make()
    for step in range(3):
        trained.set_batch_info(indices=torch.randperm(40, generator=g)[:8])
        trained(batch(seed=step + 1)[0], labels)
    fresh = make()
    fresh.load_state_dict(trained.state_dict())
    for _ in range(2):
        idx = torch.randperm(40, generator=g)[:8]
        trained.set_batch_info(indices=idx)
        fresh.set_batch_info(indices=idx)
        torch.testing.assert_close(fresh(x, labels), trained(x, labels))
    assert int(fresh.thresholds.images_seen) == int(trained.thresholds.images_seen) == 40


def test_empty_batch_returns_a_zero_loss_with_a_gradient():
    x = torch.zeros(0, 6, requires_grad=True)
    for scope in ("batch", "memory"):
        out = MultiSimilarityStarLoss(scope=scope, num_samples=4)(x, torch.zeros(0).long())
        assert out.item() == 0 and out.requires_grad
        out.backward()


def test_bad_input_raises():
    x, labels = batch()
    with pytest.raises(ValueError, match="set_batch_info"):
        MultiSimilarityStarLoss(num_samples=10)(x, labels)
    with pytest.raises(ValueError, match="views=2"):
        MultiSimilarityStarLoss(scope="batch")(x[:15], labels[:15])
    with pytest.raises(ValueError, match="ref_emb"):
        MultiSimilarityStarLoss(scope="batch")(x, labels, ref_emb=x.clone(), ref_labels=labels)
    with pytest.raises(ValueError, match="outside the Poincare ball"):
        MultiSimilarityStarLoss(scope="batch", distance=PoincareSimilarity())(x * 2, labels)
    for name in ("alpha", "beta", "rho"):
        for value in (0, -1, float("nan")):
            with pytest.raises(ValueError, match=f"{name} must be finite and > 0"):
                MultiSimilarityStarLoss(scope="batch", **{name: value})
    with pytest.raises(ValueError, match="mining_epsilon"):
        MultiSimilarityStarLoss(scope="batch", mining_epsilon=-0.1)


@pytest.mark.parametrize("scope", ["batch", "memory"])
def test_nan_embeddings_and_bad_labels_are_rejected_before_any_state_changes(scope):
    x, labels = batch()
    loss = MultiSimilarityStarLoss(scope=scope, num_samples=8)
    loss.set_batch_info(indices=torch.arange(8))
    loss(x, labels)
    before = copy.deepcopy(loss.state_dict())
    bad = x.clone()
    bad[0, 0] = float("nan")
    for emb, lab, match in ((bad, labels, "NaN"), (x, labels - 1, ">= 0"),
                            (x, labels.float(), "integer")):
        loss.set_batch_info(indices=torch.arange(8))
        with pytest.raises((ValueError, TypeError), match=match):
            loss(emb, lab)
        assert all(torch.equal(v, loss.state_dict()[k]) for k, v in before.items())
    loss.set_batch_info(indices=torch.arange(8))
    assert torch.isfinite(loss(x, labels))
