"""trainers: Smooth Proxy-Anchor's two phases on PML's shipped trainers."""

from .batch_getter import batch_getter
from .confidence_table import ConfidenceTable, IndexedDataset
from .two_phase import (
    HeldOutEarlyStopping,
    compute_confidences,
    confidence_trainer,
    embedding_trainer,
    first_two,
    split_held_out,
)

__all__ = [
    "batch_getter",
    "ConfidenceTable",
    "HeldOutEarlyStopping",
    "IndexedDataset",
    "compute_confidences",
    "confidence_trainer",
    "embedding_trainer",
    "first_two",
    "split_held_out",
]
