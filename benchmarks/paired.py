"""Paired differences between methods of one result folder (same seed, same noisy labels).

    python benchmarks/paired.py benchmarks/results/spa_v3_cars196 \
        smooth_proxy_anchor=proxy_anchor smooth_proxy_anchor_ignore=proxy_anchor

Each ``A=B`` prints, per noise, A minus B in R@1 and MAP@R (percentage points) for every seed
that has both runs on the test classes, their mean ± sample std and how many seeds are positive.
A pair whose noisy labels differ (``noisy_labels_sha1``) is an error, not a skipped seed.

`load`, `paired_deltas` and `mean_std` are also what the per-grid scripts under
benchmarks/results/ (``paired_differences.py``) build their own tables from.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

Cell = tuple[str, str, int]  # (method, noise, seed)
METRICS = ("R@1", "MAP@R")


def load(folder: Path, last_grid_only: bool = False) -> dict[Cell, dict]:
    """The test-class runs of ``folder/results.jsonl`` by (method, noise, seed).

    Blank lines and a torn last line (a grid still running) are skipped. With
    ``last_grid_only``, only the runs listed in ``folder/results.json`` (the last grid's report)
    count. Two different runs (run keys) for one cell are an error.
    """
    report = folder / "results.json"
    keep = None
    if last_grid_only and report.exists():
        keep = {r["key"] for r in json.loads(report.read_text())["runs"]}
    runs: dict[Cell, dict] = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a running grid
        if rec.get("mode", "test") != "test" or (keep is not None and rec.get("key") not in keep):
            continue
        cell = (rec["method"], rec["noise"], rec["seed"])
        if cell in runs and runs[cell]["key"] != rec["key"]:
            raise ValueError(f"{cell}: two different runs ({runs[cell]['key']}, {rec['key']})")
        runs[cell] = rec
    return runs


def paired_deltas(
    runs: dict[Cell, dict], a: str, b: str, noise: str
) -> tuple[list[int], dict[str, list[float]]]:
    """Seeds that have both ``a`` and ``b`` at ``noise``, and per metric the differences
    a − b in percentage points, seed by seed. Raises if a pair saw different noisy labels."""
    seeds: list[int] = []
    deltas: dict[str, list[float]] = {m: [] for m in METRICS}
    for seed in sorted({cell[2] for cell in runs}):
        ra, rb = runs.get((a, noise, seed)), runs.get((b, noise, seed))
        if ra is None or rb is None:
            continue
        if ra["noisy_labels_sha1"] != rb["noisy_labels_sha1"]:
            raise ValueError(f"{a} vs {b} at {noise} seed {seed}: the noisy labels differ")
        for m in METRICS:
            deltas[m].append(100.0 * (ra["metrics"][m] - rb["metrics"][m]))
        seeds.append(seed)
    return seeds, deltas


def mean_std(values: list[float], digits: int = 1) -> str:
    """``+m ± s`` (sample std), or ``+m`` for a single value."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return f"{m:+.{digits}f}"
    s = math.sqrt(sum((x - m) ** 2 for x in values) / (len(values) - 1))
    return f"{m:+.{digits}f} ± {s:.{digits}f}"


def paired_table(runs: dict[Cell, dict], pairs: list[tuple[str, str]]) -> str:
    noises = sorted({k[1] for k in runs}, key=lambda n: (n != "clean", n))
    lines = ["| A − B | noise | per seed ΔR@1 | mean ΔR@1 | ΔR@1 > 0 | mean ΔMAP@R |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for a, b in pairs:
        for noise in noises:
            seeds, deltas = paired_deltas(runs, a, b, noise)
            if not seeds:
                continue
            d_r1 = deltas["R@1"]
            per = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(seeds, d_r1, strict=True))
            mean_map = sum(deltas["MAP@R"]) / len(seeds)
            lines.append(
                f"| {a} − {b} | {noise} | {per} | {mean_std(d_r1, 2)} | "
                f"{sum(d > 0 for d in d_r1)}/{len(d_r1)} | {mean_map:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("pairs", nargs="+", metavar="A=B")
    args = ap.parse_args(argv)
    pairs = [tuple(p.split("=", 1)) for p in args.pairs]
    print(paired_table(load(args.folder), pairs), end="")


if __name__ == "__main__":
    main()
