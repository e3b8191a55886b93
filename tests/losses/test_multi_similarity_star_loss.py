"""MS*: reduction to PML's MultiSimilarityLoss, a literal three-term reference, dtypes, errors."""

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
from noisy_pml.utils.class_divergence import AdaptiveThresholds


def batch(views=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3]).repeat(views)
    u = torch.randn(len(labels), 6, generator=g, dtype=dtype)
    return hyp.exp0(torch.nn.functional.normalize(u, dim=1), 1.0), labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("distance", [PoincareSimilarity, CosineSimilarity])
def test_reduces_to_pml_multi_similarity_without_adaptivity(distance, dtype):
    x, labels = batch(views=1, dtype=dtype)
    star = MultiSimilarityStarLoss(alpha=2, beta=40, base=0.3, delta=0.0, scope="batch", views=1,
                                   distance=distance())
    ms = MultiSimilarityLoss(alpha=2, beta=40, base=0.3, distance=distance())
    out = star(x, labels)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ms(x, labels))
    mined = MultiSimilarityMiner(epsilon=0.1, distance=distance())(x, labels)
    torch.testing.assert_close(star(x, labels, mined), ms(x, labels, mined))


def reference(x, labels, alpha, beta, thresholds, sim):
    """Literal per-anchor three-term MS* with Python loops."""
    res = thresholds
    total = 0.0
    n = len(labels)
    for i in range(n):
        terms = []
        for mask, sign, scale in ((res.aug_mask, -1, alpha), (res.pos_mask, -1, alpha),
                                  (res.neg_mask, 1, beta)):
            s = sum(math.exp(sign * scale * (sim[i, j] - res.thresholds[i, j]).item())
                    for j in range(n) if mask[i, j])
            terms.append(math.log(1 + s) / scale)
        total += sum(terms)
    return total / n


@pytest.mark.parametrize("negative", ["literal", "divergence"])
def test_equals_literal_three_term_reference_with_augmentation_pairs(negative):
    x, labels = batch()
    loss = MultiSimilarityStarLoss(alpha=2, beta=10, base=0.5, negative=negative, scope="batch")
    res = AdaptiveThresholds(0.5, 0.2, negative, "min", "batch")(loss.distance, x, labels)
    expected = reference(x, labels, 2, 10, res, loss.distance(x))
    assert loss(x, labels).item() == pytest.approx(expected, rel=1e-10)
    assert res.aug_mask.any()


def test_gradients_are_finite_and_thresholds_carry_none():
    x, labels = batch(dtype=torch.float32)
    x = x.clone().requires_grad_()
    loss = MultiSimilarityStarLoss(scope="batch")
    loss(x, labels).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_reducer_and_memory_scope():
    x, labels = batch()
    loss = MultiSimilarityStarLoss(scope="memory", num_samples=50, reducer=SumReducer())
    loss.set_batch_info(sample_indices=torch.arange(20, 28))
    total = loss(x, labels)
    mean = MultiSimilarityStarLoss(scope="memory", num_samples=50)
    mean.set_batch_info(sample_indices=torch.arange(20, 28))
    assert total.item() == pytest.approx(16 * mean(x, labels).item())


def test_mining_epsilon_large_keeps_every_pair():
    x, labels = batch()
    plain = MultiSimilarityStarLoss(scope="batch")(x, labels)
    mined = MultiSimilarityStarLoss(scope="batch", mining_epsilon=10.0)(x, labels)
    strict = MultiSimilarityStarLoss(scope="batch", mining_epsilon=0.0)(x, labels)
    torch.testing.assert_close(plain, mined)
    assert strict < plain


def test_bad_input_raises():
    x, labels = batch()
    with pytest.raises(ValueError, match="sample_indices"):
        MultiSimilarityStarLoss(num_samples=10)(x, labels)
    with pytest.raises(ValueError, match="views=2"):
        MultiSimilarityStarLoss(scope="batch")(x[:15], labels[:15])
    with pytest.raises(ValueError, match="ref_emb"):
        MultiSimilarityStarLoss(scope="batch")(x, labels, ref_emb=x.clone(), ref_labels=labels)
    with pytest.raises(ValueError, match="outside the Poincare ball"):
        MultiSimilarityStarLoss(scope="batch")(x * 2, labels)
