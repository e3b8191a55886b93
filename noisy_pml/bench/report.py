"""Tables (Markdown, JSON) and plots (PNG) from the benchmark's JSONL records.

Numbers are percentages (R@K and MAP@R x 100), mean +- sample standard deviation over seeds.
Besides absolute R@1, the *recovered share* of the noise damage is reported for each method
under noise (benchmark spec):

    (R@1[method, noisy] - R@1[PA, noisy]) / (R@1[PA, clean] - R@1[PA, noisy])

1 means the method recovers all that noise cost Proxy-Anchor, 0 nothing, < 0 worse than PA.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..noise import NoiseRecipe

__all__ = [
    "METRICS",
    "summarize",
    "markdown_tables",
    "recovered_share",
    "selection_table",
    "write_report",
]

METRICS = ("R@1", "R@2", "R@4", "R@8", "MAP@R")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _noise_order(noise: str) -> tuple[int, float]:
    r = NoiseRecipe.parse(noise)
    kinds = {"clean": 0, "symmetric": 1, "small_cluster": 2, "pair_flip": 3}
    return (0 if r.is_clean else kinds.get(r.kind, 9), r.rate)


def summarize(records: Sequence[dict[str, Any]], mode: str = "test") -> dict[str, Any]:
    """``{method: {noise: {metric: (mean, std), "seeds": n, "train_seconds": mean}}}`` in %."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for r in records:
        key = r.get("key")
        if key is not None:
            if key in seen:
                continue  # the same run recorded twice (two processes): count it once
            seen.add(key)
        if r.get("mode", "test") == mode:
            groups[(r["method"], r["noise"])].append(r)
    out: dict[str, dict[str, Any]] = {}
    for (method, noise), recs in groups.items():
        cell: dict[str, Any] = {}
        for m in METRICS:
            vals = [100.0 * r["metrics"][m] for r in recs if m in r["metrics"]]
            if vals:
                cell[m] = _mean_std(vals)
        cell["seeds"] = len(recs)
        cell["train_seconds"] = _mean_std([r["train_seconds"] for r in recs])[0]
        aurocs = [r["detection"]["auroc"] for r in recs if r.get("detection")]
        if aurocs:
            cell["detection_auroc"] = _mean_std([100.0 * a for a in aurocs])
        out.setdefault(method, {})[noise] = cell
    return out


def _methods_in_order(summary: dict[str, Any], order: Sequence[str] | None) -> list[str]:
    names = list(summary)
    if order:
        names = [m for m in order if m in summary] + [m for m in names if m not in order]
    return names


def _noises(summary: dict[str, Any]) -> list[str]:
    return sorted({n for cells in summary.values() for n in cells}, key=_noise_order)


def _fmt(ms: tuple[float, float] | None) -> str:
    return "-" if ms is None else f"{ms[0]:.1f} ± {ms[1]:.1f}"


def recovered_share(
    summary: dict[str, Any], base: str = "proxy_anchor"
) -> dict[str, dict[str, float]]:
    """Share of the noise damage to ``base`` each method recovers, per noisy recipe (R@1)."""
    if base not in summary or "clean" not in summary[base]:
        return {}
    clean = summary[base]["clean"]["R@1"][0]
    out: dict[str, dict[str, float]] = {}
    for method, cells in summary.items():
        for noise, cell in cells.items():
            if noise == "clean" or noise not in summary[base]:
                continue
            noisy = summary[base][noise]["R@1"][0]
            gap = clean - noisy
            if abs(gap) < 1e-9:
                continue
            out.setdefault(method, {})[noise] = (cell["R@1"][0] - noisy) / gap
    return out


