"""PoincareDistance / PoincareSimilarity as PML distances: geoopt, losses, miners, kNN."""

import geoopt
import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from noisy_pml.distances import PoincareDistance, PoincareSimilarity
from noisy_pml.utils import hyperbolic as hyp


def ball_points(n, d=6, dtype=torch.float64, seed=0, radius=0.95):
    g = torch.Generator().manual_seed(seed)
    return hyp.project(hyp.exp0(torch.randn(n, d, generator=g, dtype=dtype), 1.0), 1.0) * radius


def test_matrix_equals_geoopt_and_is_not_inverted():
    x, y = ball_points(12), ball_points(9, seed=1)
    dist = PoincareDistance(c=1.0)
    assert not dist.is_inverted and not dist.normalize_embeddings
    ref = geoopt.PoincareBall(1.0).dist(x[:, None], y[None])
    torch.testing.assert_close(dist(x, y), ref)
    torch.testing.assert_close(dist.pairwise_distance(x[:9], y), ref[:9].diagonal())
    assert torch.equal(dist(x).diagonal(), torch.zeros(12, dtype=torch.float64))


def test_similarity_is_inverted_bounded_map_of_distance():
    x = ball_points(10)
    sim, dist = PoincareSimilarity(c=1.0), PoincareDistance(c=1.0)
    assert sim.is_inverted
    torch.testing.assert_close(sim(x), hyp.similarity_from_dist(dist(x), 1.0))
    assert torch.equal(sim(x).diagonal(), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(sim.pairwise_distance(x, x.flip(0)), sim(x, x.flip(0)).diagonal())


def test_never_normalises_and_rejects_points_outside_the_ball():
    with pytest.raises(ValueError, match="normalize_embeddings=True"):
        PoincareDistance(normalize_embeddings=True)
    with pytest.raises(ValueError, match="c \\(curvature\\)"):
        PoincareDistance(c=0)
    unit = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)  # a tester's L2-normalisation
    with pytest.raises(ValueError, match="outside the Poincare ball"):
        PoincareDistance()(unit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "loss",
    [
        losses.ContrastiveLoss(pos_margin=0, neg_margin=2),
        losses.TripletMarginLoss(margin=0.2),
        losses.MultiSimilarityLoss(base=1.0),
        losses.NTXentLoss(),
        losses.SupConLoss(),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_works_as_the_distance_of_pml_losses(loss, dtype):
    loss.distance = PoincareDistance()
    x = ball_points(16, dtype=dtype).requires_grad_()
    labels = torch.arange(8).repeat(2)
    value = loss(x, labels)
    value.backward()
    assert value.dtype == dtype and torch.isfinite(value) and value > 0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "miner",
    [
        miners.MultiSimilarityMiner(epsilon=0.5),
        miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard"),
        miners.BatchHardMiner(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_works_in_pml_miners(miner):
    miner.distance = PoincareDistance()
    x, labels = ball_points(16), torch.arange(4).repeat(4)
    indices = miner(x, labels)
    loss = losses.TripletMarginLoss(distance=PoincareDistance())(x, labels, indices)
    assert len(indices[0]) > 0 and torch.isfinite(loss)


def test_custom_knn_in_accuracy_calculator_ranks_by_poincare_distance():
    x = ball_points(30).float()
    labels = torch.arange(6).repeat(5)
    knn = CustomKNN(PoincareDistance())
    dists, idx = knn(x, 3, x, ref_includes_query=True)
    d = PoincareDistance()(x).fill_diagonal_(float("inf"))
    assert torch.equal(idx, d.topk(3, largest=False).indices)
    calc = AccuracyCalculator(include=("precision_at_1",), k=3, knn_func=knn)
    p1 = calc.get_accuracy(x, labels, ref_includes_query=True)["precision_at_1"]
    brute = (labels[d.argmin(1)] == labels).float().mean().item()
    assert p1 == pytest.approx(brute)


def test_shared_learnable_ball_gets_gradient_through_a_loss():
    ball = geoopt.PoincareBall(1.0, learnable=True)
    loss = losses.ContrastiveLoss(distance=PoincareDistance(c=ball))
    loss(ball_points(8).float(), torch.arange(4).repeat(2)).backward()
    assert ball.isp_c.grad is not None and ball.isp_c.grad != 0


@pytest.mark.parametrize("cls", [PoincareDistance, PoincareSimilarity])
def test_mixed_dtype_or_width_raises_a_clear_error_not_a_matmul_error(cls):
    x = ball_points(5, 4)
    with pytest.raises(TypeError, match="same dtype"):
        cls()(x, x.float())
    with pytest.raises(ValueError, match="same embedding size"):
        cls()(x, ball_points(5, 3))


def test_batched_distance_chunks_have_an_exact_zero_diagonal_in_float64():
    from pytorch_metric_learning.distances import BatchedDistance

    x = ball_points(70, 64, radius=0.9999)
    diag = torch.full((70,), float("nan"), dtype=torch.float64)

    def keep_diagonal(mat, s, e):
        e = s + len(mat)  # PML passes e = s + batch_size also for the last, shorter chunk
        diag[s:e] = mat[torch.arange(e - s), torch.arange(s, e)]

    BatchedDistance(PoincareDistance(), keep_diagonal, batch_size=16)(x)
    assert torch.equal(diag, torch.zeros(70, dtype=torch.float64))
