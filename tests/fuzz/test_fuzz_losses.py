"""Fuzzing every public loss with faulty embeddings, labels and constructor arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPES,
    EMB_FAULTS,
    FUZZ,
    LABEL_FAULTS,
    MUST_RAISE_EMB,
    MUST_RAISE_LABELS,
    clear_or_finite,
    corrupt_embeddings,
    corrupt_labels,
    matching_labels,
)
from hypothesis import given
from hypothesis import strategies as st
from pytorch_metric_learning.losses import MultiSimilarityLoss

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.losses import AdaptiveThresholdLoss, MultiSimilarityStarLoss, SmoothProxyAnchorLoss
from noisy_pml.utils import hyperbolic as hyp

C = 4


def ball(n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return hyp.project(hyp.exp0(torch.randn(n, d, generator=g, dtype=dtype), 1.0), 1.0)


def euclid(n, d, dtype, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# name -> (constructor of (D), embedding generator)
LOSSES = {
    "SmoothProxyAnchorLoss": (lambda d: SmoothProxyAnchorLoss(C, d), euclid),
    "SmoothProxyAnchorLoss-Poincare": (
        lambda d: SmoothProxyAnchorLoss(C, d, distance=PoincareSimilarity()),
        ball,
    ),
    "MultiSimilarityStarLoss": (lambda d: MultiSimilarityStarLoss(scope="batch"), ball),
    "AdaptiveThresholdLoss": (
        lambda d: AdaptiveThresholdLoss(MultiSimilarityLoss(), scope="batch"),
        ball,
    ),
}


def emb_cases():
    for name in LOSSES:
        for fault in EMB_FAULTS:
            yield pytest.param(name, fault, id=f"{name}-{fault}")


def label_cases():
    for name in LOSSES:
        for fault in LABEL_FAULTS:
            yield pytest.param(name, fault, id=f"{name}-{fault}")


sizes = st.tuples(st.integers(2, 10), st.integers(1, 6), st.integers(0, 2**16))


@pytest.mark.parametrize(("name", "fault"), list(emb_cases()))
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_embedding_faults(name, fault, size, dtype):
    n, d, seed = size
    make, points = LOSSES[name]
    x = corrupt_embeddings(points(n, d, dtype, seed), fault)
    y = matching_labels(torch.arange(n) % C, fault)
    loss = make(d)
    clear_or_finite(lambda: loss(x, y), fault in MUST_RAISE_EMB, f"{name} {fault}")


@pytest.mark.parametrize(("name", "fault"), list(label_cases()))
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_label_faults(name, fault, size, dtype):
    n, d, seed = size
    make, points = LOSSES[name]
    y = corrupt_labels(torch.arange(n) % C, fault)
    loss = make(d)
    clear_or_finite(
        lambda: loss(points(n, d, dtype, seed), y), fault in MUST_RAISE_LABELS, f"{name} {fault}"
    )


BAD_NUMBERS = st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, "1", None])


@FUZZ
@given(
    arg=st.sampled_from(
        ["margin", "alpha", "smoothing_position", "smoothing_sharpness", "positive_threshold"]
    ),
    value=BAD_NUMBERS,
)
def test_smooth_proxy_anchor_refuses_bad_arguments(arg, value):
    if arg == "positive_threshold" and value is None:
        value = float("nan")  # None means "use smoothing_position"
    if arg == "smoothing_sharpness" and value == float("inf"):
        value = 0.0  # inf is legal: the hard step
    clear_or_finite(
        lambda: SmoothProxyAnchorLoss(C, 3, **{arg: value}), True, f"SmoothProxyAnchorLoss {arg}"
    )


@pytest.mark.parametrize(
    ("cls", "arg", "value"),
    [
        (MultiSimilarityStarLoss, "alpha", 0.0),
        (MultiSimilarityStarLoss, "beta", -1.0),
        (MultiSimilarityStarLoss, "alpha", float("nan")),
    ],
)
def test_multi_similarity_star_refuses_bad_arguments(cls, arg, value):
    clear_or_finite(lambda: cls(scope="batch", **{arg: value}), True, f"{cls.__name__} {arg}")


@FUZZ
@given(size=sizes, fault=st.sampled_from(["nan", "wrong_shape", "out_of_range"]))
def test_smooth_proxy_anchor_confidence_faults(size, fault):
    n, d, seed = size
    conf = torch.rand(n, C, generator=torch.Generator().manual_seed(seed))
    if fault == "nan":
        conf[0, 0] = float("nan")
    elif fault == "wrong_shape":
        conf = conf[:, :-1]
    else:
        conf = conf + 1.0
    loss = SmoothProxyAnchorLoss(C, d)
    x, y = euclid(n, d, torch.float32, seed), torch.arange(n) % C
    clear_or_finite(lambda: loss(x, y, confidences=conf), True, f"confidences {fault}")
