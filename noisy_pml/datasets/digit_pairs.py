"""Pairs of scikit-learn's 8x8 digits side by side: 100 classes, no download."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..noise import NoiseRecipe
from .base import NoisyLabelDataset


class DigitPairs(NoisyLabelDataset):
    """Two scikit-learn digits side by side (8x16 images); the class is the ordered pair.

    A tiny embedded dataset with many classes (the default of `noisy-pml bench`): an image of
    class ``(a, b)`` is a digit ``a`` image next to a digit ``b`` image, both taken from
    scikit-learn's bundled digits (``sklearn.datasets.load_digits``), so there are 100 classes
    ``(0, 0) .. (9, 9)``. Unlike `Digits` (5 training classes), symmetric label noise spreads
    over many wrong classes, as on CUB / Cars196, and retrieval needs both halves: a class
    shares its left digit with 9 other classes and its right digit with 9 others.

    The split is class-disjoint and image-disjoint, fixed by ``seed``:

    - classes: a seeded permutation of the 100 pairs; the first ``train_classes`` are the
      training classes (labels ``0..train_classes-1`` in that order), the others the test
      classes (labels ``0..`` again, in their order). The test *pairs* are never seen in
      training, but their digits are: this tests generalisation to new combinations of known
      parts, not to new digits.
    - source images: each digit's scikit-learn images are split in two halves (seeded); training
      composites use only the first half, test composites only the second, so no source image
      is shared by the two splits.
    - composites: ``train_per_class`` (``test_per_class``) distinct (left image, right image)
      combinations per class, drawn without replacement.

    ``split="train+test"`` holds both, labels ``0..99`` (training classes first, so a training
    label is the same in both splits). ``pairs[label]`` is the ``(left digit, right digit)`` of
    a label, ``sources`` the scikit-learn indices ``(left, right)`` of each image.

    Samples are float tensors (1, 8, 16) with values in [0, 1] (pixel / 16), passed to
    ``transform`` when one is given. ``data`` holds the same values as a float32 array
    (N, 128), row-major (the noise features of small-cluster noise, as in `Digits`).

    Raises:
        ValueError: ``train_classes`` outside 1..99, or a per-class count < 1 or larger than
            the distinct combinations a split's source images allow.
    """

    NUM_PAIRS = 100

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        noise: NoiseRecipe | str | None = None,
        noise_seed: int = 0,
        return_index: bool = False,
        train_classes: int = 50,
        train_per_class: int = 30,
        test_per_class: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__(split, transform, noise, noise_seed, return_index)
        if not 1 <= train_classes < self.NUM_PAIRS:
            raise ValueError(f"train_classes must be in 1..99, got {train_classes}")
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
        y = bunch.target.astype(np.int64)
        rng = np.random.default_rng(seed)
        pools: list[tuple[np.ndarray, np.ndarray]] = []
        for d in range(10):
            idx = rng.permutation(np.flatnonzero(y == d))
            pools.append((idx[: len(idx) // 2], idx[len(idx) // 2 :]))
        order = rng.permutation(self.NUM_PAIRS)
        train_pairs = [divmod(int(p), 10) for p in order[:train_classes]]
        test_pairs = [divmod(int(p), 10) for p in order[train_classes:]]
        parts = []
        for which, (pairs, per_class) in enumerate(
            ((train_pairs, train_per_class), (test_pairs, test_per_class))
        ):
            if split != "train+test" and which != ("train", "test").index(split):
                continue
            src = self._draw(pools, pairs, per_class, which, seed)
            parts.append((pairs, src))
        self.pairs: list[tuple[int, int]] = [p for pairs, _ in parts for p in pairs]
        self.sources = np.concatenate([src for _, src in parts])
        labels, offset = [], 0
        for pairs, src in parts:
            labels.append(np.repeat(np.arange(len(pairs)) + offset, len(src) // len(pairs)))
            offset += len(pairs)
        self.data = np.concatenate([x[self.sources[:, 0]], x[self.sources[:, 1]]], axis=2)
        self.data = self.data.reshape(len(self.sources), 128)
        self.img_paths = [f"sklearn-digits#{a}+{b}" for a, b in self.sources.tolist()]
        self._set_labels(
            torch.from_numpy(np.concatenate(labels)), len(self.pairs), noise_features=self.data
        )

    @staticmethod
    def _draw(
        pools: list[tuple[np.ndarray, np.ndarray]],
        pairs: list[tuple[int, int]],
        per_class: int,
        which: int,
        seed: int,
    ) -> np.ndarray:
        """(len(pairs) * per_class, 2) scikit-learn indices, ``per_class`` distinct
        combinations per pair, each split from its own half of the source images."""
        out = []
        for a, b in pairs:
            left, right = pools[a][which], pools[b][which]
            n = len(left) * len(right)
            if not 1 <= per_class <= n:
                raise ValueError(
                    f"{('train', 'test')[which]}_per_class must be in 1..{n} for pair "
                    f"({a}, {b}) (distinct combinations of its source images), got {per_class}"
                )
            # one stream per (split, pair): a class's images do not depend on the others
            rng = np.random.default_rng([seed, which, a, b])
            flat = rng.choice(n, per_class, replace=False)
            out.append(np.stack([left[flat // len(right)], right[flat % len(right)]], axis=1))
        return np.concatenate(out)

    def load_sample(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(self.data[idx]).view(1, 8, 16)
