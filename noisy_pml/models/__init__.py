"""models."""

from .backbones import BACKBONES, build_backbone
from .confidence_module import ConfidenceBCELoss, ConfidenceModule
from .embedding_head import EmbeddingHead
from .poincare_head import PoincareHead

__all__ = [
    "BACKBONES",
    "build_backbone",
    "ConfidenceBCELoss",
    "ConfidenceModule",
    "EmbeddingHead",
    "PoincareHead",
]
