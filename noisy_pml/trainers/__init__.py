"""trainers: Smooth Proxy-Anchor's two phases on PML's shipped trainers."""

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
    "ConfidenceTable",
    "HeldOutEarlyStopping",
    "IndexedDataset",
    "compute_confidences",
    "confidence_trainer",
    "embedding_trainer",
    "first_two",
    "split_held_out",
]
