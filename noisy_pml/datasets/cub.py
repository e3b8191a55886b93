"""CUB-200-2011 (Wah et al., Caltech CNS-TR-2011-001) with the metric-learning class split."""

from __future__ import annotations

import os

from .base import PMLImageDataset


class CUB(PMLImageDataset):
    """CUB-200-2011 birds: classes 1-100 train (5,864 images), 101-200 test (5,924 images).

    Read through ``pytorch_metric_learning.datasets.CUB``, i.e. from the official layout
    ``root/CUB_200_2011/{images.txt, image_class_labels.txt, images/...}``. Labels are remapped to
    0..99 within each split (0..199 for ``"train+test"``); images are PIL RGB.

    Args:
        root: folder holding ``CUB_200_2011`` (e.g. ``$NOISY_PML_DATA/cub``).
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        transform: applied to the PIL image.
        noise: a [`NoiseRecipe`][noisy_pml.noise.NoiseRecipe] or its string, train split only.
        noise_seed: seed of the noise injection.
        return_index: also return the sample index (for memory banks and per-sample weights).
        download: let PML download and extract the official archive into an empty ``root``.
        noise_features: optional (N, D) features for small-cluster noise's k-means clusters.
    """

    _pml_name = "CUB"
    _first_class = {"train": 1, "test": 101, "train+test": 1}
    _num_classes = {"train": 100, "test": 100, "train+test": 200}
    _required = (
        "CUB_200_2011",
        os.path.join("CUB_200_2011", "images.txt"),
        os.path.join("CUB_200_2011", "image_class_labels.txt"),
        os.path.join("CUB_200_2011", "images"),
    )
    _layout_hint = (
        "expected the official CUB_200_2011 layout (CUB_200_2011/images.txt, "
        "image_class_labels.txt, images/<class>/<file>); set root to the folder containing "
        "CUB_200_2011"
    )
