"""Paired differences (method minus baseline, same seed, same noisy labels) of a frozen_v2 grid.

Usage (from the repository root):

    python benchmarks/results/frozen_v2_cub/paired_differences.py benchmarks/results/frozen_v2_cub

Reads <folder>/results.jsonl, writes <folder>/paired.md and prints it. A pair is used only when
both runs of a seed exist and their ``noisy_labels_sha1`` agree (the same noisy training labels).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: the shared pieces
from paired import load, mean_std, paired_deltas, per_run_table  # noqa: E402

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
            seeds, deltas = paired_deltas(recs, method, base, noise)
            if not seeds:
                lines.append(f"| {method} − {base} | {noise} | 0 | not run | - | - |")
                continue
            per_seed = [f"s{s} {d:+.1f}" for s, d in zip(seeds, deltas["R@1"], strict=True)]
            lines.append(
                f"| {method} − {base} | {noise} | {len(per_seed)} | {', '.join(per_seed)} | "
                f"{mean_std(deltas['R@1'])} | {mean_std(deltas['MAP@R'])} |"
            )
    return "\n".join(lines) + "\n"


def main(folder: str) -> None:
    path = Path(folder)
    recs = load(path)
    md = paired_table(recs) + "\n" + per_run_table(recs)
    (path / "paired.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main(sys.argv[1])
