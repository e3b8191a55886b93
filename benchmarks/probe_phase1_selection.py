"""What Smooth Proxy-Anchor's phase 1 selects, on the features each protocol gives it.

Smooth PA keeps a sample as a positive of a class when its phase-1 confidence reaches
tau = 0.1 (`SmoothProxyAnchorLoss`'s default). With ``unselected="ignore"`` a sample whose
noisy label falls below tau drops out of that class's terms, so the absolute level of the
confidences, not only their ranking, decides how many positives phase 2 trains on. This probe
fits phase 1 (`noisy_pml.trainers.estimate_confidences`, as the benchmark's
``smooth_proxy_anchor`` method calls it) on the benchmark's own features and noisy labels and
reports, per setting:

- ``kept clean``: share of correctly labelled samples whose label is selected (c >= tau);
- ``kept noisy``: the same for mislabelled samples (the noise that still gets through);
- ``true found``: share of mislabelled samples whose true class is selected (relabelling);
- ``none``: samples with no class selected; ``max c``: mean top confidence;
- ``AUROC``: noise detection by 1 - c(x, noisy label); ``epochs``: epochs phase 1 trained;
- ``kept clean / noisy at 0.05, 0.02``: the same two shares at lower thresholds (what a lower
  tau would keep from the same confidences).

Usage (features must be cached, as the benchmark leaves them):

    python benchmarks/probe_phase1_selection.py --data-root $NOISY_PML_DATA \
        --out benchmarks/results/phase1_selection

Rows are appended to ``OUT/probe.jsonl`` as they finish (a rerun skips finished rows) and
``OUT/probe.md`` is rewritten from them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from noisy_pml.bench.data import DataSpec
from noisy_pml.bench.finetune import prepare_images
from noisy_pml.bench.methods import FeatureDataset
from noisy_pml.noise import apply_noise
from noisy_pml.trainers import estimate_confidences
from noisy_pml.utils.noise_diagnostics import label_noise_scores, noise_detection_metrics

TAU = 0.1  # SmoothProxyAnchorLoss's default positive_threshold
LOWER_TAUS = (0.05, 0.02)
# (dataset, image size of the phase-1 features, why that size)
FEATURES = [
    ("cars196", 96, "finetune_v2 (96 px)"),
    ("cub", 96, "finetune_v2 (96 px)"),
    ("cars196", 160, "frozen grids (160 px)"),
    ("cub", 224, "frozen grids (224 px)"),
]
# estimate_confidences arguments, explicit so that the rows keep their meaning when defaults
# move (the names are the record keys of probe.jsonl: the first row was the library default,
# patience 5, when this probe was written; the default is patience 10 since issue #16)
VARIANTS = {
    "defaults (accuracy, patience 5)": {"patience": 5},
    "patience 10": {"patience": 10},
    "stop_on=bce": {"stop_on": "bce", "patience": 5},
}
NOISES = ["clean", "symmetric:0.3", "symmetric:0.5"]


def probe_one(data, noise: str, seed: int, variant: dict) -> dict:
    feats = data.train_views[:, 0]
    result = apply_noise(
        data.train_labels, noise, seed=seed, features=feats, num_classes=data.num_classes
    )
    noisy, mask = result.noisy_labels, result.noise_mask
    log: list[dict] = []
    t0 = time.perf_counter()
    table = estimate_confidences(
        nn.Identity(), FeatureDataset(feats, noisy), data.num_classes, seed=seed,
        fold_log=log, **variant,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    own = 1 - label_noise_scores(table, noisy)  # c(x, noisy label)
    true = table.gather(1, data.train_labels[:, None]).squeeze(1)
    return {
        "kept_clean": float((own[~mask] >= TAU).float().mean()),
        "kept_noisy": float((own[mask] >= TAU).float().mean()) if mask.any() else None,
        "true_found": float((true[mask] >= TAU).float().mean()) if mask.any() else None,
        "none": float(((table >= TAU).sum(1) == 0).float().mean()),
        "max_c": float(table.max(1).values.mean()),
        "auroc": noise_detection_metrics(1 - own, mask)["auroc"] if mask.any() else None,
        "epochs": [f["epochs"] for f in log],
        **{
            f"kept_{kind}_at_{tau}": float((own[rows] >= tau).float().mean())
            if rows.any()
            else None
            for tau in LOWER_TAUS
            for kind, rows in (("clean", ~mask), ("noisy", mask))
        },
        "seconds": round(seconds, 1),
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "/".join(map(str, v))
    return f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def write_table(rows: list[dict], path: Path) -> None:
    cols = ["kept_clean", "kept_noisy", "true_found", "none", "max_c", "auroc", "epochs"]
    cols += [f"kept_{kind}_at_{tau}" for tau in LOWER_TAUS for kind in ("clean", "noisy")]
    lines = [
        f"# Smooth PA phase 1: what tau = {TAU} selects (shares in %)",
        "",
        "Written by `benchmarks/probe_phase1_selection.py` (seed 0, one confidence module, "
        "`estimate_confidences` at the library defaults except the variant's arguments; "
        "\"defaults\" is patience 5, the default when the probe was written, now 10).",
        "",
        "| features | classes | noise | phase 1 | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for r in rows:
        cells = [_fmt(r[c]) for c in cols]
        lines.append(
            f"| {r['features']} | {r['mode']} ({r['num_classes']}) | {r['noise']} | "
            f"{r['variant']} | " + " | ".join(cells) + " |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phase1_selection"))
    ap.add_argument("--modes", nargs="+", default=["val", "test"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "probe.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {(r["features"], r["mode"], r["noise"], r["variant"]) for r in rows}
    for dataset, size, label in FEATURES:
        spec = DataSpec(dataset, image_size=size, protocol="finetune")
        for mode in args.modes:
            data = None
            for noise in NOISES:
                for name, variant in VARIANTS.items():
                    key = (f"{dataset} {label}", mode, noise, name)
                    if key in done:
                        continue
                    if data is None:  # the cached centre-crop features of this setting
                        root = str(Path(args.data_root) / dataset)
                        data = prepare_images(spec, mode, root, progress=False)
                    row = dict(zip(("features", "mode", "noise", "variant"), key, strict=True))
                    row["num_classes"] = data.num_classes
                    row.update(probe_one(data, noise, args.seed, variant))
                    rows.append(row)
                    with jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    write_table(rows, args.out / "probe.md")
                    print(json.dumps(row), flush=True)
    write_table(rows, args.out / "probe.md")


if __name__ == "__main__":
    main()
