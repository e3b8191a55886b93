"""Datasets with seeded label noise on the train split (CUB, Cars196, Digits, DigitPairs, any
image folder or CSV file), the two-view wrapper and class-balanced batches."""

from .base import (
    CorruptImageError,
    DatasetCorruptError,
    DatasetNotFoundError,
    NoisyLabelDataset,
    PMLImageDataset,
)
from .cars196 import Cars196
from .csv_dataset import CSVDataset
from .cub import CUB
from .digit_pairs import DigitPairs
from .digits import Digits
from .image_folder import ImageFolder
from .registry import DATASETS, get_dataset, list_datasets
from .sampler import ClassBalancedBatchSampler
from .two_view import TwoViewDataset

__all__ = [
    "CUB",
    "Cars196",
    "CSVDataset",
    "ClassBalancedBatchSampler",
    "DigitPairs",
    "Digits",
    "ImageFolder",
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
