"""Embedding head mapping Euclidean features into the Poincare ball."""

from __future__ import annotations

import warnings

import torch

from ..utils import hyperbolic as hyp
from ..utils.checks import check_finite, check_positive

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

    Raises:
        ValueError: (constructor) a bad mode, size, curvature or clip radius; (forward) features
            with NaN/inf values or the wrong number of columns.
        TypeError: (forward) features not a floating tensor.
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
        check_positive("clip_radius", clip_radius)
        check_positive("in_features", in_features)
        if out_features is not None:
            check_positive("out_features", out_features)
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
        self.in_features = int(in_features)

    @property
    def c(self) -> torch.Tensor:
        """The current curvature (a tensor; learnable when the ball is)."""
        return self.ball.c

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Points of the ball, shape (..., out_features) (or (..., in_features) without linear)."""
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            got = features.dtype if isinstance(features, torch.Tensor) else type(features).__name__
            raise TypeError(f"features must be a floating-point tensor, got {got}")
        if features.dim() == 0 or features.shape[-1] != self.in_features:
            raise ValueError(
                f"features must have {self.in_features} columns (in_features), got shape "
                f"{tuple(features.shape)}"
            )
        check_finite("features", features)
        u = self.linear(features)
        check_finite("PoincareHead linear output (have the head's weights diverged?)", u)
        if self.mode == "normalize":
            u = torch.nn.functional.normalize(u, dim=-1)
        else:
            norm = u.norm(dim=-1, keepdim=True).clamp_min(hyp.MIN_NORM)
            u = u * (self.clip_radius / norm).clamp(max=1)
        k = hyp.curvature(self.ball.c, u)
        # private cores: the inputs were checked above
        return hyp._project(hyp._exp0(u, k.sqrt()), k, hyp.BALL_EPS.get(u.dtype, 4e-3))
