"""Per-pair AHSML thresholds in PML's Contrastive, Triplet and Multi-Similarity losses, and the
end-to-end route through PML's trainers and testers."""

import pytest
import torch
from pytorch_metric_learning import testers, trainers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.losses import (
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    TripletMarginLoss,
)
from pytorch_metric_learning.miners import MultiSimilarityMiner
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from noisy_pml.distances import PoincareDistance, PoincareSimilarity
from noisy_pml.losses import AdaptiveThresholdLoss, MultiSimilarityStarLoss
from noisy_pml.miners import NoiseAwarePairMiner
from noisy_pml.models import PoincareHead
from noisy_pml.trainers import batch_getter
from noisy_pml.utils import hyperbolic as hyp
from noisy_pml.utils.ahsml import AdaptiveThresholds


def batch(views=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 1, 2]).repeat(views)
    u = torch.randn(len(labels), 5, generator=g, dtype=dtype)
    return hyp.exp0(torch.nn.functional.normalize(u, dim=1), 1.0), labels


def thresholds_for(loss, x, labels, gamma=0.5):
    """Thresholds, similarities, gamma in the loss's units, and the positives (label positives
    and the augmentation pairs below their threshold: the hinge of the consistency term)."""
    res = AdaptiveThresholds(gamma, 0.2, "literal", "class", "batch")(loss.distance, x, labels)
    s = loss.distance(x)
    g = loss.distance.from_cosine(gamma) if hasattr(loss.distance, "from_cosine") else gamma
    return res, s, g, res.active_augmentation(s, hinge=True) | res.pos_mask


