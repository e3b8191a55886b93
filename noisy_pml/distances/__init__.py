"""distances."""

from .poincare_distance import PoincareDistance
from .poincare_similarity import PoincareSimilarity

__all__ = ["PoincareDistance", "PoincareSimilarity"]