def markdown_tables(
    summary: dict[str, Any], order: Sequence[str] | None = None, base: str = "proxy_anchor"
) -> str:
    """R@1 grid (method x noise), the full metric table, recovered shares, detection AUROC."""
    methods, noises = _methods_in_order(summary, order), _noises(summary)
    lines = ["### R@1 (%), mean ± std over seeds", ""]
    lines.append("| method | " + " | ".join(noises) + " |")
    lines.append("|---" * (len(noises) + 1) + "|")
    for m in methods:
        cells = [_fmt(summary[m].get(n, {}).get("R@1")) for n in noises]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "### All metrics (%), mean ± std over seeds", ""]
    lines.append("| method | noise | " + " | ".join(METRICS) + " | seeds | train s/run |")
    lines.append("|---" * (len(METRICS) + 4) + "|")
    for m in methods:
        for n in noises:
            cell = summary[m].get(n)
            if cell is None:
                continue
            vals = " | ".join(_fmt(cell.get(k)) for k in METRICS)
            lines.append(f"| {m} | {n} | {vals} | {cell['seeds']} | {cell['train_seconds']:.1f} |")
    share = recovered_share(summary, base)
    noisy = [n for n in noises if n != "clean"]
    if share and noisy:
        lines += [
            "",
            f"### Share of {base}'s noise damage recovered (R@1; 0 = {base}, 1 = its clean score)",
            "",
            "| method | " + " | ".join(noisy) + " |",
            "|---" * (len(noisy) + 1) + "|",
        ]
        for m in methods:
            row = [f"{share.get(m, {})[n]:+.2f}" if n in share.get(m, {}) else "-" for n in noisy]
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    det = [m for m in methods if any("detection_auroc" in c for c in summary[m].values())]
    if det and noisy:
        lines += [
            "",
            "### Noise detection AUROC (%) of the per-sample clean scores",
            "",
            "| method | " + " | ".join(noisy) + " |",
            "|---" * (len(noisy) + 1) + "|",
        ]
        for m in det:
            row = [_fmt(summary[m].get(n, {}).get("detection_auroc")) for n in noisy]
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def selection_table(val_records: Sequence[dict[str, Any]], chosen: dict[str, Any]) -> str:
    """One row per candidate tried on the validation classes; the chosen one in bold, or every
    row marked pending while the method's selection is unfinished."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in val_records:
        by_method[r["method"]].append(r)
    lines = [
        "## Hyperparameter selection on validation classes",
        "",
        "| method | candidate (values that vary) | noise | val R@1 | val MAP@R | chosen |",
        "|---|---|---|---|---|---|",
    ]
    for method, recs in by_method.items():
        entry = chosen.get(method) or {}
        # reports written before "searched" existed: the keys that differ between the runs
        varying = entry.get("searched") or sorted(
            k for k in recs[0]["cfg"] if len({json.dumps(r["cfg"].get(k)) for r in recs}) > 1
        )
        # values is None while a selection is unfinished (--report-only): nothing is chosen yet
        pick = entry.get("values", {})
        for r in recs:
            cand = {k: r["cfg"].get(k) for k in varying}
            if pick is None:
                mark = f"pending ({entry.get('finished', '?')} finished)"
            else:
                mark = "**yes**" if all(r["cfg"].get(k) == v for k, v in pick.items()) else ""
                edges = entry.get("edges") or {}
                if mark and edges:  # the optimum may lie beyond the grid
                    mark += " (" + ", ".join(f"{e} {k} tried" for k, e in edges.items()) + ")"
            m = r["metrics"]
            lines.append(
                f"| {method} | {json.dumps(cand)} | {r['noise']} | {100 * m['R@1']:.1f} | "
                f"{100 * m['MAP@R']:.1f} | {mark} |"
            )
    return "\n".join(lines) + "\n"


def _plot_r1(summary: dict[str, Any], methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({NoiseRecipe.parse(n).kind for c in summary.values() for n in c if n != "clean"})
    kinds = kinds or ["symmetric"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for m in methods:
            pts = []
            for n, cell in summary[m].items():
                r = NoiseRecipe.parse(n)
                if r.is_clean or r.kind == kind:
                    pts.append((0.0 if r.is_clean else r.rate, *cell["R@1"]))
            if not pts:
                continue
            pts.sort()
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=m)
        ax.set_xlabel(f"{kind} noise rate")
        ax.set_ylabel("R@1 (%)")
        ax.set_title(f"{title}: R@1 vs {kind} noise")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08 + 0.035 * ((len(labels) - 1) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_detection(records: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("mode", "test") == "test" and r.get("detection"):
            curves[r["noise"]][r["method"]].append(r["detection"]["tpr"])
            fpr = r["detection"]["fpr"]
    if not curves:
        return False
    noises = sorted(curves, key=_noise_order)
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 4), squeeze=False)
    for ax, n in zip(axes[0], noises, strict=True):
        for m, tprs in sorted(curves[n].items()):
            mean = [sum(col) / len(col) for col in zip(*tprs, strict=True)]
            ax.plot(fpr, mean, label=m)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{title}: {n}")
        ax.set_xlabel("false positive rate (clean flagged)")
        ax.set_ylabel("true positive rate (noisy flagged)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    title: str = "noisy-pml bench",
    order: Sequence[str] | None = None,
    plots: bool = True,
    extra: dict[str, Any] | None = None,
    plot_methods: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Write ``results.md``, ``results.json`` and PNG plots into ``out_dir``; return Markdown.

    ``notes`` are printed under the tables (e.g. which defaults produced them, reused runs).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, "test")
    tables = markdown_tables(summary, order) if summary else "No test run has finished yet.\n"
    md = f"## {title}\n\n" + tables
    val = [r for r in records if r.get("mode") == "val"]
    if val:
        md += "\n" + selection_table(val, (extra or {}).get("chosen_hyperparameters", {}))
    if notes:
        md += "\n" + "".join(f"{n}\n" for n in notes)
    (out / "results.md").write_text(md)
    payload = {
        "title": title,
        "summary": {
            m: {n: {k: v for k, v in c.items()} for n, c in cells.items()}
            for m, cells in summary.items()
        },
        "validation_summary": summarize(records, "val"),
        "recovered_share": recovered_share(summary),
        "num_runs": len(records),
        "runs": [
            {
                k: r.get(k)
                for k in (
                    "key",
                    "method",
                    "base_method",
                    "noise",
                    "seed",
                    "mode",
                    "metrics",
                    "train_seconds",
                    "eval_seconds",
                )
            }
            | {"detection_auroc": (r.get("detection") or {}).get("auroc")}
            for r in records
        ],
        **(extra or {}),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    if plots and summary and importlib.util.find_spec("matplotlib") is None:
        warnings.warn(
            "matplotlib is not installed: PNG plots skipped (pip install 'noisy-pml[bench]')",
            stacklevel=2,
        )
        plots = False
    if plots and summary:
        methods = _methods_in_order(summary, plot_methods or order)
        if plot_methods:
            methods = [m for m in methods if m in plot_methods]
        short = title.split(" (")[0]
        _plot_r1(summary, methods, out / "r1_vs_noise.png", short)
        _plot_detection(records, out / "noise_detection.png", short)
    return md
