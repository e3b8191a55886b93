"""Fuzzing the miners (and their state), the noise functions and evaluate_retrieval."""

from __future__ import annotations

import numpy as np
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

from noisy_pml import noise
from noisy_pml.miners import NoiseAwarePairMiner, PRISMMiner
from noisy_pml.utils.accuracy_calculator import evaluate_retrieval

C = 3
sizes = st.tuples(st.integers(4, 12), st.integers(1, 5), st.integers(0, 2**16))


def points(n, d, dtype, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


MINERS = {
    "NoiseAwarePairMiner": lambda n: NoiseAwarePairMiner(views=1),
    "PRISMMiner": lambda n: PRISMMiner(num_samples=64, num_classes=C, warmup=0.0),
}


def call(miner, x, y):
    if isinstance(miner, PRISMMiner):
        return miner(x, y, indices=torch.arange(len(x)))
    return miner(x, y)


def miner_emb_cases():
    for name in MINERS:
        for fault in EMB_FAULTS:
            yield pytest.param(name, fault, id=f"{name}-{fault}")


@pytest.mark.parametrize(("name", "fault"), list(miner_emb_cases()))
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_miner_embedding_faults_leave_the_state_clean(name, fault, size, dtype):
    n, d, seed = size
    miner = MINERS[name](n)
    x = corrupt_embeddings(points(n, d, dtype, seed), fault)
    y = matching_labels(torch.arange(n) % C, fault)
    out = clear_or_finite(lambda: call(miner, x, y), fault in MUST_RAISE_EMB, f"{name} {fault}")
    if not isinstance(out, Exception):
        assert len(out) == 4 and all(t.dtype == torch.long for t in out)
    # whatever happened, the next clean batch is mined normally (no poisoned state)
    clean = call(miner, points(n, d, dtype, seed + 1), torch.arange(n) % C)
    assert len(clean) == 4


@pytest.mark.parametrize("name", list(MINERS))
@pytest.mark.parametrize("fault", LABEL_FAULTS)
@FUZZ
@given(size=sizes)
def test_miner_label_faults(name, fault, size):
    n, d, seed = size
    miner = MINERS[name](n)
    y = corrupt_labels(torch.arange(n) % C, fault)
    clear_or_finite(
        lambda: call(miner, points(n, d, torch.float32, seed), y),
        fault in MUST_RAISE_LABELS,
        f"{name} {fault}",
    )


NOISE_FUNCTIONS = {
    "symmetric_noise": lambda y, r: noise.symmetric_noise(y, r),
    "pair_flip_noise": lambda y, r: noise.pair_flip_noise(y, r),
    "small_cluster_noise": lambda y, r: noise.small_cluster_noise(y, r, cluster_size=(2, 3)),
    "apply_noise": lambda y, r: noise.apply_noise(y, f"symmetric:{r}"),
}


@pytest.mark.parametrize("fn", list(NOISE_FUNCTIONS))
@pytest.mark.parametrize(
    "fault", ["clean", "negative", "float", "2d", "empty", "one_class", "list", "numpy"]
)
@FUZZ
@given(n=st.integers(6, 40), rate=st.sampled_from([0.0, 0.2, 0.5, 0.9]), seed=st.integers(0, 99))
def test_noise_functions_with_faulty_labels(fn, fault, n, rate, seed):
    y = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, n))
    y[:4] = torch.arange(4)  # every class present
    must_raise = fault in {"negative", "float", "2d", "empty", "one_class"}
    if fault in ("negative", "float", "2d"):
        y = corrupt_labels(y, fault)
    elif fault == "empty":
        y = y[:0]
    elif fault == "one_class":
        y = torch.zeros(n, dtype=torch.long)
    elif fault == "list":
        y = y.tolist()
    elif fault == "numpy":
        y = y.numpy()
    if fn == "apply_noise" and fault in ("one_class", "empty") and rate == 0.0:
        must_raise = False  # "symmetric:0" is the clean recipe: it changes nothing
    out = clear_or_finite(lambda: NOISE_FUNCTIONS[fn](y, rate), must_raise, f"{fn} {fault}")
    if not isinstance(out, Exception):
        clean = torch.as_tensor(np.asarray(y))
        assert out.noisy_labels.shape == clean.shape
        assert set(out.noisy_labels.tolist()) <= set(clean.tolist())  # never a new class
        changed = (out.noisy_labels != clean).float()
        assert out.rate == pytest.approx(float(changed.mean()) if len(changed) else 0.0)


@pytest.mark.parametrize("fn", list(NOISE_FUNCTIONS))
@FUZZ
@given(rate=st.sampled_from([-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.2", None]))
def test_noise_functions_refuse_bad_rates(fn, rate):
    y = torch.arange(20) % 4
    if fn == "apply_noise":
        call = lambda: noise.apply_noise(y, f"symmetric:{rate}")  # noqa: E731
        if rate == "0.2":
            return  # "symmetric:0.2" is a legal recipe
    else:
        call = lambda: NOISE_FUNCTIONS[fn](y, rate)  # noqa: E731
    clear_or_finite(call, True, f"{fn} rate={rate!r}")


@pytest.mark.parametrize(
    "fault", EMB_FAULTS + ("all_singletons", "float_labels", "labels_2d", "short_labels")
)
@FUZZ
@given(size=sizes, dtype=DTYPES)
def test_evaluate_retrieval(fault, size, dtype):
    n, d, seed = size
    x = points(n, d, dtype, seed)
    y = torch.arange(n) % C
    must_raise = fault in MUST_RAISE_EMB - {"int_dtype"} | {
        "all_singletons", "float_labels", "labels_2d", "short_labels", "singleton", "empty"
    }  # integer embeddings are legal (cast to float)
    if fault in EMB_FAULTS:
        x, y = corrupt_embeddings(x, fault), matching_labels(y, fault)
    elif fault == "all_singletons":
        y = torch.arange(n)
    elif fault == "float_labels":
        y = y.float() + 0.5
    elif fault == "labels_2d":
        y = y[:, None]
    else:
        y = y[:-1]
    out = clear_or_finite(
        lambda: evaluate_retrieval(x, y, recall_at=(1, 2), use_faiss=False),
        must_raise,
        f"evaluate_retrieval {fault}",
    )
    if fault == "int_dtype":
        assert out == evaluate_retrieval(x.float(), y, recall_at=(1, 2), use_faiss=False)
    if fault == "clean":
        assert set(out) == {"R@1", "R@2", "MAP@R"}
        assert all(0 <= v <= 1 for v in out.values())
        assert out["R@1"] <= out["R@2"]
