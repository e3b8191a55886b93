"""Float32 precision of the Poincare distance matrix, and what the near-pair correction costs.

The matrix takes one matmul, ``|x - y|^2 = |x|^2 + |y|^2 - 2 x.y``, which cancels for close
points. ``precise=True`` (the default of ``PoincareDistance``) recomputes the near pairs,
``|x - y|^2 <= NEAR_SHARE (|x|^2 + |y|^2)``, as direct differences.

1. Error table: relative error of the float32 matrix against float64 on the *same* float32
   inputs (so only the computation's error is measured, not the rounding of the points), for
   pairs a given Euclidean gap apart, points up to 0.99 of the radius, c = 1; plus identical
   points passed as separate tensors (float32) and the diagonal of PML's ``BatchedDistance``
   chunks in float64 (query == ref row), both of which should be 0.
2. Speed: ``PoincareDistance()(x, y)`` with ``precise=True`` vs ``False``, medians of repeats
   in the same run with ``torch.set_num_threads(1)``, on (a) PoincareHead-like points
   (random directions: almost no near pair) and (b) a clustered batch (8 tight classes: many
   near pairs), forward and forward + backward.

Writes benchmarks/results/poincare_precision.md.

    PYTHONPATH=. python benchmarks/bench_poincare_precision.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from pytorch_metric_learning.distances import BatchedDistance

from noisy_pml.distances import PoincareDistance
from noisy_pml.utils import hyperbolic as hyp

OUT = Path(__file__).parent / "results" / "poincare_precision.md"


def interleaved_medians(steps: dict, repeats: int, warmup: int = 2) -> dict:
    """Median time of each step, the steps alternating so that machine load hits them alike."""
    times: dict = {key: [] for key in steps}
    for i in range(warmup + repeats):
        for key, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(t) for key, t in times.items()}


def pairs_at_gap(n: int, d: int, gap: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 points x inside 0.99 of the unit ball and y = x + gap * (random unit vector)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * 0.99
    x = u / u.norm(dim=1, keepdim=True) * r
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = hyp.project(x + gap * v / v.norm(dim=1, keepdim=True), 1.0, eps=0.01)
    return x.float(), y.float()


def max_rel_error(x: torch.Tensor, y: torch.Tensor, precise: bool) -> float:
    ref = hyp.pairwise_dist(x.double(), y.double(), 1.0)
    got = hyp.pairwise_dist(x, y, 1.0, precise=precise).double()
    return float(((got - ref).abs() / ref.clamp_min(1e-300)).max())


def error_table(dims, gaps, n: int) -> list[str]:
    lines = [
        "| D | gap | fast (matmul only) | precise (default) |",
        "|---:|---:|---:|---:|",
    ]
    for d in dims:
        for gap in gaps:
            x, y = pairs_at_gap(n, d, gap, seed=d)
            fast, precise = max_rel_error(x, y, False), max_rel_error(x, y, True)
            lines.append(f"| {d} | {gap:g} | {fast:.2e} | {precise:.2e} |")
            print(lines[-1], flush=True)
    return lines


def zero_checks(n: int) -> list[str]:
    lines = []
    for d in (1, 64, 512):
        x, _ = pairs_at_gap(n, d, 0.0, seed=d)
        for precise in (False, True):
            worst = float(hyp.pairwise_dist(x, x.clone(), 1.0, precise=precise).diagonal().max())
            lines.append(
                f"- identical float32 points as separate tensors, D = {d}, "
                f"precise={precise}: largest d(x, x) = {worst:.2e}"
            )
    x64 = pairs_at_gap(n, 64, 0.0, seed=1)[0].double() * 1.0099  # up to 0.9998 of the radius
    diag = torch.empty(n, dtype=torch.float64)

    def keep_diagonal(mat, s, e):
        e = s + len(mat)  # PML passes e = s + batch_size also for the last, shorter chunk
        diag[s:e] = mat[torch.arange(e - s), torch.arange(s, e)]

    for precise in (False, True):
        BatchedDistance(PoincareDistance(precise=precise), keep_diagonal, batch_size=32)(x64)
        lines.append(
            f"- float64 BatchedDistance chunks (batch_size 32), D = 64, precise={precise}: "
            f"largest diagonal entry = {float(diag.abs().max()):.2e}"
        )
    for line in lines:
        print(line, flush=True)
    return lines


def clustered(n: int, d: int, classes: int = 8, spread: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, d, generator=g)
    u = centres.repeat_interleave(n // classes, 0)
    u = u + spread * torch.randn(u.shape, generator=g) * u.norm(dim=1, keepdim=True)
    return hyp.project(hyp.exp0(torch.nn.functional.normalize(u, dim=1), 1.0), 1.0)


def speed_table(sizes, repeats: int) -> list[str]:
    lines = [
        "| points | N = M | D | near pairs | pass | fast (ms) | precise (ms) | cost ratio |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for n, d in sizes:
        g = torch.Generator().manual_seed(1)
        head = hyp.project(
            hyp.exp0(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1), 1.0),
            1.0,
        )
        for kind, x in (("head-like", head), ("clustered", clustered(n, d))):
            y = x.clone()  # a separate tensor: the general (query != ref) path
            sq = x.pow(2).sum(1)
            share = hyp.NEAR_SHARE[torch.float32]
            near = (hyp.pairwise_dist(x, y, 1.0, precise=False) >= 0) & (
                torch.cdist(x, y).pow(2) <= share * (sq[:, None] + sq[None, :])
            )
            for pass_name in ("forward", "forward+backward"):
                steps = {}
                for precise in (False, True):
                    dist = PoincareDistance(precise=precise)
                    xr = x.clone().requires_grad_(pass_name != "forward")

                    def step(dist=dist, xr=xr, y=y, pass_name=pass_name):
                        if pass_name == "forward":
                            with torch.no_grad():
                                dist(xr, y)
                        else:
                            dist(xr, y).sum().backward()

                    steps[precise] = step
                times = interleaved_medians(steps, repeats)
                lines.append(
                    f"| {kind} | {n} | {d} | {float(near.float().mean()):.1%} | {pass_name} | "
                    f"{times[False] * 1e3:.2f} | {times[True] * 1e3:.2f} | "
                    f"{times[True] / times[False]:.2f} |"
                )
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_err = 200 if args.quick else 400
    dims = (1, 8, 64, 512)
    gaps = (1e-4, 1e-3, 1e-2, 1e-1)
    sizes = [(256, 128)] if args.quick else [(256, 128), (512, 512), (1024, 128)]
    repeats = 5 if args.quick else 21

    errors = error_table(dims, gaps, n_err)
    zeros = zero_checks(n_err)
    speed = speed_table(sizes, repeats)
    text = "\n".join(
        [
            "# Poincare distance matrix: float32 precision and the cost of the near-pair fix",
            "",
            "Written by `PYTHONPATH=. python benchmarks/bench_poincare_precision.py"
            + (" --quick" if args.quick else "")
            + "` (one CPU thread, "
            f"torch {torch.__version__}). `NEAR_SHARE[float32]` = "
            f"{hyp.NEAR_SHARE[torch.float32]}.",
            "",
            "## Largest relative error over all N x N pairs (float32 vs float64 on the same "
            f"inputs, N = {n_err}, c = 1, points within 0.99 of the radius)",
            "",
            "Row i of y is row i of x moved by `gap` in a random direction; the off-diagonal "
            "pairs are far apart.",
            "",
            *errors,
            "",
            "## Exact zeros",
            "",
            *zeros,
            "",
            "## Speed (medians of "
            f"{repeats} repeats, same run; ratio = precise / fast)",
            "",
            "`near pairs`: share of the N x M pairs recomputed directly.",
            "",
            *speed,
            "",
        ]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
