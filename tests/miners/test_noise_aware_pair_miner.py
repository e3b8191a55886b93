"""NoiseAwarePairMiner: drops exactly the pairs that touch suspect samples."""

import pytest
import torch
from pytorch_metric_learning.losses import ContrastiveLoss, TripletMarginLoss
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from noisy_pml.miners import NoiseAwarePairMiner


def clustered(views=2, flip=None, seed=0):
    """4 images per class, 3 tight classes; image `flip` gets a wrong label."""
    g = torch.Generator().manual_seed(seed)
    true = torch.arange(3).repeat_interleave(4)
    centres = torch.eye(3, 6) * 5
    x = centres[true] + 0.1 * torch.randn(12, 6, generator=g)
    labels = true.clone()
    if flip is not None:
        labels[flip] = (labels[flip] + 1) % 3
    xs = torch.cat([x + 0.01 * torch.randn(12, 6, generator=g) for _ in range(views)])
    return xs, labels.repeat(views)


def as_set(a, b):
    return set(zip(a.tolist(), b.tolist(), strict=True))


def test_clean_batch_keeps_every_pair():
    x, labels = clustered()
    out = NoiseAwarePairMiner()(x, labels)
    ref = lmu.get_all_pairs_indices(labels)
    assert all(torch.equal(o, r) for o, r in zip(out, ref, strict=True))


@pytest.mark.parametrize("drop_negatives", [True, False])
def test_mislabelled_image_loses_its_pairs_and_nothing_else(drop_negatives):
    x, labels = clustered(flip=5)
    miner = NoiseAwarePairMiner(drop_negatives=drop_negatives)
    a1, p, a2, n = miner(x, labels)
    bad = {5, 17}  # both views of image 5
    ra1, rp, ra2, rn = lmu.get_all_pairs_indices(labels)
    keep = {(i, j) for i, j in as_set(ra1, rp) if i not in bad and j not in bad}
    assert as_set(a1, p) == keep
    negs = as_set(ra2, rn)
    if drop_negatives:
        negs = {(i, j) for i, j in negs if i not in bad and j not in bad}
    assert as_set(a2, n) == negs
    assert miner.num_dropped == 2


def test_confidence_criterion_and_table_lookup():
    x, labels = clustered()
    miner = NoiseAwarePairMiner(criterion="confidence", confidence_threshold=0.5)
    conf = torch.full((12,), 0.9)
    conf[3] = 0.1
    miner.set_batch_info(confidences=conf)
    a1, p, _, _ = miner(x, labels)
    assert not ({3, 15} & (set(a1.tolist()) | set(p.tolist())))
    table = torch.full((100,), 0.9)
    table[40 + 7] = 0.2
    miner.set_sample_confidences(table)
    miner.set_batch_info(indices=torch.arange(40, 52))
    a1, p, _, _ = miner(x, labels)
    assert not ({7, 19} & (set(a1.tolist()) | set(p.tolist())))
    with pytest.raises(ValueError, match="needs confidences"):
        NoiseAwarePairMiner(criterion="confidence")(x, labels)


def test_max_drop_fraction_caps_the_drops_most_suspect_first():
    x, labels = clustered()
    miner = NoiseAwarePairMiner(criterion="confidence", max_drop_fraction=0.1)
    conf = torch.linspace(0.0, 0.4, 12)  # every image below threshold; 10% of 12 -> 1 drop
    miner.set_batch_info(confidences=conf)
    a1, p, _, _ = miner(x, labels)
    assert miner.num_dropped == 2  # image 0, two views
    assert 0 not in set(a1.tolist()) and 1 in set(a1.tolist())


def test_two_stream_reference_mode_and_use_with_pair_losses():
    x, labels = clustered(flip=5)
    q, r = x[:12], x[12:]
    miner = NoiseAwarePairMiner()
    a1, p, a2, n = miner(q, labels[:12], r, labels[12:].clone())
    assert 5 not in set(a1.tolist()) | set(p.tolist())
    assert (0, 0) in as_set(a1, p)  # the two views of an image remain a positive pair
    pairs = miner(x, labels)
    for loss in (ContrastiveLoss(), TripletMarginLoss()):
        assert torch.isfinite(loss(x, labels, pairs))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="criterion"):
        NoiseAwarePairMiner(criterion="loss")
    with pytest.raises(ValueError, match="max_drop_fraction"):
        NoiseAwarePairMiner(max_drop_fraction=1.5)
    x, labels = clustered()
    with pytest.raises(ValueError, match="views=2"):
        NoiseAwarePairMiner()(x[:23], labels[:23])
    with pytest.raises(ValueError, match="ref_emb has"):
        NoiseAwarePairMiner()(x[:12], labels[:12], x[12:20], labels[12:20])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_rejected_before_mining(bad):
    x, labels = clustered()
    x = x.clone()
    x[15, 0] = bad  # second view of image 3
    with pytest.raises(ValueError, match="embeddings contains 1 NaN or infinite"):
        NoiseAwarePairMiner()(x, labels)
    with pytest.raises(ValueError, match="ref_emb contains"):
        NoiseAwarePairMiner()(clustered()[0][:12], labels[:12], x[12:], labels[12:])


def test_negative_or_float_labels_are_rejected():
    x, labels = clustered()
    with pytest.raises(ValueError, match="labels must lie in >= 0"):
        NoiseAwarePairMiner()(x, labels - 1)
    with pytest.raises(TypeError, match="integer class ids"):
        NoiseAwarePairMiner()(x, labels.float())


def test_non_finite_margin_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="margin must be a finite number, got nan"):
        NoiseAwarePairMiner(margin=float("nan"))
    with pytest.raises(TypeError, match="views must be an integer"):
        NoiseAwarePairMiner(views=1.5)
