"""miners."""

from .noise_aware_pair_miner import NoiseAwarePairMiner
from .prism_miner import PRISMMiner

__all__ = ["NoiseAwarePairMiner", "PRISMMiner"]
