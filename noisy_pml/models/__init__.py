"""models."""

from .confidence_module import ConfidenceBCELoss, ConfidenceModule
from .poincare_head import PoincareHead

__all__ = ["ConfidenceBCELoss", "ConfidenceModule", "PoincareHead"]
