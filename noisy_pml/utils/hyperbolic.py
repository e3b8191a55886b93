r"""Poincare-ball math as small pure functions of tensors and a curvature ``c > 0``.

The ball of curvature $-c$ is $\mathbb{D}_c = \{x : c\|x\|^2 < 1\}$ (radius
$1/\sqrt{c}$). Every function takes ``c`` as a positive float, a tensor or a
`geoopt.PoincareBall` (whose ``c`` may be a learnable parameter: gradients flow through
it). Guards follow geoopt's style: explicit, local clamps; no silent projection in the distances
(points outside the ball raise, see [`check_in_ball`][]).

Formulas (Ganea et al. 2018; the asinh form is the float32-stable one used here):

$$
\exp_0(u) = \tanh(\sqrt{c}\|u\|)\,\frac{u}{\sqrt{c}\|u\|},\qquad
\log_0(x) = \operatorname{artanh}(\sqrt{c}\|x\|)\,\frac{x}{\sqrt{c}\|x\|}
$$

$$
d_c(x, y) = \frac{2}{\sqrt{c}}\operatorname{asinh}\sqrt{A_{xy}},\qquad
A_{xy} = \frac{c\|x-y\|^2}{(1 - c\|x\|^2)(1 - c\|y\|^2)} = \sinh^2\!\big(\sqrt{c}\,d_c/2\big)
$$

which equals $\tfrac{1}{\sqrt{c}}\operatorname{arccosh}(1 + 2A_{xy})$ (geoopt's
``PoincareBall.dist``).
"""

from __future__ import annotations

import math
import numbers

import torch

from .checks import check_finite

# Dtype-dependent guards (geoopt uses the same projection margins).
BALL_EPS = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 4e-3, torch.float64: 1e-5}
MIN_NORM = 1e-15


