"""The benchmark from Python: the same arguments and defaults as ``noisy-pml bench``.

    >>> from noisy_pml.bench import run_benchmark, load_results
    >>> records = run_benchmark(methods=["proxy_anchor"], noise=["clean"], epochs=1)
    >>> df = load_results("bench_results/results.jsonl")   # needs pandas

``run_benchmark(**kw)`` is ``noisy-pml bench --kw ...``: one keyword per command-line flag
(dashes become underscores), the same defaults, the same output folder, the same resumable
results file; it returns the run records (one dict per run) instead of printing the table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["run_benchmark", "load_results"]


def run_benchmark(
    *,
    dataset: str | None = None,
    data_root: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    methods: Sequence[str] | str | None = None,
    noise: Sequence[str] | str | None = None,
    seeds: Sequence[int] | None = None,
    protocol: str = "frozen",
    backbone: str = "efficientnet_lite0",
    image_size: int | None = None,
    aug_image_size: int | None = None,
    aug_views: int | None = None,
    epochs: int | None = None,
    set: dict[str, Any] | Sequence[str] = (),
    select: bool = False,
    val_classes: int = 20,
    out: str | os.PathLike = "bench_results",
    cache_dir: str | os.PathLike | None = None,
    smoke: bool = False,
    threads: int | None = None,
    device: str = "auto",
    no_variants: bool = False,
    only_variants: bool = False,
    report_only: bool = False,
    no_plots: bool = False,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark grid; return its records, one dict per run.

    Every argument is the ``noisy-pml bench`` flag of the same name (see ``noisy-pml bench
    --help``), with the same default. ``set`` takes a dict (``{"lr": 1e-3}``) or the flag's
    ``["lr=1e-3"]`` strings; ``methods`` and ``noise`` a list or one comma-separated string.

    Returns:
        The grid's records (method, noise, seed, cfg, metrics, wall times, ...), as written
        to ``out/results.jsonl``; ``out/results.md`` holds the table.

    Raises:
        ValueError: for any argument the command line would refuse (same messages).
    """
    import torch

    from .cli import build_parser, default_threads, execute

    values = dict(locals())
    values.pop("torch")
    values.pop("build_parser")
    values.pop("execute")
    values.pop("default_threads")
    argv = ["bench"]
    for key in ("methods", "noise"):
        if isinstance(values[key], str):
            values[key] = [values[key]]
    if isinstance(values["set"], dict):
        import json

        values["set"] = [f"{k}={json.dumps(v)}" for k, v in values["set"].items()]
    for key in ("seeds", "epochs", "image_size", "aug_image_size", "aug_views", "threads",
                "val_classes"):  # through the parser: the same range checks and messages
        value = values.pop(key)
        if value is not None:
            flag = "--" + key.replace("_", "-")
            argv += [flag, *map(str, value)] if key == "seeds" else [flag, str(value)]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the message
        raise ValueError(f"invalid argument in {argv[1:]} (see the message above)") from exc
    for key, value in values.items():
        setattr(args, key, os.fspath(value) if isinstance(value, Path) else value)
    args.list = False
    torch.set_num_threads(default_threads(args))
    records, _ = execute(args)
    return records


def load_results(path: str | os.PathLike):
    """A results file (``results.jsonl``, or the folder holding it) as a pandas DataFrame.

    One row per run: ``method``, ``base_method``, ``noise``, ``seed``, ``mode``, one column
    per metric (``R@1``, ``R@2``, ``R@4``, ``R@8``, ``MAP@R``), the wall times
    (``train_seconds``, ``eval_seconds``, ``feature_seconds``), ``achieved_noise_rate``,
    ``detection_auroc``, ``protocol``, ``key`` and ``cfg`` (a dict). A torn last line is
    skipped (see `noisy_pml.bench.run.read_results`).

    Raises:
        ImportError: pandas is not installed (``pip install 'noisy-pml[results]'``).
        FileNotFoundError: no results file at ``path``.
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_results needs pandas: pip install 'noisy-pml[results]' (or pandas)"
        ) from exc
    from .grid import RESULTS_NAME, read_results

    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_NAME
    if not p.is_file():
        raise FileNotFoundError(f"no results file {p}")
    rows = []
    for r in read_results(p):
        row = {
            k: r.get(k)
            for k in ("method", "base_method", "noise", "seed", "mode", "protocol")
        }
        row.update(r.get("metrics") or {})
        for k in ("train_seconds", "eval_seconds", "feature_seconds", "achieved_noise_rate"):
            row[k] = r.get(k)
        row["detection_auroc"] = (r.get("detection") or {}).get("auroc")
        row["key"], row["cfg"] = r.get("key"), r.get("cfg")
        rows.append(row)
    return pd.DataFrame(rows)
