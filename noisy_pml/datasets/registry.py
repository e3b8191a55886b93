"""Dataset registry: a name -> constructor map, so benchmark configs name datasets declaratively."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .cars196 import Cars196
from .cub import CUB
from .digits import Digits

DATASETS: dict[str, Callable[..., Any]] = {"cub": CUB, "cars196": Cars196, "digits": Digits}
_NEEDS_ROOT = {"cub": "cub", "cars196": "cars196"}


def get_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs):
    """Build a dataset by name (``"cub"``, ``"cars196"``, ``"digits"``).

    For CUB / Cars196, ``root=None`` means ``$NOISY_PML_DATA/<name>`` (``cub`` or ``cars196``);
    Digits ignores ``root``. Other keyword arguments go to the dataset class.
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"dataset name must be one of {sorted(DATASETS)}, got {name!r}")
    if key not in _NEEDS_ROOT:
        return DATASETS[key](split=split, **kwargs)
    if root is None:
        env = os.environ.get("NOISY_PML_DATA")
        if not env:
            raise ValueError(
                f"get_dataset({name!r}) needs root= (the folder of the dataset) or the "
                "NOISY_PML_DATA environment variable (its parent folder)"
            )
        root = os.path.join(env, _NEEDS_ROOT[key])
    return DATASETS[key](root, split=split, **kwargs)


def list_datasets() -> list[str]:
    """Names accepted by [`get_dataset`][]."""
    return sorted(DATASETS)