def curvature(c, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return the curvature as a tensor (cast to ``like``'s dtype/device) after checking c > 0.

    ``c`` may be a number, a tensor or a ``geoopt.PoincareBall`` (then ``ball.c``, which keeps
    the gradient of a learnable curvature).
    """
    if hasattr(c, "isp_c") and hasattr(c, "c"):  # geoopt.PoincareBall
        c = c.c
    if isinstance(c, bool) or not isinstance(c, (numbers.Real, torch.Tensor)):
        raise TypeError(f"c (curvature) must be a number, a tensor or a PoincareBall, got {c!r}")
    t = torch.as_tensor(c)
    if t.numel() != 1:
        raise ValueError(f"c (curvature) must be a scalar, got shape {tuple(t.shape)}")
    with torch.no_grad():
        bad = (not torch.isfinite(t).all()) or bool(t <= 0)
    if bad:
        raise ValueError(f"c (curvature) must be finite and > 0, got {float(t)}")
    if like is not None:
        t = t.to(device=like.device, dtype=like.dtype)
    elif not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t.reshape(())


def check_in_ball(name: str, x: torch.Tensor, c) -> torch.Tensor:
    r"""Raise unless every row of ``x`` lies strictly inside the ball ($c\|x\|^2 < 1$).

    Returns the squared norms $\|x\|^2$ (shape ``(N,)``) so callers do not recompute them.
    """
    k = curvature(c, x)
    sq = x.pow(2).sum(-1)
    with torch.no_grad():
        worst = (k * sq).max() if sq.numel() else sq.new_zeros(())
        if not torch.isfinite(worst):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"{name} contains {bad} NaN or infinite value(s); expected finite points "
                "inside the Poincare ball"
            )
        if worst >= 1:
            radius = float(torch.sqrt(worst / k))
            raise ValueError(
                f"{name} has points outside the Poincare ball: largest norm {radius:.6g} but "
                f"the ball radius is 1/sqrt(c) = {float(1 / k.sqrt()):.6g}. Map Euclidean "
                "features into the ball with noisy_pml.models.PoincareHead (or "
                "noisy_pml.utils.hyperbolic.exp0 + project), and do not L2-normalise them "
                "afterwards (e.g. GlobalEmbeddingSpaceTester(normalize_embeddings=False))."
            )
    return sq


def _check_points(name: str, x) -> None:
    """Public wrappers' input check: a floating tensor of at least 1 dim with finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least 1 dimension (the last is the vector)")
    check_finite(name, x)


def project(x: torch.Tensor, c, eps: float | None = None) -> torch.Tensor:
    r"""Clip the norm of each row to $(1 - \epsilon)/\sqrt{c}$ (inside the ball).

    ``eps`` defaults to a dtype-dependent margin (4e-3 in float32, 1e-5 in float64, as geoopt).

    Raises:
        TypeError: ``x`` not a floating tensor. ValueError: ``x`` holds NaN or inf.
    """
    _check_points("x", x)
    k = curvature(c, x)
    if eps is None:
        eps = BALL_EPS.get(x.dtype, 4e-3)
    elif not 0 <= eps < 1:
        raise ValueError(f"eps must lie in [0, 1), got {eps}")
    return _project(x, k, eps)


def _project(x: torch.Tensor, k: torch.Tensor, eps: float) -> torch.Tensor:
    max_norm = (1 - eps) / k.sqrt()
    norm = x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return torch.where(norm > max_norm, x / norm * max_norm, x)


def exp0(u: torch.Tensor, c) -> torch.Tensor:
    r"""Exponential map at the origin: $\tanh(\sqrt{c}\|u\|)\,u/(\sqrt{c}\|u\|)$.

    The result may touch the boundary when ``tanh`` rounds to 1 (large ``|u|`` in float32);
    follow with [`project`][] (as [`PoincareHead`][noisy_pml.models.PoincareHead] does).

    Raises:
        TypeError: ``u`` not a floating tensor. ValueError: ``u`` holds NaN or inf (a NaN would
            otherwise come out as a NaN point), or ``c`` is not a finite positive scalar.
    """
    _check_points("u", u)
    return _exp0(u, curvature(c, u).sqrt())


def _exp0(u: torch.Tensor, sqrt_c: torch.Tensor) -> torch.Tensor:
    norm = u.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    return torch.tanh(sqrt_c * norm) * u / (sqrt_c * norm)


def log0(x: torch.Tensor, c) -> torch.Tensor:
    r"""Logarithmic map at the origin:
    $\operatorname{artanh}(\sqrt{c}\|x\|)\,x/(\sqrt{c}\|x\|)$.

    The artanh argument is clamped below ``1 - 1e-7`` (float32) / ``1 - 1e-15`` (float64).

    Raises:
        TypeError: ``x`` not a floating tensor. ValueError: ``x`` holds NaN or inf.
    """
    _check_points("x", x)
    sqrt_c = curvature(c, x).sqrt()
    norm = x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)
    top = 1 - (1e-15 if x.dtype == torch.float64 else 1e-7)
    return torch.atanh((sqrt_c * norm).clamp(max=top)) * x / (sqrt_c * norm)


def _safe_sqrt(a: torch.Tensor) -> torch.Tensor:
    """sqrt with value 0 and gradient 0 (not NaN) at a <= 0 (the x == y case)."""
    pos = a > 0
    return torch.where(pos, torch.where(pos, a, torch.ones_like(a)).sqrt(), torch.zeros_like(a))


def _min_den(dtype: torch.dtype) -> float:
    # smallest admissible 1 - c|x|^2: keeps the ratio finite for points within rounding of the
    # boundary (the ball check has already rejected points outside it)
    return 1e-15 if dtype == torch.float64 else 1e-7



def _sinh2_half(sq_diff, den_x, den_y, k):
    r"""$A = c\|x-y\|^2 / ((1 - c\|x\|^2)(1 - c\|y\|^2))$."""
    return k * sq_diff.clamp_min(0) / (den_x * den_y)


def check_pair(x: torch.Tensor, y: torch.Tensor | None, x_name="x", y_name="y") -> None:
    """Raise a clear error unless ``x`` (and ``y``) are 2-D floating tensors of one dtype and width.

    The matmul path would otherwise end in a raw ``addmm`` error on mixed float32/float64 or
    mismatched embedding sizes.
    """
    for name, t in ((x_name, x), (y_name, y)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if y is None or y is x:
        return
    if x.dtype != y.dtype:
        raise TypeError(
            f"{x_name} and {y_name} must have the same dtype, got {x.dtype} and {y.dtype}; "
            "cast one of them (e.g. y.to(x.dtype))"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same embedding size, got {x.shape[1]} "
            f"({x_name} shape {tuple(x.shape)}) and {y.shape[1]} ({y_name} shape {tuple(y.shape)})"
        )
    if x.device != y.device:
        raise ValueError(f"{x_name} and {y_name} are on different devices: {x.device}, {y.device}")


# A pair is "near" when |x - y|^2 <= NEAR_SHARE * (|x|^2 + |y|^2): there the matmul expansion
# |x|^2 + |y|^2 - 2 x.y loses digits to cancellation (its absolute error is a few eps times
# |x|^2 + |y|^2), so the difference is recomputed directly. The share keeps the relative error of
# the remaining (far) pairs at about eps / NEAR_SHARE; chosen by measurement, see
# benchmarks/results/poincare_precision.md.
NEAR_SHARE = {torch.float16: 0.25, torch.bfloat16: 0.25, torch.float32: 0.05, torch.float64: 1e-8}
# pairs recomputed per chunk: small (P, D) buffers (large index_select calls were measured up to
# 20x slower per row on CPU)
_REFINE_PAIRS = 512


def _refine_near_pairs(sq_diff, x, y, sq_x, sq_y):
    r"""Give near pairs the value of the direct difference $\|x_i - y_j\|^2$.

    The correction is added as a constant (computed without autograd, with ``index_select``
    and in-place ops: no (P, D) buffer is kept for backward), so the gradient stays that of the
    matmul expansion, the same function; only its rounding differs. ``sq_diff`` is updated in
    place (it is the fresh output of ``addmm``, which backward does not need).
    """
    share = NEAR_SHARE.get(x.dtype, 0.05)
    m = sq_diff.shape[1]
    with torch.no_grad():
        near = sq_diff <= (sq_x[:, None] + sq_y[None, :]).mul_(share)
        flat = near.view(-1).nonzero().squeeze(1)
        if flat.numel() == 0:
            return sq_diff
        rows, cols = flat.div(m, rounding_mode="floor"), flat.remainder(m)
        step = _REFINE_PAIRS
        exact = torch.cat(
            [
                x.index_select(0, rows[s : s + step])
                .sub_(y.index_select(0, cols[s : s + step]))
                .square_()
                .sum(-1)
                for s in range(0, len(rows), step)
            ]
        )
        delta = exact.sub_(sq_diff.view(-1).index_select(0, flat))
    sq_diff.view(-1).index_add_(0, flat, delta)
    return sq_diff


def pairwise_sinh2(
    x: torch.Tensor, y: torch.Tensor | None, c, check: bool = True, precise: bool = True
):
    r"""Matrix $A_{ij} = \sinh^2(\sqrt{c}\,d_c(x_i, y_j)/2)$ with O(N M) memory.

    $\|x_i - y_j\|^2 = \|x_i\|^2 + \|y_j\|^2 - 2 x_i \cdot y_j$ takes one matmul (no
    N x M x D broadcast). That expansion cancels for close points (float32, points within 0.99
    of the radius: relative errors above 1 at 1e-4 apart, distances up to 0.03 between identical
    points); with ``precise`` (default) the near
    pairs, $\|x_i - y_j\|^2 \le$ ``NEAR_SHARE`` $(\|x_i\|^2 + \|y_j\|^2)$, are
    recomputed as the direct difference (identical points give exactly 0, in float32 the
    relative error stays below 1e-3 for pairs 1e-4 apart; cost measured in
    benchmarks/results/poincare_precision.md). With ``y`` None (or ``y is x``) the diagonal is
    set to exactly 0. Returns ``(A, self_pairs)``.

    Raises:
        TypeError: non-tensor or non-floating inputs, or ``x`` and ``y`` of different dtypes.
        ValueError: inputs not 2-D, of different widths, or with points outside the ball.
    """
    check_pair(x, y, "query embeddings", "reference embeddings")
    k = curvature(c, x)
    same = y is None or y is x
    sq_x = check_in_ball("query embeddings", x, k) if check else x.pow(2).sum(-1)
    if same:
        y, sq_y = x, sq_x
    else:
        sq_y = check_in_ball("reference embeddings", y, k) if check else y.pow(2).sum(-1)
    lo = _min_den(x.dtype)
    scale_x = k / (1 - k * sq_x).clamp_min(lo)
    scale_y = 1 / (1 - k * sq_y).clamp_min(lo)
    # |x_i - y_j|^2 = |x_i|^2 + |y_j|^2 - 2 x_i.y_j in one addmm, then A = c|x-y|^2 / (den den)
    sq_diff = torch.addmm(sq_x[:, None] + sq_y[None, :], x, y.T, alpha=-2)
    if precise:
        sq_diff = _refine_near_pairs(sq_diff, x, y, sq_x, sq_y)
    a = sq_diff.clamp_min(0) * torch.outer(scale_x, scale_y)
    if same:
        a.fill_diagonal_(0)
    return a, same


def pairwise_dist(
    x: torch.Tensor, y: torch.Tensor | None = None, c=1.0, precise: bool = True
) -> torch.Tensor:
    r"""Poincare distance matrix
    $D_{ij} = \frac{2}{\sqrt{c}}\operatorname{asinh}\sqrt{A_{ij}}$.

    ``x``: (N, D), ``y``: (M, D) or None (self-distances, exact zero diagonal). O(N M) memory.
    ``precise``: recompute near pairs directly (see [`pairwise_sinh2`][]), so identical points
    give exactly 0 even as separate tensors. Where $A = 0$ the value and the gradient are
    0 (not NaN), e.g. for duplicated rows.
    """
    check_pair(x, y, "query embeddings", "reference embeddings")
    k = curvature(c, x)
    a, same = pairwise_sinh2(x, y, k, precise=precise)
    d = torch.asinh(_safe_sqrt(a)) * (2 / k.sqrt())
    if same:
        d.fill_diagonal_(0)
    return d


def dist(x: torch.Tensor, y: torch.Tensor, c=1.0) -> torch.Tensor:
    r"""Row-wise Poincare distance $d_c(x_i, y_i)$ (the difference is taken directly, so
    identical rows give exactly 0 with a finite gradient)."""
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    k = curvature(c, x)
    sq_x = check_in_ball("x", x, k)
    sq_y = check_in_ball("y", y, k)
    lo = _min_den(x.dtype)
    a = _sinh2_half(
        (x - y).pow(2).sum(-1), (1 - k * sq_x).clamp_min(lo), (1 - k * sq_y).clamp_min(lo), k
    )
    return 2 / k.sqrt() * torch.asinh(_safe_sqrt(a))


def similarity_from_sinh2(a: torch.Tensor) -> torch.Tensor:
    r"""Bounded "gyro-cosine" similarity
    $s = (1 - A)/(1 + A) = 1 - 2\tanh^2(\sqrt{c}\,d_c/2)$.

    Euclidean analogue: for unit vectors $\cos = 1 - 2(\|x-y\|/2)^2$; here the half chord
    $\|x-y\|/2$ is replaced by the gyro-norm $\sqrt{c}\|(-x)\oplus_c y\| =
    \tanh(\sqrt{c}\,d_c/2)$. Range (-1, 1], 1 iff x == y, strictly decreasing in $d_c$.
    """
    return 2 / (1 + a) - 1


def similarity_from_dist(d: torch.Tensor, c=1.0) -> torch.Tensor:
    r"""$s = 1 - 2\tanh^2(\sqrt{c}\,d/2)$ (the same map as [`similarity_from_sinh2`][])."""
    k = curvature(c, d)
    return 1 - 2 * torch.tanh(k.sqrt() * d / 2).pow(2)


def sphere_radius(c=1.0, norm: float = 1.0) -> float:
    r"""Euclidean radius of $\exp_0(u)$ for $\|u\| =$ ``norm``:
    $\tanh(\sqrt{c}\,\mathrm{norm})/\sqrt{c}$ (the authors' head: ``norm`` = 1)."""
    k = float(curvature(c))
    return math.tanh(math.sqrt(k) * norm) / math.sqrt(k)


def dist_from_cosine(cos: torch.Tensor, radius: float, c=1.0) -> torch.Tensor:
    r"""Distance between two points of one sphere $\|x\| = \|y\| = r$ inside the ball:

    $$
    d = f(\cos) = \frac{2}{\sqrt{c}}\operatorname{asinh}
    \frac{\sqrt{2c}\, r\sqrt{1 - \cos}}{1 - c r^2}
    $$

    since $\|x - y\|^2 = 2r^2(1 - \cos)$. ``f`` is strictly decreasing in the cosine, so
    with the authors' head ([`sphere_radius`][]) hyperbolic ranking equals cosine ranking.
    """
    k = curvature(c, cos)
    num = torch.sqrt(2 * k * (1 - cos).clamp_min(0)) * radius
    return 2 / k.sqrt() * torch.asinh(num / (1 - k * radius**2))
