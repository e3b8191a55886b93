"""Embedding head mapping Euclidean features into the Poincare ball."""

from __future__ import annotations

import warnings

import torch

from ..utils import hyperbolic as hyp

with warnings.catch_warnings():
    # geoopt 0.5 decorates functions with torch.jit.script, which recent torch deprecates
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    import geoopt

MODES = ("normalize", "clip")


class PoincareHead(torch.nn.Module):
    r"""Linear layer followed by the exponential map at the origin of the Poincare ball.

    - ``mode="normalize"`` (AHSML authors, c = 1):
      $z = \exp_0(u / \|u\|)$, every point on the sphere of radius
      $\tanh(\sqrt{c})/\sqrt{c}$, so distances are a monotone function of the cosine.
    - ``mode="clip"`` (Hyp-ViT, Ermolov et al. 2022; HIER, Kim et al. 2023; use c = 0.1):
      $z = \exp_0(\min(1, r/\|u\|)\,u)$ with clip radius $r$ = 2.3.

    The output is finally projected inside the ball (``hyperbolic.project``), so float32
    rounding of ``tanh`` never puts a point on the boundary.

    Args:
        in_features: input feature size.
        out_features: embedding size; ``None`` skips the linear layer.
        c: curvature > 0 or a ``geoopt.PoincareBall`` to share (e.g. with ``PoincareDistance``).
        learnable_c: create the ball with a learnable curvature (ignored if ``c`` is a ball).
        mode: ``"normalize"`` or ``"clip"``.
        clip_radius: $r$ for ``mode="clip"``.
        bias: bias of the linear layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        c: float | geoopt.PoincareBall = 1.0,
        learnable_c: bool = False,
        mode: str = "normalize",
        clip_radius: float = 2.3,
        bias: bool = True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if clip_radius <= 0:
            raise ValueError(f"clip_radius must be > 0, got {clip_radius}")
        if isinstance(c, geoopt.PoincareBall):
            self.ball = c
        else:
            self.ball = geoopt.PoincareBall(c=float(hyp.curvature(c)), learnable=learnable_c)
        self.linear = (
            torch.nn.Identity()
            if out_features is None
            else torch.nn.Linear(in_features, out_features, bias=bias)
        )
        self.mode, self.clip_radius = mode, float(clip_radius)

    @property
    def c(self) -> torch.Tensor:
        """The current curvature (a tensor; learnable when the ball is)."""
        return self.ball.c

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        u = self.linear(features)
        if self.mode == "normalize":
            u = torch.nn.functional.normalize(u, dim=-1)
        else:
            norm = u.norm(dim=-1, keepdim=True).clamp_min(hyp.MIN_NORM)
            u = u * (self.clip_radius / norm).clamp(max=1)
        c = self.ball.c.to(u.dtype)
        return hyp.project(hyp.exp0(u, c), c)
