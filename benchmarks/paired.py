"""Paired differences between methods of one result folder (same seed, same noisy labels).

    python benchmarks/paired.py benchmarks/results/spa_v3_cars196 \
        smooth_proxy_anchor=proxy_anchor smooth_proxy_anchor_ignore=proxy_anchor

Each ``A=B`` prints, per noise, A minus B in R@1 and MAP@R (percentage points) for every seed
that has both runs on the test classes, their mean ± sample std and how many seeds are positive.
A pair whose noisy labels differ (``noisy_labels_sha1``) is an error, not a skipped seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(folder: Path) -> dict[tuple[str, str, int], dict]:
    runs = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("mode") == "test":
            runs[(rec["method"], rec["noise"], rec["seed"])] = rec
    return runs


def paired_table(runs: dict, pairs: list[tuple[str, str]]) -> str:
    noises = sorted({k[1] for k in runs}, key=lambda n: (n != "clean", n))
    lines = ["| A − B | noise | per seed ΔR@1 | mean ΔR@1 | ΔR@1 > 0 | mean ΔMAP@R |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for a, b in pairs:
        for noise in noises:
            seeds = sorted(s for (m, n, s) in runs if m == a and n == noise and (b, n, s) in runs)
            if not seeds:
                continue
            d_r1, d_map = [], []
            for s in seeds:
                ra, rb = runs[(a, noise, s)], runs[(b, noise, s)]
                if ra["noisy_labels_sha1"] != rb["noisy_labels_sha1"]:
                    raise ValueError(f"{a} and {b} at {noise} seed {s} saw different noisy labels")
                d_r1.append(100 * (ra["metrics"]["R@1"] - rb["metrics"]["R@1"]))
                d_map.append(100 * (ra["metrics"]["MAP@R"] - rb["metrics"]["MAP@R"]))
            sd = statistics.stdev(d_r1) if len(d_r1) > 1 else 0.0
            per = ", ".join(f"s{s} {d:+.1f}" for s, d in zip(seeds, d_r1, strict=True))
            lines.append(
                f"| {a} − {b} | {noise} | {per} | {statistics.mean(d_r1):+.2f} ± {sd:.2f} | "
                f"{sum(d > 0 for d in d_r1)}/{len(d_r1)} | {statistics.mean(d_map):+.2f} |"
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
