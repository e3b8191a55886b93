"""models."""

from .confidence_module import ConfidenceBCELoss, ConfidenceModule
from .embedding_head import EmbeddingHead
from .poincare_head import PoincareHead

__all__ = ["ConfidenceBCELoss", "ConfidenceModule", "EmbeddingHead", "PoincareHead"]
