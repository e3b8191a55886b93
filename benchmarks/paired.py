"""Paired differences between methods of one result folder (same seed, same noisy labels).

    python benchmarks/paired.py benchmarks/results/spa_v3_cars196 \
        smooth_proxy_anchor=proxy_anchor smooth_proxy_anchor_ignore=proxy_anchor

Each ``A=B`` prints, per noise, A minus B in R@1 and MAP@R (percentage points) for every seed
that has both runs on the test classes, their mean ± sample std and how many seeds are positive.
A pair whose noisy labels differ (``noisy_labels_sha1``) is an error, not a skipped seed.

With ``--last-grid-only``, only the runs of the folder's last report (``results.json``) count:
a folder whose ``results.jsonl`` also keeps runs of an earlier default needs it. With
``--runs``, a table of every test run (metrics, detection AUROC, wall times, run key)
follows. `load`, `paired_deltas`, `mean_std` and `per_run_table` are also what the per-grid
scripts under benchmarks/results/ (``paired_differences.py``) build their own tables from.
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


def per_run_table(
    runs: dict[Cell, dict],
    methods: set[str] | None = None,
    noises: set[str] | None = None,
) -> str:
    """Every test run (of ``methods`` at ``noises`` when given), seed by seed: R@1 and MAP@R in
    %, the detection AUROC of a method that scores samples, wall times and the run key."""
    lines = [
        "### Every run (R@1 / MAP@R in %, wall times in s on a shared 2-core CPU, 1 thread)",
        "",
        "| method | noise | seed | R@1 | MAP@R | detection AUROC | train s | eval s | run key |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, noise, seed), r in sorted(runs.items(), key=lambda kv: (kv[0][2], *kv[0][:2])):
        if (methods is not None and method not in methods) or (
            noises is not None and noise not in noises
        ):
            continue
        det = r.get("detection") or {}
        auroc = f"{100 * det['auroc']:.1f}" if "auroc" in det else "-"
        lines.append(
            f"| {method} | {noise} | {seed} | {100 * r['metrics']['R@1']:.1f} | "
            f"{100 * r['metrics']['MAP@R']:.1f} | {auroc} | {r['train_seconds']:.0f} | "
            f"{r['eval_seconds']:.0f} | {r.get('key', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("pairs", nargs="+", metavar="A=B")
    ap.add_argument("--runs", action="store_true", help="also list every test run")
    ap.add_argument(
        "--last-grid-only",
        action="store_true",
        help="only the runs of folder/results.json (the last report, e.g. `noisy-pml bench "
        "--report-only`): a folder that keeps runs of an earlier default under other keys",
    )
    args = ap.parse_args(argv)
    if args.last_grid_only and not (args.folder / "results.json").exists():
        ap.error(f"--last-grid-only: no {args.folder / 'results.json'} (run `noisy-pml bench "
                 "--report-only` with the folder's grid first)")  # fmt: skip
    pairs = [tuple(p.split("=", 1)) for p in args.pairs]
    runs = load(args.folder, last_grid_only=args.last_grid_only)
    print(paired_table(runs, pairs), end="")
    if args.runs:
        print("\n" + per_run_table(runs), end="")


if __name__ == "__main__":
    main()
