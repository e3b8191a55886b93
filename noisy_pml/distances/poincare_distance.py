"""Geodesic distance of the Poincare ball as a pytorch-metric-learning distance."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance

from ..utils import hyperbolic as hyp


class PoincareDistance(BaseDistance):
    r"""Poincare-ball distance (not inverted: smaller means more similar).

    $$
    d_c(x, y) = \frac{2}{\sqrt{c}}\operatorname{asinh}
    \sqrt{\frac{c\|x-y\|^2}{(1 - c\|x\|^2)(1 - c\|y\|^2)}}
    $$

    Works wherever PML accepts a non-cosine distance: ContrastiveLoss, TripletMarginLoss,
    MultiSimilarityLoss, NTXentLoss, SupConLoss, the miners, and the testers through
    ``AccuracyCalculator(knn_func=CustomKNN(PoincareDistance(...)))``.

    Embeddings must already lie inside the ball (e.g. from [`noisy_pml.models.PoincareHead`][]);
    they are never L2-normalised (that would put them on the boundary, at infinite distance), and
    points outside the ball raise ``ValueError``. Matrices take one matmul: O(N M) memory, no
    N x M x D broadcast; self-distance matrices have an exact zero diagonal.

    The matmul expansion $\|x-y\|^2 = \|x\|^2 + \|y\|^2 - 2x\cdot y$ cancels for close points
    (in float32, pairs 1e-4 apart had relative errors above 1 near the boundary). With
    ``precise=True`` (default) the near pairs are recomputed as direct differences: relative
    error below 1e-3 in float32 for pairs >= 1e-4 apart, and identical points at exactly 0 even
    as separate tensors (e.g. the diagonal of PML's ``BatchedDistance`` chunks). The cost is
    measured in ``benchmarks/results/poincare_precision.md``; ``precise=False`` keeps the bare
    matmul.

    Args:
        c: curvature > 0, or a ``geoopt.PoincareBall`` (e.g. ``PoincareBall(1.0, learnable=True)``
            shared with the head, so a learnable curvature is trained through the loss).
        precise: recompute near pairs directly (see above).
        **kwargs: passed to ``BaseDistance`` (``power``); ``normalize_embeddings=True`` and
            ``is_inverted=True`` are rejected.

    Raises:
        TypeError: (at call time) query and reference of different dtypes, or not floating.
        ValueError: (at call time) different embedding sizes, or points outside the ball.
    """

    def __init__(self, c=1.0, precise: bool = True, **kwargs):
        if kwargs.pop("normalize_embeddings", False):
            raise ValueError(
                "normalize_embeddings=True would L2-normalise points onto the Poincare ball's "
                "boundary (infinite distances); map features into the ball with PoincareHead"
            )
        if kwargs.pop("is_inverted", False):
            raise ValueError(f"{type(self).__name__} has a fixed orientation; got is_inverted=True")
        super().__init__(normalize_embeddings=False, is_inverted=self._inverted(), **kwargs)
        if isinstance(c, torch.nn.Module):
            hyp.curvature(c)
            self.ball = c
        else:
            self.ball = None
            self.c = float(hyp.curvature(c))
        self.precise = bool(precise)

    @staticmethod
    def _inverted() -> bool:
        return False

    @property
    def curvature(self):
        """The curvature: a float, or the ball's (possibly learnable) ``c`` tensor."""
        return self.ball if self.ball is not None else self.c

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return hyp.pairwise_dist(query_emb, ref_emb, self.curvature, precise=self.precise)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return hyp.dist(query_emb, ref_emb, self.curvature)
