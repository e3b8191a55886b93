# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading the benchmark results: CUB-200-2011 and Cars196
#
# `noisy-pml bench --out DIR` appends one JSON line per run to `DIR/results.jsonl` (method, noise
# recipe, seed, resolved hyperparameters, test metrics, timings, and for methods that score
# samples the noise-detection ROC) and writes `results.md` / `results.json` summaries next to it.
# The committed results live in `benchmarks/results/<dataset>/`, with the analysis in
# `benchmarks/results/README.md`. This notebook only reads them, with the benchmark's own
# summary functions (`noisy_pml.bench.report`): it trains nothing and never invents a number;
# when a dataset's results are missing it says so.
#
# The committed grids (protocol in `benchmarks/results/README.md`):
#
# - **CUB-200-2011**, classes 1-100 train / 101-200 test, frozen ImageNet EfficientNet-Lite0
#   features (centre crop 224 px + one cached augmented view at 160 px), a residual 512-d head
#   trained 6 epochs per run;
# - **Cars196, training half only** (classes 1-98 train / 99-196 test, 160 px): about half the
#   usual test gallery, so not comparable with published Cars196 numbers;
# - noise: clean, symmetric 20 / 30 / 50 / 70 %, small-cluster 25 %; 3 seeds per cell;
#   ablation variants of the reconstructed choices with seed 0 at symmetric 30 / 50 %;
# - **CUB fine-tuned** (`cub_finetune/`): the same split with EfficientNet-Lite0 trained end to
#   end (`--protocol finetune`) at a CPU-sized 128 px for 4 epochs, clean and symmetric 50 %;
# - `digits/` is the CI smoke run (raw 8x8 pixels, one seed): it checks that every method runs,
#   it is not evidence for choosing one.
#
# Set `NOISY_PML_RESULTS` to read another results folder (one subfolder per dataset).

# %%
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

# Quick mode (NOISY_PML_QUICK=1, used by CI) shrinks data and epochs; full mode made the outputs
# you see in the committed notebook.
QUICK = os.environ.get("NOISY_PML_QUICK", "0").lower() not in ("", "0", "false", "no")
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))
T0 = time.perf_counter()
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
print("quick mode" if QUICK else "full mode")


# %%
import contextlib
import importlib.util
import io
import json

from IPython.display import Markdown, display

from noisy_pml.bench.report import markdown_tables, recovered_share, summarize
from noisy_pml.bench.run import read_results


def find_results_dir():
    if os.environ.get("NOISY_PML_RESULTS"):
        return Path(os.environ["NOISY_PML_RESULTS"])
    for p in [Path.cwd(), *Path.cwd().parents]:
        if (p / "benchmarks" / "results").is_dir():
            return p / "benchmarks" / "results"
    return None


def dataset_order(name):  # the real datasets first, the smoke run last
    return ({"cub": 0, "cars196": 1, "cub_finetune": 2}.get(name, 3), name)


RESULTS = find_results_dir()
records, plans = {}, {}
if RESULTS is None or not RESULTS.is_dir():
    print("no benchmarks/results folder found: run this notebook from inside the repository")
else:
    for folder in sorted((p for p in RESULTS.iterdir() if p.is_dir()),
                         key=lambda p: dataset_order(p.name)):
        recs = read_results(folder / "results.jsonl")
        if not recs:
            print(f"{folder.name}: no results.jsonl (or an empty one)")
            continue
        summary_file = folder / "results.json"
        if summary_file.exists():
            # results.json lists the runs of the grid's current configuration; the JSONL may
            # also hold superseded runs, which the committed tables leave out too
            payload = json.loads(summary_file.read_text())
            current = {r["key"] for r in payload["runs"]}
            recs = [r for r in recs if r.get("key") in current]
            plans[folder.name] = payload.get("plan") or {}
        records[folder.name] = recs
for name, recs in records.items():
    data = recs[0].get("data", {})
    print(f"{name}: {len(recs)} runs ({data.get('protocol', '?')} {data.get('backbone', '?')}, "
          f"{data.get('image_size', '?')} px); methods {len({r['method'] for r in recs})}, "
          f"noise settings {len({r['noise'] for r in recs})}, "
          f"seeds {sorted({r['seed'] for r in recs})}")
if not records:
    print("No benchmark results found. Produce them with, e.g.:\n"
          "  noisy-pml bench --out benchmarks/results/digits\n"
          "  noisy-pml bench --config benchmarks/configs/cub.json --data-root $NOISY_PML_DATA "
          "--out benchmarks/results/cub")
summaries = {name: summarize(recs, "test") for name, recs in records.items()}


def main_methods(name):
    """The grid's methods (3 seeds, every noise); ablation variants are shown separately."""
    listed = plans.get(name, {}).get("methods")
    variants = {r["method"] for r in records[name]
                if r.get("base_method") not in (None, r["method"])}
    return [m for m in (listed or summaries[name])
            if m in summaries[name] and m not in variants]


