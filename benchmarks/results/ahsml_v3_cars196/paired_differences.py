"""Paired differences (variant minus reference, same seed, same noisy labels) of an ahsml_v3 grid.

Usage (from the repository root):

    python benchmarks/results/ahsml_v3_cars196/paired_differences.py \
        benchmarks/results/ahsml_v3_cars196

Reads <folder>/results.jsonl, writes <folder>/paired.md and prints it. A pair is used only when
both runs of a seed exist and their `noisy_labels_sha1` agree (the same noisy training labels);
a disagreement is an error, not a skipped pair. Same conventions as
`benchmarks/results/frozen_v2_cub/paired_differences.py` (percentage points, sample std over
seeds), plus the number of seeds on which the difference is positive.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: the shared pieces
from paired import load, mean_std, paired_deltas, per_run_table  # noqa: E402

NOISES = ["symmetric:0.3", "symmetric:0.7", "small_cluster:0.25"]
SHORT = {"symmetric:0.3": "sym 30 %", "symmetric:0.7": "sym 70 %", "small_cluster:0.25": "sc 25 %"}
# (variant, reference, what the difference measures); sign: variant minus reference
COMPARISONS = [
    ("ahsml_ms", "multi_similarity", "AHSML-MS − MS (each at the lr of its run)"),
    ("multi_similarity_rerun", "multi_similarity", "re-run of a reused default run (0 = same)"),
    ("ahsml_ms_rerun", "ahsml_ms", "re-run of a reused default run (0 = same)"),
    ("ahsml_ms_delta0", "ahsml_ms", "1. delta = 0: class-wise divergence weighting removed"),
    ("ahsml_ms_cosine", "ahsml_ms", "2. cosine head instead of Poincare (hyperbolic=false)"),
    ("ahsml_ms_consistency_off", "ahsml_ms", "consistency term off (frozen_v2 runs)"),
    ("ahsml_ms_all_off", "ahsml_ms", "delta 0 + cosine + consistency off together"),
    ("ahsml_ms_two_views_no_term", "ahsml_ms", "two views kept, consistency term never on"),
    ("ahsml_ms_two_views_no_term", "ahsml_ms_consistency_off", "second view alone (no term)"),
    ("ahsml_ms_no_hinge", "ahsml_ms", "consistency term on every augmentation pair (no hinge)"),
    ("multi_similarity_lr1e-3", "multi_similarity", "5. MS at lr 1e-3 vs the default 1e-4"),
    ("ahsml_ms_lr1e-3", "ahsml_ms", "5. AHSML-MS at lr 1e-3 vs the default 1e-4"),
    ("ahsml_ms_lr1e-3", "multi_similarity_lr1e-3", "5. fair pair: AHSML-MS vs MS, both lr 1e-3"),
    ("ahsml_ms", "multi_similarity_lr1e-3", "5. default AHSML-MS vs MS at lr 1e-3"),
    ("ahsml_ms_rho10", "ahsml_ms", "3. rho = 10 vs 20"),
    ("ahsml_ms_rho40", "ahsml_ms", "3. rho = 40 vs 20"),
    ("ahsml_contrastive", "contrastive", "4. AHSML-Contrastive vs Contrastive"),
    ("ahsml_ms_delta0", "multi_similarity", "what is left of the gain over MS with delta = 0"),
    ("ahsml_ms_cosine", "multi_similarity", "what is left of the gain over MS with a cosine head"),
    ("ahsml_ms_all_off", "multi_similarity", "MS* with all three components off vs MS"),
    ("ahsml_ms_poincare_only", "multi_similarity", "Poincare head alone (delta 0, one view) vs MS"),
    ("ahsml_ms_cosine_delta0", "ahsml_ms_all_off", "cosine head: the second view (delta 0)"),
    ("ahsml_ms_cosine_one_view", "ahsml_ms_all_off", "cosine head: delta 0.2 (one view)"),
    ("ahsml_ms_cosine_lr1e-3", "ahsml_ms_lr1e-3", "cosine vs Poincare head, both lr 1e-3"),
    ("ahsml_ms_cosine_lr1e-3", "multi_similarity_lr1e-3", "cosine-head AHSML-MS vs MS, lr 1e-3"),
]


def summary_table(recs) -> str:
    """One row per comparison: mean ± std ΔR@1 (seeds positive / seeds) per noise."""
    lines = [
        "### Summary: mean ± std ΔR@1 over seeds (seeds with Δ > 0 / seeds)",
        "",
        "| variant − reference | what it measures | " + " | ".join(SHORT[n] for n in NOISES) + " |",
        "|---|---|" + "---|" * len(NOISES),
    ]
    for variant, ref, what in COMPARISONS:
        cells = []
        for noise in NOISES:
            seeds, deltas = paired_deltas(recs, variant, ref, noise)
            if not seeds:
                cells.append("not run")
                continue
            pos = sum(d > 0 for d in deltas["R@1"])
            cells.append(f"{mean_std(deltas['R@1'])} ({pos}/{len(seeds)})")
        if all(c == "not run" for c in cells):
            continue
        lines.append(f"| {variant} − {ref} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(recs) -> str:
    lines = [
        "### Paired differences (percentage points; variant minus reference on the same seed "
        "and the same noisy labels)",
        "",
        "| variant − reference | noise | seeds | per seed ΔR@1 | mean ΔR@1 | ΔR@1 > 0 | "
        "mean ΔMAP@R |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, ref, _ in COMPARISONS:
        for noise in NOISES:
            seeds, deltas = paired_deltas(recs, variant, ref, noise)
            if not seeds:
                lines.append(f"| {variant} − {ref} | {noise} | 0 | not run | - | - | - |")
                continue
            pairs = zip(seeds, deltas["R@1"], strict=True)
            per_seed = ", ".join(f"s{s} {d:+.1f}" for s, d in pairs)
            pos = sum(d > 0 for d in deltas["R@1"])
            lines.append(
                f"| {variant} − {ref} | {noise} | {len(seeds)} | {per_seed} | "
                f"{mean_std(deltas['R@1'])} | {pos}/{len(seeds)} | {mean_std(deltas['MAP@R'])} |"
            )
    return "\n".join(lines) + "\n"


def means_table(recs) -> str:
    """R@1 per method and noise, mean ± std over the seeds that exist."""
    compared = {name for c in COMPARISONS for name in c[:2]}
    methods = sorted({k[0] for k in recs if k[1] in NOISES} & compared)
    lines = [
        "### R@1 (%), mean ± std over seeds (number of seeds)",
        "",
        "| method | " + " | ".join(SHORT[n] for n in NOISES) + " |",
        "|---|" + "---|" * len(NOISES),
    ]
    for method in methods:
        cells = []
        for noise in NOISES:
            v = [100 * r["metrics"]["R@1"] for k, r in recs.items() if k[:2] == (method, noise)]
            if not v:
                cells.append("-")
                continue
            m = sum(v) / len(v)
            s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
            cells.append(f"{m:.1f} ± {s:.1f} ({len(v)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(folder: str) -> None:
    path = Path(folder)
    # only the last grid's runs: a folder whose results.jsonl was seeded with another grid's
    # runs (lr_select) can hold two configurations under one name
    recs = load(path, last_grid_only=True)
    compared = {name for c in COMPARISONS for name in c[:2]}
    tables = (summary_table, means_table, paired_table)
    md = "\n".join([*(table(recs) for table in tables), per_run_table(recs, compared, set(NOISES))])
    (path / "paired.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main(sys.argv[1])
