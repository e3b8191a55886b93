"""scikit-learn's bundled 8x8 digits as a tiny class-disjoint retrieval dataset (no download)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..noise import NoiseRecipe
from .base import NoisyLabelDataset


class Digits(NoisyLabelDataset):
    """Digits 0-4 train, 5-9 test (labels remapped to 0..4), the class split of CUB / Cars196.

    1,797 greyscale 8x8 images shipped with scikit-learn (``sklearn.datasets.load_digits``), so
    tests, examples and notebooks run anywhere in seconds. ``split="train+test"`` keeps all ten
    digits (labels 0..9).

    Samples are float tensors (1, 8, 8) with values in [0, 1] (pixel / 16), passed to
    ``transform`` when one is given. ``data`` holds the same values as a float32 array (N, 64),
    handy for feeding a linear or MLP embedder directly. Small-cluster noise clusters the pixels
    with k-means (``data`` serves as the noise features).
    """

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32)
        y = bunch.target.astype(np.int64)
        if split == "train":
            keep, offset, num_classes = y < 5, 0, 5
        elif split == "test":
            keep, offset, num_classes = y >= 5, 5, 5
        else:
            keep, offset, num_classes = np.ones_like(y, dtype=bool), 0, 10
        self.data = x[keep]
        self.img_paths = [f"sklearn-digits#{i}" for i in np.flatnonzero(keep)]
        self._set_labels(torch.from_numpy(y[keep] - offset), num_classes, noise_features=self.data)

    def load_sample(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(self.data[idx]).view(1, 8, 8)
