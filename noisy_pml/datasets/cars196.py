"""Stanford Cars196 (Krause et al., 3dRR 2013) with the metric-learning class split."""

from __future__ import annotations

import os

from .base import PMLImageDataset


class Cars196(PMLImageDataset):
    """Stanford Cars: classes 1-98 train, 99-196 test.

    Read through ``pytorch_metric_learning.datasets.Cars196``, i.e. from the Kaggle "car_data"
    layout: ``root/names.csv``, ``root/anno_train.csv``, ``root/anno_test.csv`` and
    ``root/car_data/car_data/{train,test}/<class name>/<file>``. Labels are remapped to 0..97
    within each split (0..195 for ``"train+test"``); images are PIL RGB. PML pools the official
    train and test halves before applying the class split (with the full dataset: 8,054 train and
    8,131 test images; with only the official training half, 4,052 and 4,092).

    Args: as [`CUB`][noisy_pml.datasets.CUB], with ``root`` the folder holding ``names.csv``
    (e.g. ``$NOISY_PML_DATA/cars196``).
    """

    _pml_name = "Cars196"
    _first_class = {"train": 1, "test": 99, "train+test": 1}
    _num_classes = {"train": 98, "test": 98, "train+test": 196}
    _required = (
        "names.csv",
        "anno_train.csv",
        "anno_test.csv",
        os.path.join("car_data", "car_data"),
    )
    _layout_hint = (
        "expected the Kaggle 'car_data' layout read by pytorch_metric_learning.datasets.Cars196 "
        "(names.csv, anno_train.csv, anno_test.csv, car_data/car_data/<split>/<class>/<file>); "
        "set root to the folder containing names.csv"
    )
