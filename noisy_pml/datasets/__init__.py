"""Datasets with seeded label noise on the train split (CUB, Cars196, Digits), two-view wrapper."""

from .base import (
    CorruptImageError,
    DatasetCorruptError,
    DatasetNotFoundError,
    NoisyLabelDataset,
    PMLImageDataset,
)
from .cars196 import Cars196
from .cub import CUB
from .digits import Digits
from .registry import DATASETS, get_dataset, list_datasets
from .two_view import TwoViewDataset

__all__ = [
    "CUB",
    "Cars196",
    "Digits",
    "TwoViewDataset",
    "CorruptImageError",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "NoisyLabelDataset",
    "PMLImageDataset",
    "DATASETS",
    "get_dataset",
    "list_datasets",
]
