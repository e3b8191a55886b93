"""Fuzzing the Poincare distances, the ball maps and the models with faulty inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    DTYPES,
    EMB_FAULTS,
    FUZZ,
    MUST_RAISE_EMB,
    clear_or_finite,
    corrupt_embeddings,
)
from hypothesis import given
from hypothesis import strategies as st

from noisy_pml.distances import PoincareDistance, PoincareSimilarity
from noisy_pml.models import ConfidenceBCELoss, ConfidenceModule, PoincareHead
from noisy_pml.utils import hyperbolic as hyp

sizes = st.tuples(st.integers(2, 9), st.integers(1, 6), st.integers(0, 2**16))


def ball(n, d, dtype, seed, radius=0.99):
    g = torch.Generator().manual_seed(seed)
    return hyp.project(hyp.exp0(torch.randn(n, d, generator=g, dtype=dtype), 1.0), 1.0) * radius


PAIR_FAULTS = EMB_FAULTS + ("mixed_dtype", "wrong_width", "outside_ball")


def corrupt_pair(x, fault):
    """(query, reference) with the fault in the reference."""
    if fault == "mixed_dtype":
        other = torch.float32 if x.dtype == torch.float64 else torch.float64
        return x, x.to(other)
    if fault == "wrong_width":
        return x, torch.cat([x, x[:, :1] * 0], 1)
    if fault == "outside_ball":
        return x, x / x.norm(dim=1, keepdim=True) * 1.5
    return x, corrupt_embeddings(x, fault)


@pytest.mark.parametrize("cls", [PoincareDistance, PoincareSimilarity])
@pytest.mark.parametrize("fault", PAIR_FAULTS)
@FUZZ
@given(size=sizes, dtype=DTYPES, precise=st.booleans())
def test_poincare_distances(cls, fault, size, dtype, precise):
    n, d, seed = size
    x, y = corrupt_pair(ball(n, d, dtype, seed), fault)
    must_raise = fault in MUST_RAISE_EMB | {"mixed_dtype", "wrong_width", "outside_ball"}
    out = clear_or_finite(lambda: cls(precise=precise)(x, y), must_raise, f"{cls.__name__}")
    if fault == "clean":  # correct, not only finite: the float64 row-wise reference
        ref = hyp.dist(x.double(), y.double(), 1.0)
        got = out.diagonal().double()
        if cls is PoincareSimilarity:
            ref = hyp.similarity_from_dist(ref, 1.0)
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("fn", [hyp.exp0, hyp.log0, hyp.project, hyp.pairwise_dist])
@pytest.mark.parametrize("fault", ["clean", "nan", "inf", "empty", "int_dtype"])
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_ball_functions(fn, fault, size, dtype):
    n, d, seed = size
    x = corrupt_embeddings(ball(n, d, dtype, seed), fault)
    clear_or_finite(lambda: fn(x, 1.0) if fn is not hyp.pairwise_dist else fn(x),
                    fault in MUST_RAISE_EMB, fn.__name__)


@FUZZ
@given(c=st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "1", None]))
def test_curvature_is_validated(c):
    x = ball(3, 2, torch.float64, 0)
    for call in (lambda: PoincareDistance(c=c), lambda: hyp.exp0(x, c), lambda: hyp.dist(x, x, c)):
        clear_or_finite(call, True, f"c={c!r}")


@pytest.mark.parametrize("mode", ["normalize", "clip"])
@pytest.mark.parametrize("fault", EMB_FAULTS + ("wrong_width",))
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_poincare_head(mode, fault, size, dtype):
    n, d, seed = size
    head = PoincareHead(d, 3, mode=mode).to(dtype)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x = torch.cat([x, x[:, :1]], 1) if fault == "wrong_width" else corrupt_embeddings(x, fault)
    must_raise = fault in MUST_RAISE_EMB | {"wrong_width"}
    if fault == "wrong_ndim":
        must_raise = False  # (1, N, D) is a legal batch of a Linear layer
    out = clear_or_finite(lambda: head(x), must_raise, f"PoincareHead {fault}")
    if isinstance(out, torch.Tensor) and out.numel():
        assert (out.pow(2).sum(-1) < 1).all()  # inside the ball


@pytest.mark.parametrize("fault", EMB_FAULTS + ("wrong_width",))
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_confidence_module_and_its_loss(fault, size, dtype):
    n, d, seed = size
    module = ConfidenceModule(d, 3, hidden=4).to(dtype)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x = torch.cat([x, x[:, :1]], 1) if fault == "wrong_width" else corrupt_embeddings(x, fault)
    must_raise = fault in MUST_RAISE_EMB | {"wrong_width"}
    out = clear_or_finite(lambda: module.confidences(x), must_raise, f"ConfidenceModule {fault}")
    if isinstance(out, torch.Tensor):
        assert ((out >= 0) & (out <= 1)).all()
    logits = corrupt_embeddings(torch.randn(n, 3, dtype=dtype), fault)
    labels = torch.arange(len(logits)) % 3
    clear_or_finite(
        lambda: ConfidenceBCELoss(3)(logits, labels),
        fault in MUST_RAISE_EMB,
        f"ConfidenceBCELoss {fault}",
    )


@FUZZ
@given(arg=st.sampled_from(["in_features", "out_features", "clip_radius"]),
       value=st.sampled_from([0, -2, float("nan"), float("inf"), "4", 2.5]))
def test_poincare_head_arguments(arg, value):
    kwargs = {"in_features": 4, "out_features": 3, "mode": "clip", arg: value}
    if arg == "clip_radius" and value == 2.5:
        return  # a legal radius
    clear_or_finite(lambda: PoincareHead(**kwargs), True, f"PoincareHead {arg}={value!r}")
