"""Re-export of `noisy_pml.utils.feature_cache` (the benchmark's feature cache is public)."""

from ..utils.feature_cache import *  # noqa: F403
from ..utils.feature_cache import __all__  # noqa: F401
