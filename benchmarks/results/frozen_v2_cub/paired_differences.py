"""Paired differences (method minus baseline, same seed, same noisy labels) of a frozen_v2 grid.

Usage (from the repository root):

    python benchmarks/results/frozen_v2_cub/paired_differences.py benchmarks/results/frozen_v2_cub

Reads <folder>/results.jsonl, writes <folder>/paired.md and prints it. A pair is used only when
both runs of a seed exist and their ``noisy_labels_sha1`` agree (the same noisy training labels).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

GRID_A = ["symmetric:0.3", "symmetric:0.7", "small_cluster:0.25"]
GRID_B = ["clean", "symmetric:0.3", "symmetric:0.5"]
COMPARISONS = [  # (method, baseline, noises)
    ("ahsml_ms", "multi_similarity", GRID_A),
    ("ahsml_ms", "prism_ms", GRID_A),
    ("prism_ms", "multi_similarity", GRID_A),
    ("ahsml_ms", "ahsml_ms_consistency_off", GRID_A),
    ("ahsml_ms_consistency_off", "multi_similarity", GRID_A),
    ("smooth_proxy_anchor", "proxy_anchor", GRID_B),
    ("smooth_proxy_anchor", "smooth_proxy_anchor_single_model", GRID_B),
    ("smooth_proxy_anchor_single_model", "proxy_anchor", GRID_B),
    ("smooth_proxy_anchor", "multi_similarity", GRID_B),
]
METRICS = ("R@1", "MAP@R")


def _records(folder: Path) -> dict[tuple[str, str, int], dict]:
    out = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a running grid
        if r.get("mode", "test") == "test":
            out[(r["method"], r["noise"], r["seed"])] = r
    return out


def _mean_std(v: list[float]) -> str:
    m = sum(v) / len(v)
    if len(v) < 2:
        return f"{m:+.1f}"
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:+.1f} ± {s:.1f}"


def paired_table(recs: dict[tuple[str, str, int], dict]) -> str:
    lines = [
        "### Paired differences (percentage points; method minus baseline on the same seed and "
        "the same noisy labels)",
        "",
        "| method − baseline | noise | seeds | per seed ΔR@1 | mean ΔR@1 | mean ΔMAP@R |",
        "|---|---|---|---|---|---|",
    ]
    for method, base, noises in COMPARISONS:
        for noise in noises:
            deltas: dict[str, list[float]] = defaultdict(list)
            per_seed = []
            for seed in sorted({k[2] for k in recs}):
                a, b = recs.get((method, noise, seed)), recs.get((base, noise, seed))
                if a is None or b is None:
                    continue
                if a["noisy_labels_sha1"] != b["noisy_labels_sha1"]:
                    raise ValueError(f"{method} vs {base} {noise} seed {seed}: labels differ")
                for m in METRICS:
                    deltas[m].append(100.0 * (a["metrics"][m] - b["metrics"][m]))
                per_seed.append(f"s{seed} {deltas['R@1'][-1]:+.1f}")
            if not per_seed:
                lines.append(f"| {method} − {base} | {noise} | 0 | not run | - | - |")
                continue
            lines.append(
                f"| {method} − {base} | {noise} | {len(per_seed)} | {', '.join(per_seed)} | "
                f"{_mean_std(deltas['R@1'])} | {_mean_std(deltas['MAP@R'])} |"
            )
    return "\n".join(lines) + "\n"


def per_run_table(recs: dict[tuple[str, str, int], dict]) -> str:
    lines = [
        "### Every run (R@1 / MAP@R in %, wall times in s on a shared 2-core CPU, 1 thread)",
        "",
        "| method | noise | seed | R@1 | MAP@R | detection AUROC | train s | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(recs.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
    for (method, noise, seed), r in ordered:
        det = r.get("detection") or {}
        auroc = f"{100 * det['auroc']:.1f}" if "auroc" in det else "-"
        lines.append(
            f"| {method} | {noise} | {seed} | {100 * r['metrics']['R@1']:.1f} | "
            f"{100 * r['metrics']['MAP@R']:.1f} | {auroc} | {r['train_seconds']:.0f} | "
            f"{r['eval_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(folder: str) -> None:
    path = Path(folder)
    recs = _records(path)
    md = paired_table(recs) + "\n" + per_run_table(recs)
    (path / "paired.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main(sys.argv[1])
