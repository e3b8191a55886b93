"""How cheap can a fine-tuned run be and still learn? (issue #16)

The fine-tuned grid (every method, clean / symmetric 30 / 50 %, 3 seeds, CUB and Cars196) is
about 90 runs, so its resolution is chosen first: for each dataset and image size this measures

- the **frozen floor**: cosine kNN on the frozen EfficientNet-Lite0 features at that size
  (`frozen_features`, frozen protocol, no augmented views), and
- **Proxy-Anchor fine-tuned end to end** at that size (`--protocol finetune`, clean labels,
  seed 0, the benchmark's defaults otherwise),

and reports the learning effect (fine-tuned R@1 minus the floor) and the wall time. A size is
usable for the grid when the learning effect stays >= +5 R@1: below that, methods separate by
less than the seed noise, as with frozen features.

Both sides go through `noisy_pml.bench.run_benchmark` with the library's defaults, into one
resumable results file; re-running the command skips finished runs and rewrites the table::

    python benchmarks/finetune_cost.py --data-root $NOISY_PML_DATA \\
        --out benchmarks/results/finetune_cost

Two processes may share the output folder (``--datasets cub`` in one, ``--datasets cars196`` in
the other): each appends its own runs, and the table is written from the whole file.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from noisy_pml.bench import run_benchmark
from noisy_pml.bench.grid import RESULTS_NAME, read_results

THRESHOLD = 5.0  # R@1 points over the same-size floor that a usable size must keep


def measure(dataset: str, size: int, args: argparse.Namespace) -> None:
    common = dict(dataset=dataset, data_root=args.data_root, image_size=size, seeds=[args.seed],
                  noise=["clean"], out=args.out, threads=args.threads, no_plots=True,
                  quiet=True)
    run_benchmark(methods=["frozen_features"], aug_views=0, **common)
    run_benchmark(methods=[args.method], protocol="finetune", epochs=args.epochs, **common)


def table(out: Path, method: str) -> str:
    rows = [
        "| dataset | size (px) | frozen floor R@1 | fine-tuned R@1 | learning effect | train s | "
        "s / epoch (median) | eval s | >= +5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, int], dict[str, dict]] = {}
    for rec in read_results(out / RESULTS_NAME):
        data = rec.get("data") or {}
        cell = cells.setdefault((data.get("dataset"), data.get("image_size")), {})
        if rec["method"] == "frozen_features":
            cell["floor"] = rec
        elif rec["method"] == method and rec.get("protocol") == "finetune":
            cell["tuned"] = rec
    for (dataset, size), cell in sorted(cells.items()):
        floor = cell.get("floor")
        tuned = cell.get("tuned")
        f = 100 * floor["metrics"]["R@1"] if floor else None
        t = 100 * tuned["metrics"]["R@1"] if tuned else None
        effect = t - f if f is not None and t is not None else None
        epoch_s = statistics.median(tuned["epoch_seconds"]) if tuned else None
        rows.append(
            f"| {dataset} | {size} | {_fmt(f)} | {_fmt(t)} | {_fmt(effect, sign=True)} | "
            f"{_fmt(tuned and tuned['train_seconds'], 0)} | {_fmt(epoch_s, 0)} | "
            f"{_fmt(tuned and tuned['eval_seconds'], 0)} | "
            f"{'-' if effect is None else ('yes' if effect >= THRESHOLD else 'no')} |"
        )
    return "\n".join(rows) + "\n"


def _fmt(x, digits: int = 1, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--datasets", nargs="+", default=["cub", "cars196"])
    p.add_argument("--sizes", nargs="+", type=int, default=[96, 128])
    p.add_argument("--method", default="proxy_anchor")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/finetune_cost"))
    args = p.parse_args()
    for dataset in args.datasets:
        for size in args.sizes:
            measure(dataset, size, args)
            text = table(args.out, args.method)
            (args.out / "table.md").write_text(text)
            print(text, flush=True)


if __name__ == "__main__":
    main()
