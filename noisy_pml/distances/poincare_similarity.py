"""Bounded similarity of the Poincare ball (the AHSML losses' default)."""

from __future__ import annotations

import torch

from ..utils import hyperbolic as hyp
from .poincare_distance import PoincareDistance


class PoincareSimilarity(PoincareDistance):
    r"""Bounded "gyro-cosine" similarity of the Poincare ball (inverted: larger = more similar).

    $$
    s_c(x, y) = 1 - 2\tanh^2\!\big(\sqrt{c}\,d_c(x, y)/2\big) = \frac{1 - A}{1 + A},
    \qquad A = \frac{c\|x-y\|^2}{(1 - c\|x\|^2)(1 - c\|y\|^2)}
    $$

    (R) This is the similarity AHSML's thresholds are expressed in. It mirrors the cosine of unit
    vectors, $\cos = 1 - 2(\|x-y\|/2)^2$, with the half chord replaced by the gyro-norm
    $\tanh(\sqrt{c}\,d_c/2)$: range (-1, 1], 1 iff x == y, strictly decreasing in
    $d_c$, so it has the cosine's range and orientation. With the authors' head (unit
    vectors mapped by exp0) it is a fixed monotone function of the cosine (see
    ``noisy_pml.utils.hyperbolic.dist_from_cosine``); the Euclidean ablation ("hyperbolic off")
    is PML's ``CosineSimilarity``.

    The scale is not the cosine's: on the authors' head (unit vectors through exp0),

    ========  ======  ======  ======  =====  =====  =====
    cosine    0       0.5     0.8     0.9    0.95   0.99
    s, c=1    -0.74   -0.53   -0.14   0.21   0.51   0.88
    s, c=0.1  0.63    0.80    0.91    0.96   0.98   0.995
    ========  ======  ======  ======  =====  =====  =====

    so cosine-unit hyperparameters (MS base 0.5, AHSML gamma 0.5, delta 0.2) do *not* keep their
    meaning: a threshold of 0.5 asks for cosine ~0.95 at c = 1. Tune ``base``/``gamma`` with the
    curvature (``hyperbolic.dist_from_cosine`` and ``similarity_from_dist`` convert). Measured in
    ``benchmarks/results/README.md``: validation classes of CUB and Cars196 chose c = 0.1 / 0.3
    over the authors' c = 1 for AHSML-MS (default kept at the authors' c = 1).

    Args: as [`PoincareDistance`][].
    """

    @staticmethod
    def _inverted() -> bool:
        return True

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        a, _ = hyp.pairwise_sinh2(query_emb, ref_emb, self.curvature)
        return hyp.similarity_from_sinh2(a)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        d = super().pairwise_distance(query_emb, ref_emb)
        return hyp.similarity_from_dist(d, self.curvature)
