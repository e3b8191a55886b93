"""Fault injection for the public API: every bad input raises a clear ValueError/TypeError.

A "clear" error is a ``ValueError`` or ``TypeError`` with a message (an ``IndexError`` from deep
inside, a ``RuntimeError`` from a matmul or a silent NaN are the defects this suite looks for).
Good and borderline input (an empty batch, a single sample) must give a finite result or a clear
error. Hypothesis draws the sizes, dtypes and where the fault goes; examples stay few and small
so the whole suite runs in well under a minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine: CI never flakes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# faults in a float (N, D) input; "clean", "empty" and "singleton" are legal
EMB_FAULTS = ("clean", "nan", "inf", "empty", "singleton", "int_dtype", "wrong_ndim")
MUST_RAISE_EMB = {"nan", "inf", "int_dtype", "wrong_ndim"}
# faults in a 1-D label input
LABEL_FAULTS = ("clean", "negative", "float", "2d", "wrong_length")
MUST_RAISE_LABELS = {"negative", "float", "2d", "wrong_length"}
DTYPES = st.sampled_from([torch.float32, torch.float64])


def finite(out: Any) -> bool:
    """Whether every number in a result (tensor, float, tuple, dict, NoiseResult) is finite."""
    if isinstance(out, torch.Tensor):
        return bool(torch.isfinite(out).all()) if out.is_floating_point() else True
    if isinstance(out, (int, float)):
        return math.isfinite(out)
    if isinstance(out, dict):
        return all(finite(v) for v in out.values())
    if isinstance(out, (tuple, list)):
        return all(finite(v) for v in out)
    if hasattr(out, "noisy_labels"):
        return finite(out.noisy_labels) and finite(out.rate)
    return True


def clear_or_finite(fn: Callable[[], Any], must_raise: bool, what: str = "") -> Any:
    """Call ``fn``: a ValueError/TypeError with a message passes; a result must be finite and,
    when ``must_raise``, is itself the failure (bad input silently accepted)."""
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{what}: {type(e).__name__} without a message"
        return e
    if must_raise:
        pytest.fail(f"{what}: bad input accepted, returned {out!r:.200}")
    assert finite(out), f"{what}: non-finite result {out!r:.200}"
    return out


def corrupt_embeddings(x: torch.Tensor, fault: str) -> torch.Tensor:
    """Apply one fault to a clean (N, D) float tensor (N >= 2)."""
    if fault == "nan":
        x = x.clone()
        x[len(x) // 2, 0] = float("nan")
    elif fault == "inf":
        x = x.clone()
        x[0, -1] = float("inf")
    elif fault == "empty":
        x = x[:0]
    elif fault == "singleton":
        x = x[:1]
    elif fault == "int_dtype":
        x = (x * 10).long()
    elif fault == "wrong_ndim":
        x = x[None]
    return x


def corrupt_labels(y: torch.Tensor, fault: str) -> torch.Tensor:
    if fault == "negative":
        y = y.clone()
        y[0] = -1
    elif fault == "float":
        y = y.float() + 0.5
    elif fault == "2d":
        y = y[:, None]
    elif fault == "wrong_length":
        y = y[:-1]
    return y


def matching_labels(y: torch.Tensor, fault: str) -> torch.Tensor:
    """Labels matching an embedding fault's batch size (empty/singleton shrink the batch)."""
    if fault == "empty":
        return y[:0]
    if fault == "singleton":
        return y[:1]
    return y