@pytest.mark.parametrize(
    "inner",
    [
        MultiSimilarityLoss(base=0.3, distance=PoincareSimilarity()),
        ContrastiveLoss(pos_margin=1, neg_margin=0.2, distance=CosineSimilarity()),
        TripletMarginLoss(margin=0.1, distance=PoincareSimilarity()),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_constant_thresholds_without_views_give_the_wrapped_loss(inner):
    x, labels = batch(views=1)
    wrapped = AdaptiveThresholdLoss(inner, gamma=0.5, delta=0.0, scope="batch", views=1)
    torch.testing.assert_close(wrapped(x, labels), inner(x, labels))


def test_contrastive_equals_hand_computation():
    x, labels = batch()
    inner = ContrastiveLoss(pos_margin=0.9, neg_margin=-0.7, distance=PoincareSimilarity())
    loss = AdaptiveThresholdLoss(inner, scope="batch")
    res, s, g, pos = thresholds_for(inner, x, labels)  # views of one image are positives too
    assert (res.aug_mask & ~pos).any() and (res.aug_mask & pos).any()
    pos_l = torch.relu(0.9 + res.thresholds[pos] - g - s[pos])
    neg_l = torch.relu(s[res.neg_mask] - (-0.7 + res.thresholds[res.neg_mask] - g))
    # AvgNonZeroReducer per sub-loss, then summed
    expected = pos_l[pos_l > 0].mean() + neg_l[neg_l > 0].mean()
    torch.testing.assert_close(loss(x, labels), expected)
    assert inner.pos_margin == 0.9 and inner.neg_margin == -0.7  # margins restored
    assert isinstance(inner.distance, PoincareSimilarity)


def test_triplet_equals_hand_computation():
    x, labels = batch()
    inner = TripletMarginLoss(margin=0.05, distance=PoincareSimilarity())
    loss = AdaptiveThresholdLoss(inner, scope="batch")
    res, s, _, pos = thresholds_for(inner, x, labels)
    t, vals = res.thresholds, []
    for a in range(len(labels)):
        for p in range(len(labels)):
            for n in range(len(labels)):
                if pos[a, p] and labels[a] != labels[n]:
                    vals.append(torch.relu(s[a, n] - s[a, p] + 0.05 + t[a, p] - t[a, n]))
    vals = torch.stack(vals)
    torch.testing.assert_close(loss(x, labels), vals[vals > 0].mean())
    assert inner.margin == 0.05


def test_multi_similarity_equals_hand_computation():
    x, labels = batch()
    inner = MultiSimilarityLoss(alpha=2, beta=10, base=0.4, distance=PoincareSimilarity())
    loss = AdaptiveThresholdLoss(inner, gamma=0.5, scope="batch")
    res, s, g, pos = thresholds_for(inner, x, labels)
    b = 0.4 + res.thresholds - g
    per_anchor = []
    for i in range(len(labels)):
        lp = torch.log1p(torch.exp(-2 * (s[i] - b[i]))[pos[i]].sum()) / 2
        ln = torch.log1p(torch.exp(10 * (s[i] - b[i]))[res.neg_mask[i]].sum()) / 10
        per_anchor.append(lp + ln)
    torch.testing.assert_close(loss(x, labels), torch.stack(per_anchor).mean())
    assert inner.base == 0.4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_miner_indices_reducer_and_dtype(dtype):
    x, labels = batch(dtype=dtype)
    x = x.clone().requires_grad_()
    inner = ContrastiveLoss(pos_margin=1, neg_margin=0, distance=PoincareSimilarity(),
                            reducer=MeanReducer())
    loss = AdaptiveThresholdLoss(inner, scope="batch")
    mined = MultiSimilarityMiner(epsilon=0.1, distance=PoincareSimilarity())(x, labels)
    out = loss(x, labels, mined)
    out.backward()
    assert out.dtype == dtype and torch.isfinite(x.grad).all()


def test_rejects_unsupported_losses_and_distances():
    with pytest.raises(TypeError, match="ContrastiveLoss"):
        AdaptiveThresholdLoss(NTXentLoss(), scope="batch")
    with pytest.raises(ValueError, match="similarity"):
        AdaptiveThresholdLoss(ContrastiveLoss(distance=LpDistance()), scope="batch")
    with pytest.raises(ValueError, match="similarity"):
        AdaptiveThresholdLoss(TripletMarginLoss(distance=PoincareDistance()), scope="batch")
    for kw in ({"alpha": 0}, {"beta": -1}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be finite and > 0"):
            AdaptiveThresholdLoss(MultiSimilarityLoss(**kw), scope="batch")


# ---- end to end in PML's trainers and tester ------------------------------------------------


class TwoViewToy(torch.utils.data.Dataset):
    """Items (weak_view, strong_view, label, index) like noisy_pml.datasets.TwoViewDataset."""

    def __init__(self, n=48, classes=6, d=8):
        g = torch.Generator().manual_seed(0)
        self.targets = torch.arange(n) % classes
        centres = torch.randn(classes, d, generator=g) * 2
        self.x = centres[self.targets] + torch.randn(n, d, generator=g)
        self.noise = torch.randn(2, n, d, generator=g) * 0.1

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i] + self.noise[0, i], self.x[i] + self.noise[1, i], self.targets[i], i


class Plain(torch.utils.data.Dataset):
    def __init__(self, toy):
        self.toy = toy

    def __len__(self):
        return len(self.toy)

    def __getitem__(self, i):
        return self.toy.x[i], self.toy.targets[i]


def run_trainer(trainer_cls, loss, layout, miner=None):
    data = TwoViewToy()
    models = {"trunk": torch.nn.Identity(), "embedder": PoincareHead(8, 4)}
    opt = torch.optim.SGD(models["embedder"].parameters(), lr=0.1)
    receivers = (loss,) if miner is None else (loss, miner)
    trainer = trainer_cls(
        models=models,
        optimizers={"embedder_optimizer": opt},
        batch_size=12,
        loss_funcs={"metric_loss": loss},
        mining_funcs={} if miner is None else {"tuple_miner": miner},
        dataset=data,
        data_and_label_getter=batch_getter(*receivers, layout=layout),
        dataloader_num_workers=0,
        set_min_label_to_zero=False,
    )
    before = models["embedder"].linear.weight.detach().clone()
    trainer.train(num_epochs=1)
    assert not torch.equal(before, models["embedder"].linear.weight)
    calc = AccuracyCalculator(include=("precision_at_1",), k=1,
                              knn_func=CustomKNN(PoincareDistance()))
    tester = testers.GlobalEmbeddingSpaceTester(
        normalize_embeddings=False, accuracy_calculator=calc, dataloader_num_workers=0
    )
    acc = tester.test({"val": Plain(data)}, 1, models["trunk"], models["embedder"])
    assert 0 <= acc["val"]["precision_at_1_level0"] <= 1


@pytest.mark.parametrize("layout", ["two_stream", "concat"])
def test_wrapped_loss_trains_in_pml_trainers_with_memory_bank(layout):
    two_stream = layout == "two_stream"
    trainer_cls = trainers.TwoStreamMetricLoss if two_stream else trainers.MetricLossOnly
    inner = MultiSimilarityLoss(distance=PoincareSimilarity())
    run_trainer(trainer_cls, AdaptiveThresholdLoss(inner, num_samples=48), layout)


def test_ms_star_and_noise_aware_miner_train_in_two_stream_trainer():
    loss = MultiSimilarityStarLoss(num_samples=48)
    run_trainer(trainers.TwoStreamMetricLoss, loss, "two_stream", miner=NoiseAwarePairMiner())
    assert loss.thresholds.bank.labels.ge(0).all()  # every sample reached the memory bank


def test_missing_sample_indices_in_a_trainer_raise():
    loss = MultiSimilarityStarLoss(num_samples=48)
    data = TwoViewToy()
    trainer = trainers.TwoStreamMetricLoss(
        models={"trunk": torch.nn.Identity(), "embedder": PoincareHead(8, 4)},
        optimizers={},
        batch_size=12,
        loss_funcs={"metric_loss": loss},
        mining_funcs={},
        dataset=data,
        data_and_label_getter=lambda b: (b[0], b[1], b[2]),
        dataloader_num_workers=0,
    )
    with pytest.raises(ValueError, match="set_batch_info"):
        trainer.train(num_epochs=1)


def test_consistency_off_drops_the_views_of_one_image_from_the_wrapped_loss():
    x, labels = batch()
    inner = ContrastiveLoss(pos_margin=1, neg_margin=0, distance=CosineSimilarity())
    on = AdaptiveThresholdLoss(inner, scope="batch", consistency_hinge=False)
    off = AdaptiveThresholdLoss(inner, scope="batch", consistency=False)
    one_view = AdaptiveThresholdLoss(inner, scope="batch", views=1)
    # without the views' pairs the label positives are those of distinct images only
    res, s, g, _ = thresholds_for(inner, x, labels)
    pos_l = torch.relu(1 + res.thresholds[res.pos_mask] - g - s[res.pos_mask])
    neg_l = torch.relu(s[res.neg_mask] - (res.thresholds[res.neg_mask] - g))
    expected = pos_l[pos_l > 0].mean() + neg_l[neg_l > 0].mean()
    torch.testing.assert_close(off(x, labels), expected)
    assert on(x, labels) != off(x, labels) != one_view(x, labels)
    assert off.consistency_active_fraction == 0


@pytest.mark.parametrize("inner_cls", [ContrastiveLoss, MultiSimilarityLoss, TripletMarginLoss])
def test_empty_batch_and_bad_input(inner_cls):
    loss = AdaptiveThresholdLoss(inner_cls(distance=CosineSimilarity()), num_samples=4)
    x = torch.zeros(0, 5, requires_grad=True)
    out = loss(x, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0 and out.requires_grad
    xb, labels = batch()
    bad = xb.clone()
    bad[1, 1] = float("inf")
    for emb, lab, match in ((bad, labels, "NaN"), (xb, labels - 1, ">= 0"),
                            (xb, labels.float(), "integer")):
        loss.set_batch_info(indices=torch.arange(6) % 4)
        with pytest.raises((ValueError, TypeError), match=match):
            loss(emb, lab)
    assert not loss.thresholds.bank.filled.any()  # nothing reached the memory bank


def test_state_dict_after_training_loads_into_a_fresh_wrapper_and_continues_identically():
    g = torch.Generator().manual_seed(0)

    def make():
        return AdaptiveThresholdLoss(MultiSimilarityLoss(), num_samples=30,
                                     consistency_warmup=0.3)

    trained = make()
    for step in range(3):
        trained.set_batch_info(indices=torch.randperm(30, generator=g)[:6])
        trained(batch(seed=step)[0], batch()[1])
    fresh = make()
    fresh.load_state_dict(trained.state_dict())
    x, labels = batch(seed=9)
    idx = torch.randperm(30, generator=g)[:6]
    for m in (trained, fresh):
        m.set_batch_info(indices=idx)
    torch.testing.assert_close(fresh(x, labels), trained(x, labels))


def test_collapse_statistics_are_recordable():
    x, labels = batch()
    loss = AdaptiveThresholdLoss(ContrastiveLoss(distance=CosineSimilarity()), scope="batch",
                                 collect_stats=True)
    loss(x, labels)
    assert "mean_negative_similarity" in loss._record_these_stats
    sim = CosineSimilarity()(x)
    neg = labels[:, None] != labels[None, :]
    assert loss.mean_negative_similarity == pytest.approx(sim[neg].mean().item())
