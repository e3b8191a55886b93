"""Input validation shared by every public entry point.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the argument, the value
received and what was expected, so bad input never turns into a silent wrong answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` holds NaN or infinite values."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite values")


def check_float_tensor(name: str, tensor) -> None:
    """Raise ``TypeError`` unless ``tensor`` is a floating-point ``torch.Tensor``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_ndim(name: str, tensor: torch.Tensor, ndim: int) -> None:
    """Raise if ``tensor`` does not have exactly ``ndim`` dimensions."""
    if tensor.dim() != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D, got shape {tuple(tensor.shape)} ({tensor.dim()}-D)"
        )


def check_labels(
    name: str, labels: torch.Tensor, num_classes: int | None = None, length: int | None = None
) -> None:
    """Raise unless ``labels`` is a 1-D integer tensor with values in ``0..num_classes-1``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    check_ndim(name, labels, 1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if length is not None and labels.numel() != length:
        raise ValueError(f"{name} has {labels.numel()} entries, expected {length}")
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        expected = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise ValueError(
            f"{name} must lie in {expected}, got values in {lo}..{hi}"
            " (remap labels to 0-based class ids first)"
        )


def check_probabilities(name: str, tensor: torch.Tensor, shape: Sequence[int]) -> None:
    """Raise unless ``tensor`` has ``shape`` and finite values inside [0, 1]."""
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
    check_finite(name, tensor)
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
        raise ValueError(
            f"{name} must lie in [0, 1], got values in "
            f"[{tensor.min().item():.4g}, {tensor.max().item():.4g}]"
        )


def _number(name: str, value) -> torch.Tensor:
    """``value`` as a tensor; TypeError (naming it) for strings, None, bools and other objects."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor, np.number)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return torch.as_tensor(value)


def check_positive(name: str, value: float | torch.Tensor) -> None:
    """Raise unless ``value`` (a number or every entry of a tensor) is finite and > 0."""
    v = _number(name, value)
    if not torch.isfinite(v).all() or (v <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def check_positive_int(name: str, value: int) -> None:
    """Raise unless ``value`` is an integer >= 1 (a float such as 2.5 or a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def check_finite_number(name: str, value: float) -> None:
    """Raise unless ``value`` is a finite real number (NaN and +-inf refused)."""
    if not torch.isfinite(_number(name, value)).all():
        raise ValueError(f"{name} must be a finite number, got {value}")


def check_rate(name: str, value: float, allow_one: bool = False) -> None:
    """Raise unless ``0 <= value < 1`` (or ``<= 1`` with ``allow_one``)."""
    _number(name, value)
    upper_ok = value <= 1 if allow_one else value < 1
    if not (0 <= value and upper_ok):
        expected = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must lie in {expected}, got {value}")


def resolve_alias(name: str, value, alias: str, alias_value):
    """``value``, or ``alias_value`` when it was given under the deprecated keyword ``alias``.

    Raises:
        ValueError: both were given.
    """
    if alias_value is None:
        return value
    if value is not None:
        raise ValueError(f"pass {name}= ({alias}= is its deprecated alias), not both")
    return alias_value
