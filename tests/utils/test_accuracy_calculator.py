"""Retrieval metrics equal a brute-force numpy reference (faiss, torch kNN, any distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
)
from pytorch_metric_learning.utils.inference import CustomKNN

import noisy_pml.utils.accuracy_calculator as acc_mod
from noisy_pml.utils.accuracy_calculator import (
    HAS_FAISS,
    RetrievalAccuracyCalculator,
    SklearnKMeans,
    evaluate_retrieval,
)

KS = (1, 2, 4, 8)
BACKENDS = [
    pytest.param(True, marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
    False,
]


def clustered_data(seed: int = 0, n_classes: int = 15, dim: int = 8):
    """Class centres + noise, uneven class sizes (2..30) and one lone sample (class of size 1)."""
    rng = np.random.default_rng(seed)
    sizes = np.append(rng.integers(2, 31, size=n_classes), 1)
    y = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(size=(len(sizes), dim))
    x = centres[y] + 0.9 * rng.normal(size=(len(y), dim))
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def reference_metrics(mat: np.ndarray, y: np.ndarray, ks=KS, similarity: bool = False) -> dict:
    """Literal R@K and MAP@R from a full query x gallery matrix (self and lone queries out)."""
    mat = mat.astype(np.float64).copy()
    if similarity:
        mat = -mat  # rank by largest similarity
    np.fill_diagonal(mat, np.inf)
    order = np.argsort(mat, axis=1, kind="stable")[:, :-1]  # drop self (last)
    counts = np.bincount(y)
    keep = counts[y] > 1
    rel = y[order] == y[:, None]
    out = {f"R@{k}": rel[keep, :k].any(axis=1).mean() for k in ks}
    aps = []
    for i in np.flatnonzero(keep):
        r = counts[y[i]] - 1
        hits = rel[i, :r]
        precision = np.cumsum(hits) / np.arange(1, r + 1)
        aps.append((precision * hits).sum() / r)
    out["MAP@R"] = float(np.mean(aps))
    return out


def l2_matrix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class NegativeL2(BaseDistance):
    """-||x - y||: an L2 ranking written as a similarity (is_inverted=True)."""

    def __init__(self, **kwargs):
        super().__init__(is_inverted=True, normalize_embeddings=False, **kwargs)

    def compute_mat(self, query_emb, ref_emb):
        return -torch.cdist(query_emb, ref_emb)

    def pairwise_distance(self, query_emb, ref_emb):
        return -torch.norm(query_emb - ref_emb, dim=-1)


@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_evaluate_retrieval_matches_brute_force_cosine(use_faiss):
    x, y = clustered_data(0)
    got = evaluate_retrieval(x, y, use_faiss=use_faiss)
    want = reference_metrics(-(unit(x) @ unit(x).T), y)
    assert set(got) == {"R@1", "R@2", "R@4", "R@8", "MAP@R"}
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert 0.2 < got["R@1"] < got["R@8"] < 1  # the data is neither trivial nor hopeless


@pytest.mark.parametrize("use_faiss", BACKENDS)
def test_calculator_matches_brute_force_l2_without_normalisation(use_faiss):
    x, y = clustered_data(1)
    calc = RetrievalAccuracyCalculator(use_faiss=use_faiss, knn_batch_size=37)
    got = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    want = reference_metrics(l2_matrix(x), y)
    for k in KS:
        assert got[f"recall_at_{k}"] == pytest.approx(want[f"R@{k}"], abs=1e-9)
    assert got["mean_average_precision_at_r"] == pytest.approx(want["MAP@R"], abs=1e-9)
    assert got["precision_at_1"] == pytest.approx(got["recall_at_1"], abs=1e-12)


@pytest.mark.parametrize(
    "distance,reference,similarity",
    [
        (LpDistance(normalize_embeddings=False), lambda x: l2_matrix(x), False),
        (LpDistance(normalize_embeddings=False, power=2), lambda x: l2_matrix(x) ** 2, False),
        (CosineSimilarity(), lambda x: unit(x) @ unit(x).T, True),
        (DotProductSimilarity(normalize_embeddings=False), lambda x: x @ x.T, True),
        (NegativeL2(), lambda x: -l2_matrix(x), True),
    ],
    ids=["l2", "squared-l2", "cosine", "dot", "negative-l2-similarity"],
)
def test_custom_distance_ranks_by_distance_or_similarity(distance, reference, similarity):
    x, y = clustered_data(2)
    got = evaluate_retrieval(x, y, distance=distance)
    want = reference_metrics(reference(x.astype(np.float64)), y, similarity=similarity)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_dot_product_differs_from_l2_so_the_distance_is_really_used():
    x, y = clustered_data(3)
    x = x * np.random.default_rng(0).uniform(0.2, 5.0, size=(len(x), 1)).astype(np.float32)
    dot = evaluate_retrieval(x, y, distance=DotProductSimilarity(normalize_embeddings=False))
    l2 = evaluate_retrieval(x, y, normalize=False)
    assert dot["R@1"] != l2["R@1"]


def test_recall_at_k_larger_than_every_class_still_exact():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(40), 3)  # max_bin_count=3 < K=8: k is raised to 8
    x = rng.normal(size=(len(y), 4)).astype(np.float32) + 2 * rng.normal(size=(40, 4))[y]
    got = evaluate_retrieval(x, y, use_faiss=False, recall_at=(1, 8, 16))
    want = reference_metrics(-(unit(x) @ unit(x).T), y, ks=(1, 8, 16))
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_recall_at_k_beyond_gallery_uses_the_whole_gallery():
    x = np.array([[0.0, 1.0], [0.0, 1.1], [1.0, 0.0], [1.1, 0.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 1])  # each nearest neighbour is wrong, every query hits within 3
    got = evaluate_retrieval(x, y, recall_at=(1, 2, 8), use_faiss=False)
    assert got["R@1"] == 0.0 and got["R@8"] == 1.0


def test_without_faiss_the_calculator_falls_back_to_torch_and_sklearn(monkeypatch):
    monkeypatch.setattr(acc_mod, "HAS_FAISS", False)
    calc = RetrievalAccuracyCalculator()
    assert isinstance(calc.knn_func, CustomKNN) and isinstance(calc.kmeans_func, SklearnKMeans)
    x, y = clustered_data(5)
    got = calc.get_accuracy(x, y)  # every metric, NMI / AMI included
    assert {"NMI", "AMI", "recall_at_8", "mean_average_precision_at_r"} <= set(got)
    with pytest.raises(ImportError, match="faiss is not installed"):
        RetrievalAccuracyCalculator(use_faiss=True)


def test_include_selects_metrics_and_recall_metrics_are_discoverable():
    calc = RetrievalAccuracyCalculator(recall_at=(1, 5), include=("recall_at_5",), use_faiss=False)
    x, y = clustered_data(6)
    assert set(calc.get_accuracy(x, y)) == {"recall_at_5"}
    assert "recall_at_5" in calc.requires_knn()


def test_separate_query_and_reference_sets():
    x, y = clustered_data(7)
    q, r = x[:50], x[50:]
    calc = RetrievalAccuracyCalculator(use_faiss=False, include=("recall_at_1", "recall_at_4"))
    got = calc.get_accuracy(q, y[:50], r, y[50:])
    d = l2_matrix(np.concatenate([q, r]))[:50, 50:]
    order = np.argsort(d, axis=1)
    present = np.isin(y[:50], y[50:])
    rel = y[50:][order] == y[:50, None]
    assert got["recall_at_4"] == pytest.approx(rel[present, :4].any(1).mean(), abs=1e-9)


@pytest.mark.parametrize(
    "embeddings,labels,match",
    [
        (np.zeros((5, 3)), np.zeros(4, dtype=int), "embeddings has 5 rows but labels has 4"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), np.array([0, 0]), "embeddings contains 1 NaN"),
        (np.zeros((1, 3)), np.array([0]), "at least 2 samples"),
        (np.zeros(3), np.array([0, 0, 0]), "embeddings must be 2-D"),
    ],
)
def test_evaluate_retrieval_rejects_bad_input(embeddings, labels, match):
    with pytest.raises(ValueError, match=match):
        evaluate_retrieval(embeddings, labels)


def test_calculator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="recall_at must be positive integers"):
        RetrievalAccuracyCalculator(recall_at=(0, 2))
    with pytest.raises(TypeError, match="BaseDistance"):
        RetrievalAccuracyCalculator(distance="cosine")
    calc = RetrievalAccuracyCalculator(use_faiss=False)
    with pytest.raises(ValueError, match="query has 3 rows but query_labels has 2"):
        calc.get_accuracy(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="query contains 1 NaN"):
        calc.get_accuracy(torch.tensor([[0.0, float("nan")], [0.0, 1.0]]), torch.zeros(2))


def test_drop_in_for_pml_tester_matches_evaluate_retrieval():
    from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester

    from noisy_pml.datasets import Digits

    ds = Digits("test")
    calc = RetrievalAccuracyCalculator(use_faiss=False, include=("recall_at_1", "recall_at_8"))
    tester = GlobalEmbeddingSpaceTester(accuracy_calculator=calc, dataloader_num_workers=0)
    got = tester.test({"test": ds}, 1, torch.nn.Flatten())["test"]
    want = evaluate_retrieval(torch.from_numpy(ds.data), ds.targets)
    assert got["recall_at_1_level0"] == pytest.approx(want["R@1"], abs=1e-9)
    assert got["recall_at_8_level0"] == pytest.approx(want["R@8"], abs=1e-9)


def test_evaluate_retrieval_with_every_class_a_singleton_raises_not_nan():
    x = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match="every one of the 6 samples is alone in its class"):
        evaluate_retrieval(x, np.arange(6))


def test_evaluate_retrieval_leaves_singletons_out_as_queries_with_a_warning():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 4)), np.array([0, 0, 1, 1, 2, 2, 3, 4, 5])
    with pytest.warns(UserWarning, match="3 of 9 queries have no other reference item"):
        got = evaluate_retrieval(x, y, recall_at=(1,), use_faiss=False)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = l2_matrix(xn)
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(1)
    assert got["R@1"] == pytest.approx((y[nn] == y)[:6].mean())  # the 6 non-singleton queries
    assert all(np.isfinite(v) for v in got.values())


def test_calculator_keeps_pml_nan_when_every_query_is_lone_but_warns():
    calc = RetrievalAccuracyCalculator(recall_at=(1,), use_faiss=False)
    x = torch.randn(5, 3)
    with pytest.warns(UserWarning, match="every one of the 5 queries is alone.*NaN"):
        acc = calc.get_accuracy(x, torch.arange(5), include=("recall_at_1", "precision_at_1"))
    assert math.isnan(acc["recall_at_1"]) and math.isnan(acc["precision_at_1"])


def test_count_lone_queries_with_separate_reference_set():
    from noisy_pml.utils.accuracy_calculator import count_lone_queries

    assert count_lone_queries(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1]), False) == 1
    assert count_lone_queries(torch.tensor([0, 1, 1]), None, True) == 1
    assert count_lone_queries(torch.tensor([0, 1]), torch.tensor([], dtype=torch.long), False) == 2
