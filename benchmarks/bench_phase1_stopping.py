"""Smooth Proxy-Anchor phase 1: how early stopping and batch size shape the confidences.

For each setting of `noisy_pml.trainers.estimate_confidences` (given in full on the command
line, so every row names its arguments), on the frozen-feature validation split of a dataset
(training classes minus the 20 carved validation classes: no test class is touched) with
injected noise, records the noise-detection AUROC of c(x, noisy label), the share of *clean*
samples whose own-label confidence reaches the default smoothing position mu = 0.1 (selected
as positives), and the epochs each fold trained. One JSON line per (setting, noise, seed,
folds) is appended to ``--out`` (existing lines with the same fields are skipped: resumable).

    python benchmarks/bench_phase1_stopping.py --dataset cars196 --data-root $NOISY_PML_DATA \
        --noise symmetric:0.2 symmetric:0.5 --seeds 0 1 --folds 5 \
        --setting '{"batch_size": 64, "stop_on": "accuracy", "patience": 5}' \
        --out benchmarks/results/spa_v3_select/phase1_stopping.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from noisy_pml.bench.cli import default_data_spec
from noisy_pml.bench.data import prepare_features, resolve_root
from noisy_pml.bench.methods import FeatureDataset, _quiet_pml_trainers
from noisy_pml.noise import apply_noise
from noisy_pml.trainers import estimate_confidences

REQUIRED = ("batch_size", "stop_on", "patience")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cars196", choices=("cub", "cars196"))
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--noise", nargs="+", default=["symmetric:0.2", "symmetric:0.5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--folds", nargs="+", type=int, default=[5])
    ap.add_argument("--setting", required=True,
                    help=f"JSON keyword arguments of estimate_confidences; must give {REQUIRED}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    setting = json.loads(args.setting)
    missing = [k for k in REQUIRED if k not in setting]
    if missing:
        raise SystemExit(f"--setting must name {missing} explicitly (defaults change over time)")
    torch.set_num_threads(1)
    spec = default_data_spec(args.dataset)
    data = prepare_features(spec, "val", resolve_root(args.dataset, args.data_root),
                            progress=False)  # fmt: skip
    features = data.train_views[:, 0]
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add(json.dumps([r["setting"], r["noise"], r["seed"], r["folds"]], sort_keys=True))
    for noise in args.noise:
        for seed in args.seeds:
            result = apply_noise(data.train_labels, noise, seed=seed, features=features,
                                 num_classes=data.num_classes)  # fmt: skip
            for folds in args.folds:
                tag = json.dumps([setting, noise, seed, folds], sort_keys=True)
                if tag in done:
                    continue
                log: list[dict] = []
                start = time.perf_counter()
                with _quiet_pml_trainers():
                    table = estimate_confidences(
                        torch.nn.Identity(), FeatureDataset(features, result.noisy_labels),
                        data.num_classes, folds=folds, seed=seed, fold_log=log, **setting,
                    )  # fmt: skip
                own = table.gather(1, result.noisy_labels[:, None]).squeeze(1)
                mask = result.noise_mask
                auroc = (roc_auc_score(mask.numpy(), -own.numpy())
                         if 0 < int(mask.sum()) < len(mask) else None)  # fmt: skip
                row = {
                    "dataset": args.dataset, "split": "val", "setting": setting, "noise": noise,
                    "seed": seed, "folds": folds, "auroc": auroc,
                    "clean_selected_at_mu_0.1": float((own[~mask] >= 0.1).float().mean()),
                    "epochs": [f["epochs"] for f in log],
                    "seconds": round(time.perf_counter() - start, 1),
                }  # fmt: skip
                print(json.dumps(row), flush=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
