"""AHSML (Yan et al., IEEE TIP 2023) building blocks: class statistics (pure functions), one
embedding memory bank (shared with PRISMMiner) and the adaptive per-pair thresholds."""

from .memory_bank import EmbeddingMemoryBank, distance_key
from .statistics import (
    class_pair_means,
    cosine_class_means,
    cosine_statistics_from_sums,
    instance_ids_from_views,
    minmax_to_range,
    pair_masks,
)
from .thresholds import (
    AUGMENTATION_READINGS,
    COLLAPSE_STATISTICS,
    MEMORY_STATISTICS,
    NEGATIVE_READINGS,
    NORMALIZATIONS,
    SCOPES,
    AdaptiveThresholds,
    ThresholdResult,
    collapse_statistics,
    from_cosine_units,
    to_cosine_units,
)

__all__ = [
    "AUGMENTATION_READINGS",
    "COLLAPSE_STATISTICS",
    "MEMORY_STATISTICS",
    "NEGATIVE_READINGS",
    "NORMALIZATIONS",
    "SCOPES",
    "AdaptiveThresholds",
    "EmbeddingMemoryBank",
    "ThresholdResult",
    "class_pair_means",
    "collapse_statistics",
    "cosine_class_means",
    "cosine_statistics_from_sums",
    "distance_key",
    "from_cosine_units",
    "instance_ids_from_views",
    "minmax_to_range",
    "pair_masks",
    "to_cosine_units",
]
