"""Compare two benchmark result folders run by run (issue #11's reproduction check).

Runs are matched by (method, noise, seed) on the test classes; a pair counts as a reproduction
only when its two configurations are identical (the report lists the keys that differ
otherwise). Prints, per method and noise, the mean R@1 of both folders over the matched seeds,
the largest per-seed difference and whether the runs were really re-run (different run keys
or wall times) rather than copied:

    python benchmarks/compare_rounds.py benchmarks/results/cub benchmarks/results/frozen_v2_cub
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

Cell = tuple[str, str, int]


def load_test_runs(folder: str | Path) -> dict[Cell, dict]:
    """The test-class runs of `folder/results.jsonl`, keyed by (method, noise, seed)."""
    runs: dict[Cell, dict] = {}
    with open(Path(folder) / "results.jsonl") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("mode") == "test":
                runs[(rec["method"], rec["noise"], rec["seed"])] = rec
    return runs


def config_difference(a: dict, b: dict) -> dict[str, tuple]:
    """Keys whose values differ between two run configurations: {key: (a's, b's)}."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def compare(
    old_folder: str | Path, new_folder: str | Path, renames: dict[str, str] | None = None
) -> list[dict]:
    """One row per (method, noise, configuration difference) with the matched seeds' R@1.

    `renames` maps an old method name to the new folder's name for the same recipe (e.g. the
    first round's single-model Smooth PA to `smooth_proxy_anchor_single_model`).
    """
    renames = renames or {}
    old = {(renames.get(m, m), n, s): r for (m, n, s), r in load_test_runs(old_folder).items()}
    new = load_test_runs(new_folder)
    groups: dict[tuple[str, str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for cell in sorted(set(old) & set(new)):
        diff = config_difference(old[cell]["cfg"], new[cell]["cfg"])
        groups[(cell[0], cell[1], json.dumps(diff))].append((old[cell], new[cell]))
    rows = []
    for (method, noise, diff), pairs in groups.items():
        r1_old = [100 * a["metrics"]["R@1"] for a, _ in pairs]
        r1_new = [100 * b["metrics"]["R@1"] for _, b in pairs]
        rerun = all(
            a["key"] != b["key"] or a["train_seconds"] != b["train_seconds"] for a, b in pairs
        )
        rows.append(
            {
                "method": method,
                "noise": noise,
                "seeds": len(pairs),
                "old": statistics.mean(r1_old),
                "new": statistics.mean(r1_new),
                "max_abs_diff": max(abs(x - y) for x, y in zip(r1_old, r1_new, strict=True)),
                "re_run": rerun,
                "config_difference": json.loads(diff),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="folder of the earlier round (results.jsonl)")
    ap.add_argument("new", help="folder of the re-run (results.jsonl)")
    ap.add_argument(
        "--match",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="compare the old folder's method OLD with the new folder's method NEW",
    )
    args = ap.parse_args()
    renames = dict(m.split("=", 1) for m in args.match)
    header = "| method | noise | seeds | R@1 old | R@1 new | max per-seed diff | re-run | config |"
    print(header + "\n|---|---|---|---|---|---|---|---|")
    for row in compare(args.old, args.new, renames):
        diff = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in row["config_difference"].items())
        print(
            f"| {row['method']} | {row['noise']} | {row['seeds']} | {row['old']:.1f} | "
            f"{row['new']:.1f} | {row['max_abs_diff']:.1f} | {'yes' if row['re_run'] else 'no'} "
            f"| {diff or 'identical'} |"
        )


if __name__ == "__main__":
    main()
