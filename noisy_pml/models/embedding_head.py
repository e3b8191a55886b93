"""A residual embedding head for frozen (or fine-tuned) backbone features."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EmbeddingHead", "principal_directions"]

HEAD_KINDS = ("linear", "residual", "mlp")
HEAD_INITS = ("pca", "random")


@torch.no_grad()
def principal_directions(features: torch.Tensor) -> torch.Tensor:
    """Rows are the principal directions of ``features`` (N, D), by decreasing variance.

    The eigenvectors of the centred scatter matrix $Z^\\top Z$, $Z = X - \\bar{x}$, computed
    in float64.

    Args:
        features: (N, D) float tensor.

    Returns:
        (D, D) float32 tensor; row $k$ is the $k$-th principal direction.
    """
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {tuple(features.shape)}")
    z = (features - features.mean(0)).double()
    _, vecs = torch.linalg.eigh(z.T @ z)
    return vecs.flip(1).T.float().contiguous()


class EmbeddingHead(nn.Module):
    """Embedding head $f(x) = W (x - \\mu) + g(x - \\mu)$ on backbone features.

    - ``kind="linear"``: $W$ only; ``"residual"``: plus an MLP branch
      $g = W_2\\,\\mathrm{ReLU}(W_1 \\cdot)$ whose last layer starts at zero, so training starts
      at the linear map and learns a refinement; ``"mlp"``: $g$ alone (randomly initialised).
    - $\\mu$ is a buffer (zero unless built by `from_features`).

    Args:
        in_features: backbone feature size $D$.
        out_features: embedding size.
        kind: ``"linear"``, ``"residual"`` or ``"mlp"``.
        hidden: hidden width of the MLP branch.

    Raises:
        ValueError: for an unknown ``kind`` or non-positive sizes.
    """

    def __init__(
        self, in_features: int, out_features: int, kind: str = "residual", hidden: int = 512
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")
        for name, v in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("hidden", hidden),
        ):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        self.kind = kind
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("mean", torch.zeros(self.in_features))
        self.linear = (
            nn.Linear(self.in_features, self.out_features, bias=False) if kind != "mlp" else None
        )
        self.branch = None
        if kind in ("residual", "mlp"):
            self.branch = nn.Sequential(
                nn.Linear(self.in_features, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, self.out_features),
            )
            if kind == "residual":
                nn.init.zeros_(self.branch[2].weight)
                nn.init.zeros_(self.branch[2].bias)

    @classmethod
    def from_features(
        cls,
        features: torch.Tensor,
        out_features: int,
        kind: str = "residual",
        hidden: int = 512,
        init: str = "pca",
        directions: torch.Tensor | None = None,
    ) -> EmbeddingHead:
        """A head centred on ``features`` (N, D); with ``init="pca"`` its linear map starts as
        the projection on the top ``out_features`` principal directions (``out_features`` is
        then capped at D), so training starts at the features' own geometry.
        ``directions`` may pass ``principal_directions(features)`` computed once for many heads.

        Raises:
            ValueError: for an unknown ``init``.
        """
        if init not in HEAD_INITS:
            raise ValueError(f"init must be one of {HEAD_INITS}, got {init!r}")
        d = int(features.shape[1])
        out = min(int(out_features), d) if init == "pca" else int(out_features)
        head = cls(d, out, kind, hidden)
        head.mean.copy_(features.mean(0))
        if head.linear is not None and init == "pca":
            dirs = principal_directions(features) if directions is None else directions
            head.linear.weight.data.copy_(dirs[:out])
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x - self.mean
        out = self.linear(z) if self.linear is not None else 0
        if self.branch is not None:
            out = out + self.branch(z)
        return out
