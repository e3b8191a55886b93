"""Bounded similarity of the Poincare ball (the hyperbolic option of the AHSML losses)."""

from __future__ import annotations

import torch

from ..utils import hyperbolic as hyp
from .poincare_distance import PoincareDistance


class PoincareSimilarity(PoincareDistance):
    r"""Bounded "gyro-cosine" similarity of the Poincare ball (inverted: larger = more similar).

    $$ s_c(x, y) = 1 - 2\tanh^2\!\big(\sqrt{c}\,d_c(x, y)/2\big) = \frac{1 - A}{1 + A},
       \qquad A = \frac{c\|x-y\|^2}{(1 - c\|x\|^2)(1 - c\|y\|^2)} $$

    (R) The hyperbolic similarity of AHSML's losses (`distance=PoincareSimilarity(c)`). It
    mirrors the cosine of unit vectors, $\cos = 1 - 2(\|x-y\|/2)^2$, with the half chord replaced
    by the gyro-norm $\tanh(\sqrt{c}\,d_c/2)$: range (-1, 1], 1 iff x == y, strictly decreasing
    in $d_c$, so it has the cosine's range and orientation. With the authors' head (unit
    vectors mapped by exp0) it is a fixed monotone function of the cosine (see
    ``noisy_pml.utils.hyperbolic.dist_from_cosine``); the Euclidean ablation ("hyperbolic off")
    is PML's ``CosineSimilarity``.

    The scale is not the cosine's: on the authors' head (unit vectors through exp0),

    | cosine   | 0     | 0.5   | 0.8   | 0.9  | 0.95 | 0.99  |
    |----------|-------|-------|-------|------|------|-------|
    | s, c=1   | -0.74 | -0.53 | -0.14 | 0.21 | 0.51 | 0.88  |
    | s, c=0.1 | 0.63  | 0.80  | 0.91  | 0.96 | 0.98 | 0.995 |

    so a constant written in cosine units does *not* keep its meaning here: a threshold of 0.5
    asks for cosine ~0.95 at c = 1. AHSML's losses therefore take every threshold, margin and
    mining epsilon in cosine units and, with this similarity, map them through the curvature
    with `from_cosine` (the similarity of two points of the authors' sphere at that cosine):
    with $r = \tanh(\sqrt{c})/\sqrt{c}$ (exp0 of unit vectors),
    $A = \kappa(1 - \cos)$, $\kappa = \sinh^2(2\sqrt{c})/2$, so

    $$ s = \frac{1 - \kappa(1 - \cos)}{1 + \kappa(1 - \cos)}, \qquad
       \cos = 1 - \frac{1 - s}{\kappa(1 + s)}. $$

    The map is exact on the authors' head and an approximation for points at other radii.

    Args: as `PoincareDistance`.
    """

    @staticmethod
    def _inverted() -> bool:
        return True

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        a, _ = hyp.pairwise_sinh2(query_emb, ref_emb, self.curvature, precise=self.precise)
        return hyp.similarity_from_sinh2(a)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        d = super().pairwise_distance(query_emb, ref_emb)
        return hyp.similarity_from_dist(d, self.curvature)

    def kappa(self, radius: float | None = None) -> torch.Tensor:
        r"""$\kappa = 2 c r^2 / (1 - c r^2)^2$ with $A = \kappa (1 - \cos)$ for two points at
        Euclidean radius $r$ (default: the authors' head, $r = \tanh(\sqrt{c})/\sqrt{c}$,
        where $\kappa = \sinh^2(2\sqrt{c})/2$)."""
        k = hyp.curvature(self.curvature)
        r = hyp.sphere_radius(float(k)) if radius is None else float(radius)
        cr2 = k * r**2
        return 2 * cr2 / (1 - cr2) ** 2

    def from_cosine(self, cos, radius: float | None = None) -> torch.Tensor:
        r"""The similarity of two points at radius `radius` whose cosine is `cos`:
        $s = (1 - \kappa(1 - \cos)) / (1 + \kappa(1 - \cos))$ (see `kappa`). Maps a
        threshold in cosine units into this similarity's units; strictly increasing."""
        cos = torch.as_tensor(cos)
        if not cos.is_floating_point():
            cos = cos.to(torch.get_default_dtype())
        a = self.kappa(radius).to(cos) * (1 - cos)
        return (1 - a) / (1 + a)

    def to_cosine(self, s: torch.Tensor, radius: float | None = None) -> torch.Tensor:
        r"""Inverse of `from_cosine`: $\cos = 1 - (1 - s) / (\kappa (1 + s))$ (clamped to
        $[-1, 1]$ for points off the sphere)."""
        k = self.kappa(radius).to(s)
        return (1 - (1 - s) / (k * (1 + s).clamp_min(torch.finfo(s.dtype).tiny))).clamp(-1, 1)
