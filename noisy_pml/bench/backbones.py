"""Re-export of `noisy_pml.models.backbones` (the benchmark's backbones are public)."""

from ..models.backbones import *  # noqa: F403
from ..models.backbones import __all__  # noqa: F401
