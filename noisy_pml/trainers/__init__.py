"""trainers: Smooth Proxy-Anchor's two phases on PML's shipped trainers, and the one batch
getter handing per-sample information to losses and miners."""

from .batch_getter import batch_getter
from .confidence_table import ConfidenceTable, IndexedDataset
from .two_phase import (
    DETECTION_FOLDS,
    DETECTION_PATIENCE,
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
    "DETECTION_FOLDS",
    "DETECTION_PATIENCE",
    "ConfidenceTable",
    "HeldOutEarlyStopping",
    "IndexedDataset",
    "assign_folds",
    "batch_getter",
    "compute_confidences",
    "confidence_trainer",
    "embedding_trainer",
    "estimate_confidences",
    "first_two",
    "split_held_out",
]
