"""Any image collection as a class-disjoint noisy-label retrieval dataset: one folder per class."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..noise import NoiseRecipe
from .base import DatasetNotFoundError, NoisyLabelDataset

__all__ = ["IMAGE_EXTENSIONS", "ClassDisjointImages", "ImageFolder", "split_classes"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def split_classes(class_names: Sequence[str], split: str) -> list[str]:
    """The classes of ``split`` under the class-disjoint protocol of CUB / Cars196: classes
    sorted by name, the first half (rounded up) trains, the second half tests.

    Args:
        class_names: every class name (any order, no duplicates).
        split: ``"train"``, ``"test"`` or ``"train+test"``.

    Returns:
        The sorted class names of ``split``.
    """
    names = sorted(class_names, key=_natural)
    half = (len(names) + 1) // 2
    return {"train": names[:half], "test": names[half:], "train+test": names}[split]


def _natural(name: str) -> tuple:
    """Sort key: numbers by value ("2" before "10"), then everything else by text."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


class ClassDisjointImages(NoisyLabelDataset):
    """Base of `ImageFolder` and `CSVDataset`: image files with
    class names, labels ``0..C-1`` in sorted class-name order within the split, noise on the
    train split, and `verify` to open every image once.

    Attributes:
        img_paths: image file of each sample.
        class_names: class name of each label id (``class_names[label]``).
    """

    def _set_images(
        self, paths: list[str], names: list[str], classes: list[str], noise_features: Any
    ) -> None:
        index = {c: i for i, c in enumerate(classes)}
        keep = [i for i, n in enumerate(names) if n in index]
        self.img_paths = [paths[i] for i in keep]
        self.class_names = list(classes)
        labels = torch.tensor([index[names[i]] for i in keep], dtype=torch.long)
        self._set_labels(labels, len(classes), noise_features=noise_features)

    def load_sample(self, idx: int) -> Any:
        """The image ``idx`` as a PIL RGB image.

        Raises:
            OSError: naming the file when it cannot be read as an image.
        """
        from PIL import Image

        path = self.img_paths[idx]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read image {path} (sample {idx}): {e}") from e

    def verify(self) -> None:
        """Decode every image once; raise naming the first file that is not a readable image.

        Raises:
            OSError: ``cannot read image <path>``.
        """
        for i in range(len(self.img_paths)):
            self.load_sample(i)

    def extra_repr(self) -> str:
        return f", root={self.root!r}"


class ImageFolder(ClassDisjointImages):
    """``root/<class name>/<image>``: one folder per class, split class-disjointly.

    Classes are sorted by name (numbers by value); the first half (rounded up) is the train
    split, the rest the test split, as CUB's 1-100 / 101-200. Labels are ``0..C-1`` within the
    split in that order; ``class_names`` maps them back. Files whose extension is not in
    ``extensions`` are ignored; hidden files and folders too.

    Args:
        root: the folder holding one sub-folder per class.
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        transform: applied to the PIL image.
        noise: a `NoiseRecipe` or its string, train split only.
        noise_seed: seed of the noise injection.
        return_index: items are ``(image, label, index)``.
        noise_features: optional (N, D) features for small-cluster noise.
        extensions: image file extensions (lower case).

    Raises:
        DatasetNotFoundError: ``root`` is not a folder or holds no class folder.
        ValueError: a class folder holds no image (named), or fewer than 2 classes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
        noise_features: Any = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise DatasetNotFoundError(
                f"ImageFolder root {self.root!r} is not a folder; expected root/<class>/<image>"
            )
        exts = tuple(e.lower() for e in extensions)
        classes = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if len(classes) < 2:
            raise DatasetNotFoundError(
                f"ImageFolder root {self.root!r} has {len(classes)} class folder(s); expected "
                "at least 2 (train and test classes), laid out as root/<class>/<image>"
            )
        paths, names = [], []
        for c in classes:
            folder = os.path.join(self.root, c)
            files = sorted(
                f for f in os.listdir(folder)
                if not f.startswith(".") and f.lower().endswith(exts)
            )
            if not files:
                raise ValueError(
                    f"class folder {folder!r} holds no image (extensions {', '.join(exts)}); "
                    "remove it or add its images"
                )
            paths += [os.path.join(folder, f) for f in files]
            names += [c] * len(files)
        self._set_images(paths, names, split_classes(classes, split), noise_features)
