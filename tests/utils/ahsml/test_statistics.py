"""AHSML class statistics (pure functions) against brute-force pair loops."""

import torch
from ahsml_reference import ball_batch, brute_stats
from pytorch_metric_learning.distances import CosineSimilarity

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.utils.ahsml.statistics import (
    class_pair_means,
    cosine_class_means,
    instance_ids_from_views,
)


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
