"""Paired differences for the fresh-views check of issue #10: one cached augmented view per
image (``../ahsml_v3_<dataset>/lr_select/``) against four (``<dataset>/``), MS and AHSML-MS, each
at the learning rate its own grid chose on validation classes. Same seeds and noisy labels in
both folders, so runs pair across them::

    python benchmarks/results/ahsml_v4_views/paired_views.py cars196 > .../cars196/paired.md
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/, for paired.py
from paired import load, paired_table  # noqa: E402

PAIRS = [
    ("ahsml_ms 4 views", "multi_similarity 4 views"),
    ("ahsml_ms 1 view", "multi_similarity 1 view"),
    ("ahsml_ms 4 views", "ahsml_ms 1 view"),
    ("multi_similarity 4 views", "multi_similarity 1 view"),
]


def main(dataset: str) -> None:
    runs = {}
    for folder, tag in ((HERE.parent / f"ahsml_v3_{dataset}" / "lr_select", "1 view"),
                        (HERE / dataset, "4 views")):  # fmt: skip
        for (method, noise, seed), rec in load(folder, last_grid_only=True).items():
            if method in ("multi_similarity", "ahsml_ms"):
                runs[(f"{method} {tag}", noise, seed)] = rec
    print(paired_table(runs, PAIRS), end="")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cars196")
