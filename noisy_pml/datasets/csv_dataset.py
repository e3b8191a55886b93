"""A CSV file of image paths and labels (OML's format) as a noisy-label retrieval dataset."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import Any

from ..noise import NoiseRecipe
from .base import DatasetNotFoundError
from .image_folder import ClassDisjointImages, _natural, split_classes

__all__ = ["CSVDataset"]

_SPLIT_NAMES = {"train": "train", "test": "test", "validation": "test", "val": "test"}


class CSVDataset(ClassDisjointImages):
    """Images listed in a CSV file with columns ``path``, ``label`` and optionally ``split``.

    ``path`` is absolute or relative to ``root`` (default: the CSV's folder). ``label`` is any
    class name (text or number). With a ``split`` column (``train``, or ``test`` /
    ``validation`` / ``val`` as in Open Metric Learning's files), rows go where it says;
    without one, classes are split class-disjointly by sorted name, first half train (as
    `ImageFolder`). Labels are ``0..C-1`` within the split in sorted
    class-name order; ``class_names`` maps them back. Other columns are ignored.

    Args:
        csv_file: the CSV file (comma separated, header row).
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        root: folder that relative paths start from (default: the CSV file's folder).
        transform, noise, noise_seed, return_index, noise_features: as
            `ImageFolder`.

    Raises:
        DatasetNotFoundError: the CSV file or a listed image file does not exist (named).
        ValueError: a missing column, an empty ``path`` or ``label``, an unknown ``split``
            value (row named), a split with no image.
    """

    def __init__(
        self,
        csv_file: str | os.PathLike,
        split: str = "train",
        root: str | os.PathLike | None = None,
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
        noise_features: Any = None,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        self.csv_file = os.fspath(csv_file)
        if not os.path.isfile(self.csv_file):
            raise DatasetNotFoundError(f"CSV file {self.csv_file!r} not found")
        self.root = os.fspath(root) if root is not None else os.path.dirname(self.csv_file)
        with open(self.csv_file, newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise ValueError(
                    f"CSV file {self.csv_file!r} lacks column(s) {missing}; found {columns}, "
                    "expected path,label[,split]"
                )
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
        has_split = "split" in columns
        paths, names, splits = [], [], []
        for line, r in enumerate(rows, start=2):
            if not r["path"] or not r["label"]:
                raise ValueError(f"{self.csv_file}, line {line}: empty path or label")
            path = r["path"] if os.path.isabs(r["path"]) else os.path.join(self.root, r["path"])
            if not os.path.isfile(path):
                raise DatasetNotFoundError(
                    f"{self.csv_file}, line {line}: image file {path!r} not found"
                )
            if has_split:
                value = r["split"].lower()
                if value not in _SPLIT_NAMES:
                    raise ValueError(
                        f"{self.csv_file}, line {line}: split {r['split']!r} is not one of "
                        f"{sorted(_SPLIT_NAMES)}"
                    )
                splits.append(_SPLIT_NAMES[value])
            paths.append(path)
            names.append(r["label"])
        if has_split:
            wanted = {"train": {"train"}, "test": {"test"}, "train+test": {"train", "test"}}
            rows_of_split = [i for i, s in enumerate(splits) if s in wanted[split]]
            paths = [paths[i] for i in rows_of_split]
            names = [names[i] for i in rows_of_split]
            classes = sorted(set(names), key=_natural)
        else:
            classes = split_classes(sorted(set(names)), split)
        if not classes:
            raise ValueError(f"CSV file {self.csv_file!r} has no image in split {split!r}")
        self._set_images(paths, names, classes, noise_features)
