"""Probe (not a library option): Smooth PA with a confident-learning rule for doubted labels.

Confident learning (Northcutt et al., JAIR 2021) doubts a sample's given label only when another
class j reaches its per-class threshold t_j (the mean confidence of class j over the samples
labelled j). Emulated here through the confidence table, without touching the loss: after the
library's phase 1 (`estimate_confidences`, as the benchmark runs it), a sample whose own-label
confidence is below the loss's threshold mu but that no other class claims keeps its label, its
own confidence raised to mu (``cl_keep_tau``: weight S(mu) = 0.5) or to 1 (``cl_keep_one``:
weight ~1); doubted samples are left as they are. Runs the benchmark's frozen protocol on the
validation classes through `run_grid`, one results folder per variant:

    NOISY_PML_CACHE=... python benchmarks/probe_confident_learning_rule.py --dataset cars196 \\
        --data-root $NOISY_PML_DATA --out runs/cl_probe

Measured (Cars196 validation classes, 3 seeds, R@1 - Proxy-Anchor; the committed rows are in
benchmarks/results/spa_v3_select/confident_learning_probe/): default -0.46 / +0.75,
cl_keep_tau -0.79 / +0.38, cl_keep_one -0.62 / +0.42 at clean / symmetric 50 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from noisy_pml.bench import methods
from noisy_pml.bench.cli import default_data_spec
from noisy_pml.bench.data import resolve_root
from noisy_pml.bench.grid import run_grid
from noisy_pml.bench.training import RunSpec

MU = 0.1  # SmoothProxyAnchorLoss's smoothing position (and positive threshold)
KEEP_AT = {"cl_keep_tau": MU, "cl_keep_one": 1.0}


def per_class_thresholds(table: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """t_j = mean of c(x, j) over the samples labelled j (1 for a class with no sample)."""
    sums = torch.zeros(table.shape[1], dtype=table.dtype).index_add_(
        0, labels, table.gather(1, labels[:, None]).squeeze(1)
    )
    counts = torch.bincount(labels, minlength=table.shape[1]).to(table.dtype)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.ones_like(sums))


def keep_undoubted(table: torch.Tensor, labels: torch.Tensor, keep_at: float) -> torch.Tensor:
    """The table with the own-label confidence of below-mu, undoubted samples raised."""
    rows = torch.arange(len(labels))
    thresholds = per_class_thresholds(table, labels)
    own = table[rows, labels]
    claimed = table >= thresholds[None, :]
    claimed[rows, labels] = False
    doubted = claimed.any(1) & (own < thresholds[labels])
    keep = ~doubted & (own < MU)
    out = table.clone()
    out[rows[keep], labels[keep]] = out[rows[keep], labels[keep]].clamp_min(keep_at)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cars196", choices=("cub", "cars196"))
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--noise", nargs="+", default=["clean", "symmetric:0.5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    variant: dict[str, str | None] = {"name": None}
    library_prepare = methods.SmoothProxyAnchorMethod.prepare

    def prepare(self, train, seed):
        library_prepare(self, train, seed)
        if variant["name"] is not None:
            self.confidence_table = keep_undoubted(
                self.confidence_table, train.labels, KEEP_AT[variant["name"]]
            )

    methods.SmoothProxyAnchorMethod.prepare = prepare
    spec = default_data_spec(args.dataset)
    root = resolve_root(args.dataset, args.data_root)
    for name in (None, *KEEP_AT):
        variant["name"] = name
        # the loss at the reading the probe was run with (the default then)
        runs = [RunSpec("smooth_proxy_anchor", n, s, "val", (("unselected", "negative"),))
                for n in args.noise for s in args.seeds]  # fmt: skip
        if name is None:
            runs += [RunSpec("proxy_anchor", n, s, "val") for n in args.noise for s in args.seeds]
        for r in run_grid(spec, runs, args.out / (name or "default"), root):
            print(name or "default", r["method"], r["noise"], r["seed"],
                  f"{100 * r['metrics']['R@1']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
