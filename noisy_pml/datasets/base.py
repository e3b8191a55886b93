"""Shared logic of noisy-pml's datasets: 0-based labels, noise on the train split, index returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..noise import NoiseRecipe, NoiseResult, apply_noise

SPLITS = ("train", "test", "train+test")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


class NoisyLabelDataset(Dataset):
    """Base class: clean and (optionally) noisy labels; items ``(sample, label[, index])``.

    Subclasses load their samples and clean 0-based labels, then call `_set_labels`;
    they implement [`load_sample`][] (the untransformed sample ``idx``).

    Attributes:
        targets: LongTensor (N,), the labels training sees (noisy when ``noise`` is set).
        clean_targets: LongTensor (N,), the true labels.
        noise_mask: BoolTensor (N,), True where ``targets != clean_targets``.
        num_classes: number of classes of the split (labels lie in ``0..num_classes-1``).
        noise_result: the [`NoiseResult`][noisy_pml.noise.NoiseResult], or None when clean.
    """

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.transform = transform
        self.noise = NoiseRecipe.parse(noise)
        if not self.noise.is_clean and split != "train":
            raise ValueError(
                f"noise={str(self.noise)!r} was given for split={split!r}: label noise is "
                "injected into the train split only (the test split must stay clean)"
            )
        self.noise_seed = noise_seed
        self.return_index = return_index
        self.noise_result: NoiseResult | None = None

    def _set_labels(
        self, clean: torch.Tensor, num_classes: int, noise_features: Any = None
    ) -> None:
        self.clean_targets = clean.long()
        self.num_classes = int(num_classes)
        if self.noise.is_clean:
            self.targets = self.clean_targets.clone()
            self.noise_mask = torch.zeros(len(clean), dtype=torch.bool)
            return
        self.noise_result = apply_noise(
            self.clean_targets,
            self.noise,
            seed=self.noise_seed,
            features=noise_features,
            num_classes=self.num_classes,
        )
        self.targets = self.noise_result.noisy_labels
        self.noise_mask = self.noise_result.noise_mask

    @property
    def labels(self) -> np.ndarray:
        """The training labels as a numpy array (what PML's samplers read)."""
        return self.targets.numpy()

    def load_sample(self, idx: int) -> Any:
        """Untransformed sample ``idx`` (PIL image, or tensor for Digits)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, idx: int) -> tuple:
        sample = self.load_sample(idx)
        if self.transform is not None:
            sample = self.transform(sample)
        label = int(self.targets[idx])
        if self.return_index:
            return sample, label, idx
        return sample, label

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        noise = str(self.noise)
        if self.noise_result is not None:
            noise += f" (achieved {self.noise_result.rate:.3f})"
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, noise={noise}{self.extra_repr()})"
        )


class PMLImageDataset(NoisyLabelDataset):
    """An image dataset read through one of ``pytorch_metric_learning.datasets``' classes.

    PML reads the official layout and applies its class split with 1-based labels; this class
    checks the layout first (so a wrong ``root`` gives a [`DatasetNotFoundError`][] saying what
    was expected where), remaps labels to ``0..num_classes-1`` within the split, converts images
    to RGB, and injects noise into the train split. Subclasses set:

    - ``_pml_name``: the PML class name (``"CUB"``, ``"Cars196"``);
    - ``_first_class``: 1-based id of the first class of each split (the label offset);
    - ``_num_classes``: number of classes of each split;
    - ``_required``: files under ``root`` that must exist, and ``_layout_hint``.
    """

    _pml_name: str = ""
    _first_class: dict[str, int] = {}
    _num_classes: dict[str, int] = {}
    _required: tuple[str, ...] = ()
    _layout_hint: str = ""

    def __init__(
        self,
        root: str,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
        download: bool = False,
        noise_features: Any = None,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        self.root = os.fspath(root)
        if not download:
            self._check_layout()
        import pytorch_metric_learning.datasets as pml_datasets  # imports PIL: keep it lazy

        try:
            pml = getattr(pml_datasets, self._pml_name)(
                root=self.root, split=split, transform=None, download=download
            )
        except (OSError, ValueError, IndexError) as e:
            raise DatasetNotFoundError(
                f"could not read {type(self).__name__} from {self.root}: {e}. {self._layout_hint}"
            ) from e
        if len(pml.labels) == 0:
            raise DatasetNotFoundError(
                f"{type(self).__name__} found no image of split {split!r} in {self.root}. "
                f"{self._layout_hint}"
            )
        self.img_paths = [os.fspath(p) for p in pml.paths]
        for p in {self.img_paths[0], self.img_paths[-1]}:
            if not os.path.isfile(p):
                raise DatasetNotFoundError(
                    f"{p} not found: the index files list images that are not on disk. "
                    f"{self._layout_hint}"
                )
        clean = torch.as_tensor(pml.labels, dtype=torch.long) - self._first_class[split]
        num_classes = self._num_classes[split]
        lo, hi = int(clean.min()), int(clean.max())
        if lo < 0 or hi >= num_classes:
            raise DatasetNotFoundError(
                f"{type(self).__name__} {split} labels span {lo + self._first_class[split]}.."
                f"{hi + self._first_class[split]} (1-based), outside the class split; "
                f"{self._layout_hint}"
            )
        self._set_labels(clean, num_classes, noise_features=noise_features)

    def _check_layout(self) -> None:
        if not os.path.isdir(self.root):
            raise DatasetNotFoundError(
                f"{self.root} is not a folder. {self._layout_hint} "
                "(or pass download=True to fetch the official archive)"
            )
        for rel in self._required:
            path = os.path.join(self.root, rel)
            if not os.path.exists(path):
                raise DatasetNotFoundError(f"{path} not found: {self._layout_hint}")

    def load_sample(self, idx: int) -> Any:
        from PIL import Image  # pillow ships with the `bench` extra (torchvision needs it)

        with Image.open(self.img_paths[idx]) as img:
            return img.convert("RGB")

    def extra_repr(self) -> str:
        return f", root={self.root!r}"
