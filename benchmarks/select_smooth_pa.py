"""Choose Smooth Proxy-Anchor's loss defaults on validation classes (issue #12).

Runs Proxy-Anchor and Smooth PA variants that differ in the loss (what becomes of unselected
own-label pairs, the smoothing position mu, relabelling on or off) or in phase 1's number of
folds, in the frozen protocol's validation mode: 20 classes carved out of the training classes,
never the test classes. Phase 1 is the library's `estimate_confidences` (at its defaults unless
a variant sets ``conf_folds``), computed once per (noise, seed, phase-1 arguments) and shared by
the variants (`phase1_reused` in each record). Prints, per variant and noise, R@1 and MAP@R
(mean over seeds) and the paired difference to Proxy-Anchor, and
writes them to ``OUT/selection.md``; the runs go to ``OUT/results.jsonl`` (resumable):

    python benchmarks/select_smooth_pa.py --dataset cars196 --data-root $NOISY_PML_DATA \
        --out benchmarks/results/spa_v3_select
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from noisy_pml.bench.cli import default_data_spec
from noisy_pml.bench.data import resolve_root
from noisy_pml.bench.grid import run_grid
from noisy_pml.bench.training import RunSpec

# Every variant names phase 1's folds and the `unselected` reading explicitly: the names are
# part of the run keys, and these were first run when the defaults were K = 5 and "negative".
NEG = ("unselected", "negative")
IGN = ("unselected", "ignore")
K5 = ("conf_folds", 5)
ONE = ("conf_folds", 1)
VARIANTS: dict[str, tuple[tuple[str, object], ...]] = {
    "smooth_pa": (NEG, K5),
    "smooth_pa_ignore": (IGN, K5),
    "smooth_pa_mu0.05": (NEG, K5, ("smoothing_position", 0.05)),
    "smooth_pa_ignore_mu0.05": (IGN, K5, ("smoothing_position", 0.05)),
    "smooth_pa_labels": (NEG, K5, ("positive_set", "labels")),
    "smooth_pa_mu0.2": (NEG, K5, ("smoothing_position", 0.2)),
    "smooth_pa_ignore_mu0.2": (IGN, K5, ("smoothing_position", 0.2)),
    "smooth_pa_unweighted_neg": (NEG, K5, ("weighted_negatives", False)),
    "smooth_pa_labels_unweighted_neg": (NEG, K5, ("positive_set", "labels"),
                                        ("weighted_negatives", False)),
    # phase 1: one module / 3 folds instead of 5 out-of-fold modules
    "smooth_pa_ignore_single_model": (IGN, ONE),
    "smooth_pa_ignore_k3": (IGN, ("conf_folds", 3)),
    # the smoothing's sharpness k at the chosen defaults (one module, "ignore"; k = 10 there)
    "smooth_pa_ignore_single_model_k5": (IGN, ONE, ("smoothing_sharpness", 5.0)),
    "smooth_pa_ignore_single_model_k30": (IGN, ONE, ("smoothing_sharpness", 30.0)),
    "smooth_pa_ignore_single_model_step": (IGN, ONE, ("smoothing_sharpness", float("inf"))),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cars196", choices=("cub", "cars196"))
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--noise", nargs="+", default=["clean", "symmetric:0.5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = default_data_spec(args.dataset)
    runs = [RunSpec("proxy_anchor", n, s, "val") for n in args.noise for s in args.seeds]
    runs += [
        RunSpec("smooth_proxy_anchor", n, s, "val", over, label=name)
        for n in args.noise for s in args.seeds for name, over in VARIANTS.items()
    ]  # fmt: skip
    records = run_grid(spec, runs, args.out, resolve_root(args.dataset, args.data_root))
    print(write_table(records, Path(args.out) / "selection.md"))


def write_table(records: list[dict], path: Path) -> str:
    """Per variant and noise: R@1, MAP@R and R@1 - Proxy-Anchor (paired by seed)."""
    by = defaultdict(dict)
    for r in records:
        if r.get("mode") == "val":
            by[(r["method"], r["noise"])][r["seed"]] = r["metrics"]
    lines = [
        "| variant | noise | seeds | R@1 | MAP@R | R@1 - PA (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for (name, noise), runs in sorted(by.items()):
        pa = by.get(("proxy_anchor", noise), {})
        diffs = [100 * (m["R@1"] - pa[s]["R@1"]) for s, m in runs.items() if s in pa]
        r1 = statistics.mean(100 * m["R@1"] for m in runs.values())
        mapr = statistics.mean(100 * m["MAP@R"] for m in runs.values())
        diff = f"{statistics.mean(diffs):+.2f}" if diffs and name != "proxy_anchor" else "-"
        lines.append(f"| {name} | {noise} | {len(runs)} | {r1:.2f} | {mapr:.2f} | {diff} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


if __name__ == "__main__":
    main()
