"""losses."""

from .adaptive_threshold_loss import AdaptiveThresholdLoss
from .multi_similarity_star_loss import MultiSimilarityStarLoss
from .smooth_proxy_anchor_loss import SmoothProxyAnchorLoss

__all__ = ["AdaptiveThresholdLoss", "MultiSimilarityStarLoss", "SmoothProxyAnchorLoss"]
