"""trainers: Smooth Proxy-Anchor's two phases on PML's shipped trainers."""

from .confidence_table import ConfidenceTable, IndexedDataset
from .two_phase import (
    DEFAULT_FOLDS,
    HeldOutEarlyStopping,
    assign_folds,
    compute_confidences,
    confidence_trainer,
    embedding_trainer,
    estimate_confidences,
    first_two,
    split_held_out,
)

__all__ = [
    "DEFAULT_FOLDS",
    "ConfidenceTable",
    "HeldOutEarlyStopping",
    "IndexedDataset",
    "assign_folds",
    "compute_confidences",
    "confidence_trainer",
    "embedding_trainer",
    "estimate_confidences",
    "first_two",
    "split_held_out",
]
