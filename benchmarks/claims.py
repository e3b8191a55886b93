"""Check the papers' headline claims against benchmark results (benchmarks/results/*/results.jsonl).

Run after `noisy-pml bench` has written results.json.
Usage: python benchmarks/claims.py benchmarks/results/cub benchmarks/results/cars196 > claims.md

Claims checked (R@1 points, test split, mean over seeds, paired by seed):
- Smooth Proxy-Anchor (Roig et al. 2020): +3.29 over Proxy-Anchor and +2.63 over
  Multi-Similarity under noise.
- AHSML-MS (Yan et al., TIP 2023): +3.3 over Multi-Similarity at 30% symmetric noise.
- Both against PRISM (Liu et al., CVPR 2021), on the contrastive loss and on MS (prism_ms).
Differences are paired by seed (same noisy labels); +- is the std of the paired differences.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

CLAIMS = [
    ("smooth_proxy_anchor", "proxy_anchor", 3.29, "Smooth PA vs Proxy-Anchor (claimed +3.29)"),
    (
        "smooth_proxy_anchor",
        "multi_similarity",
        2.63,
        "Smooth PA vs MS (claimed +2.63)",
    ),
    ("ahsml_ms", "multi_similarity", 3.3, "AHSML-MS vs Multi-Similarity (claimed +3.3 at sym 30%)"),
    ("smooth_proxy_anchor", "prism", None, "Smooth PA vs PRISM"),
    ("ahsml_ms", "prism", None, "AHSML-MS vs PRISM"),
    ("prism", "contrastive", None, "PRISM vs its base loss (Contrastive)"),
    ("smooth_proxy_anchor", "prism_ms", None, "Smooth PA vs PRISM-MS"),
    ("ahsml_ms", "prism_ms", None, "AHSML-MS vs PRISM-MS"),
    ("prism_ms", "multi_similarity", None, "PRISM-MS vs its base loss (MS)"),
]


def _load(folder: Path) -> dict:
    r1 = defaultdict(dict)  # (method, noise) -> {seed: R@1 %}
    # results.json lists the runs of the grid's current configuration (not stale ones)
    for rec in json.loads((folder / "results.json").read_text())["runs"]:
        if rec.get("mode") == "test":
            r1[(rec["method"], rec["noise"])][rec["seed"]] = 100 * rec["metrics"]["R@1"]
    return r1


def _paired(r1: dict, a: str, b: str, noise: str):
    sa, sb = r1.get((a, noise), {}), r1.get((b, noise), {})
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return None
    d = [sa[s] - sb[s] for s in seeds]
    mean = sum(d) / len(d)
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
    return mean, std, len(d)


def main(folders: list[str]) -> None:
    for folder in map(Path, folders):
        r1 = _load(folder)
        noises = sorted({n for (_, n) in r1}, key=lambda n: (n != "clean", n))
        print(f"### {folder.name}: paired R@1 differences (points), mean ± std over seeds\n")
        print("| comparison | " + " | ".join(noises) + " |")
        print("|---" * (len(noises) + 1) + "|")
        for a, b, _, label in CLAIMS:
            cells = []
            for n in noises:
                p = _paired(r1, a, b, n)
                cells.append("-" if p is None else f"{p[0]:+.2f} ± {p[1]:.2f} (n={p[2]})")
            if set(cells) == {"-"}:  # a method this grid did not run
                continue
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