# %% [markdown]
# ## R@1 against label noise
#
# Mean ± std over the 3 seeds, on the test classes. The dashed line is the untrained backbone
# (cosine kNN on the frozen features): the floor a trained head must beat. On CUB the best trained
# head gains only +1.3 R@1 over it (Multi-Similarity, clean), so CUB separates methods by tenths of
# a point; Cars196 (+6.5) separates them clearly.

# %%
def noise_key(recipe):
    kind, _, rate = recipe.partition(":")
    return (kind != "clean", kind, float(rate or 0))


# one colour per method on every panel; the real datasets only (digits is the CI smoke run)
COLORS = {m: plt.cm.tab10(i) for i, m in enumerate(dict.fromkeys(
    m for n in summaries for m in main_methods(n) if m != "frozen_features"))}
plotted = [n for n in summaries if len({x for c in summaries[n].values() for x in c}) > 1]
plotted = [n for n in plotted if n in ("cub", "cars196")] or plotted
if plotted:
    fig, axes = plt.subplots(1, len(plotted), figsize=(6.5 * len(plotted), 4.5), squeeze=False)
    for ax, name in zip(axes[0], plotted, strict=True):
        summary = summaries[name]
        noises = sorted({n for cells in summary.values() for n in cells}, key=noise_key)
        for method in main_methods(name):
            cells = summary[method]
            if method == "frozen_features":
                ax.axhline(cells["clean"]["R@1"][0], c="gray", ls="--", lw=1, label=method)
                continue
            xs = [i for i, n in enumerate(noises) if n in cells]
            ax.errorbar(xs, [cells[noises[i]]["R@1"][0] for i in xs],
                        yerr=[cells[noises[i]]["R@1"][1] for i in xs],
                        marker="o", ms=4, capsize=3, label=method, c=COLORS[method])
        ax.set_xticks(range(len(noises)))
        ax.set_xticklabels(noises, rotation=25, fontsize=8)
        ax.set_ylabel("R@1 (%) on the test classes")
        ax.set_title(name)
    axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), fontsize=7,
                       bbox_to_anchor=(1.02, 1), loc="upper left")
    plt.tight_layout()
    plt.show()
else:
    print("no dataset with more than one noise setting: nothing to plot against noise")

# %% [markdown]
# ## The papers' claims: paired differences
#
# `benchmarks/claims.py` pairs the runs of two methods by seed (same noisy labels) and reports the
# R@1 difference in points, mean ± std over the seeds (n = seeds). Claimed: Smooth Proxy-Anchor
# +3.29 over Proxy-Anchor and +2.63 over Multi-Similarity under noise; AHSML-MS +3.3 over
# Multi-Similarity at symmetric 30 %. `cub_finetune` pairs the fine-tuned runs the same way.

# %%
claims_py = RESULTS.parent / "claims.py" if RESULTS is not None else None
real = [n for n in ("cub", "cars196", "cub_finetune")
        if n in records and (RESULTS / n / "results.json").exists()]
if claims_py is None or not claims_py.exists():
    print("benchmarks/claims.py not found: run this notebook from inside the repository")
elif not real:
    print("no CUB or Cars196 results to compare")
else:
    spec = importlib.util.spec_from_file_location("claims", claims_py)
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        claims.main([str(RESULTS / n) for n in real])
    display(Markdown(out.getvalue()))

# %% [markdown]
# ## Share of Proxy-Anchor's noise damage recovered
#
# `(R@1[method, noisy] - R@1[PA, noisy]) / (R@1[PA, clean] - R@1[PA, noisy])`: 0 = no better than
# Proxy-Anchor under that noise, 1 = back to Proxy-Anchor's clean score. On CUB Proxy-Anchor's
# damage is under one point, so shares there are ratios of small numbers; read them with the
# absolute tables.

# %%
shown = [n for n in summaries if recovered_share(summaries[n]) and n in ("cub", "cars196")]
if not shown:
    print("no recovered share (needs clean and noisy proxy_anchor runs whose R@1 differ)")
else:
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 3.8), squeeze=False)
    for ax, name in zip(axes[0], shown, strict=True):
        share = recovered_share(summaries[name])
        noisy = sorted({n for d in share.values() for n in d}, key=noise_key)
        methods = [m for m in main_methods(name)
                   if m in share and m not in ("proxy_anchor", "frozen_features")]
        width = 0.8 / max(len(methods), 1)
        for j, m in enumerate(methods):
            xs = [i + j * width for i, n in enumerate(noisy) if n in share[m]]
            ax.bar(xs, [share[m][n] for n in noisy if n in share[m]], width, label=m,
                   color=COLORS.get(m))
        ax.axhline(0, c="k", lw=0.8)
        ax.axhline(1, c="gray", ls="--", lw=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(noisy))])
        ax.set_xticklabels(noisy, rotation=20, fontsize=8)
        ax.set_ylabel("share recovered")
        ax.set_title(f"{name}: 0 = PA under noise, 1 = PA clean")
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Ablations of the reconstructed choices
#
# Each variant changes one reconstructed (R) choice of its base method (seed 0 only); the bars
# are its R@1 minus the base method's 3-seed mean under the same noise. `spa_*` vary Smooth
# Proxy-Anchor (`spa_position_0.5`: the literal $\mu = 0.5$; `spa_labels_as_positives`: no
# relabelling; `spa_unweighted_negatives`; `spa_hard_step`: sharpness 1000), `ahsml_ms_*` vary
# AHSML-MS (`_euclidean`: no hyperbolic map; `_no_divergence`: $\delta = 0$;
# `_no_consistency`: one view, no augmentation pairs; `_divergence_reading` of the negative
# threshold; `_aug_max` augmentation threshold), `pa_linear_head` is Proxy-Anchor with a linear
# head instead of the residual one.

