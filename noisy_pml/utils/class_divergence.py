"""Deprecated location: AHSML's statistics, memory bank and thresholds now live in
`noisy_pml.utils.ahsml` (`statistics`, `memory_bank`, `thresholds`). This module re-exports
them so existing imports keep working."""

from .ahsml import *  # noqa: F403
from .ahsml import __all__  # noqa: F401
