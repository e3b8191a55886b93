"""Dataset registry: a name -> constructor map, so benchmark configs name datasets declaratively."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .cars196 import Cars196
from .csv_dataset import CSVDataset
from .cub import CUB
from .digit_pairs import DigitPairs
from .digits import Digits
from .image_folder import ImageFolder

DATASETS: dict[str, Callable[..., Any]] = {
    "cub": CUB,
    "cars196": Cars196,
    "digits": Digits,
    "digit_pairs": DigitPairs,
    "folder": ImageFolder,
    "csv": CSVDataset,
}
_NEEDS_ROOT = {"cub": "cub", "cars196": "cars196"}  # default root: $NOISY_PML_DATA/<folder>


def parse_dataset_name(name: str) -> tuple[str, str | None]:
    """``"folder:PATH"`` -> ``("folder", "PATH")``, ``"csv:FILE"`` -> ``("csv", "FILE")``,
    ``"cub"`` -> ``("cub", None)``.

    Raises:
        ValueError: an unknown name, or ``folder`` / ``csv`` without a path.
    """
    key, sep, path = name.partition(":")
    key = key.lower()
    if key not in DATASETS or (sep and key not in ("folder", "csv")):
        raise ValueError(
            f"dataset name must be one of {sorted(set(DATASETS) - {'folder', 'csv'})}, "
            f"folder:PATH or csv:FILE, got {name!r}"
        )
    if sep and not path:
        raise ValueError(f"dataset {name!r}: give the {'folder' if key == 'folder' else 'file'} "
                         f"after the colon, e.g. {key}:/data/my_images")
    return key, (path or None)


def get_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs):
    """Build a dataset by name.

    Args:
        name: ``"cub"``, ``"cars196"``, ``"digits"``, ``"digit_pairs"``, ``"folder:PATH"`` (an
            `ImageFolder`) or ``"csv:FILE"`` (a
            `CSVDataset`); ``"folder"`` / ``"csv"`` take the path
            from ``root``.
        root: the dataset folder. For CUB / Cars196, None means ``$NOISY_PML_DATA/<name>``.
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        **kwargs: passed to the dataset class (``noise=``, ``transform=``, ...).

    Raises:
        ValueError: an unknown name; a ``root`` the dataset cannot use (Digits and DigitPairs are
            embedded;
            a path given both in the name and as ``root``); no root for CUB / Cars196.
    """
    key, path = parse_dataset_name(name)
    if key in ("folder", "csv"):
        if path is not None and root is not None:
            raise ValueError(f"get_dataset({name!r}, root={root!r}): give the path once")
        path = path if path is not None else root
        if path is None:
            raise ValueError(f"get_dataset({name!r}) needs a path: {key}:PATH or root=")
        return DATASETS[key](path, split=split, **kwargs)
    if key not in _NEEDS_ROOT:
        if root is not None:
            raise ValueError(
                f"get_dataset({name!r}, root={root!r}): {name} is embedded and reads no folder; "
                "drop root="
            )
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
    """Names accepted by [`get_dataset`][] (`folder` and `csv` take a path)."""
    return sorted(DATASETS)