# %%
ablated = {}
for name in ("cub", "cars196"):
    if name not in records:
        continue
    base_of = {r["method"]: r.get("base_method") for r in records[name]
               if r.get("base_method") not in (None, r["method"])}
    rows = []
    for variant, base in base_of.items():
        for noise, cell in summaries[name][variant].items():
            if noise == "clean" or noise not in summaries[name].get(base, {}):
                continue
            rows.append((variant, noise, cell["R@1"][0] - summaries[name][base][noise]["R@1"][0]))
    if rows:
        ablated[name] = rows
if not ablated:
    print("no ablation variants in the results")
else:
    fig, axes = plt.subplots(1, len(ablated), figsize=(6.5 * len(ablated), 5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], ablated.items(), strict=True):
        variants = list(dict.fromkeys(v for v, _, _ in rows))
        noises = sorted({n for _, n, _ in rows}, key=noise_key)
        h = 0.8 / len(noises)
        for j, n in enumerate(noises):
            d = {v: x for v, nn, x in rows if nn == n}
            ys = [i + j * h for i, v in enumerate(variants) if v in d]
            ax.barh(ys, [d[v] for v in variants if v in d], h, label=n)
        ax.axvline(0, c="k", lw=0.8)
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(variants))])
        ax.set_yticklabels(variants, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("R@1 of the variant minus its base method (points)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Tables
#
# R@K and MAP@R in %, mean ± standard deviation over seeds, on the test classes, then the
# recovered share and the noise-detection AUROC. These are the tables of the committed
# `results.md` files (which also list the hyperparameter candidates scored on the validation
# classes).

# %%
for name, summary in summaries.items():
    data = records[name][0].get("data", {})
    order = main_methods(name) + [m for m in summary if m not in main_methods(name)]
    head = (f"## {name}: {data.get('protocol', '?')} {data.get('backbone', '?')} "
            f"{data.get('image_size', '?')} px\n\n")
    display(Markdown(head + markdown_tables(summary, order)))

# %% [markdown]
# ## Noise detection
#
# Methods that score training samples (PRISM's clean score, Smooth Proxy-Anchor's confidence)
# store the ROC curve of finding the injected noise with that score; the higher the curve, the
# better mislabelled samples are separated from clean ones (diagonal = chance). First seed of
# each method and noise setting.

# %%
shown = [n for n in ("cub", "cars196") if n in records] or list(records)
panels = []
for name in shown:
    curves = [r for r in records[name] if r.get("detection") and r.get("mode", "test") == "test"
              and r["method"] in main_methods(name)]
    if curves:
        panels.append((name, curves))
if not panels:
    print("no run in the results stored a noise-detection curve")
else:
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels, strict=True):
        seen = set()
        for r in sorted(curves, key=lambda r: (r["method"], noise_key(r["noise"]), r["seed"])):
            if (r["method"], r["noise"]) in seen:
                continue
            seen.add((r["method"], r["noise"]))
            d = r["detection"]
            ax.plot(d["fpr"], d["tpr"], lw=1,
                    ls="-" if r["method"] == "smooth_proxy_anchor" else ":",
                    label=f"{r['method']} {r['noise']} (AUROC {d['auroc']:.3f})")
        ax.plot([0, 1], [0, 1], "--", c="gray")
        ax.set_xlabel("false positive rate (clean samples flagged)")
        ax.set_ylabel("true positive rate (mislabelled samples found)")
        ax.set_title(f"{name}: noise detection")
        ax.legend(fontsize=6)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Cost
#
# Mean training wall time per run on the benchmark machine (2 CPU cores shared with other jobs,
# several runs in parallel, so only the ratios between methods mean much). Backbone features are
# extracted once and cached (`feature_seconds` in the records, paid once per dataset).

# %%
for name, summary in summaries.items():
    feat = max(r.get("feature_seconds", 0) for r in records[name])
    print(f"{name}: feature extraction (once) {feat:.0f} s")
    for method in main_methods(name):
        secs = [c["train_seconds"] for c in summary[method].values()]
        print(f"  {method:24s} {np.mean(secs):8.1f} s per run")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
