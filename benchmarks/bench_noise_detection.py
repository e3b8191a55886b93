"""Finding mislabelled samples on frozen features: Smooth PA's and PRISM's scores vs cleanlab.

For each (dataset, noise, seed) the training split's labels are corrupted with the benchmark's
seeded noise (``noisy_pml.noise.apply_noise``, as ``noisy-pml bench`` does), and every scorer
ranks the samples by how likely their given label is wrong, from the same frozen features
(centred; raw pixels for digits, EfficientNet-Lite0 for CUB / Cars196):

- ``spa_oof_k{K}``: Smooth PA's confidence module with K-fold cross-fitting
  (``noisy_pml.trainers.estimate_confidences(folds=K)``), score $1 - c(x, \\tilde y_x)$;
- ``spa_single``: the single-model path (``folds=1``), same score;
- ``prism``: PRISM's clean probability (softmax over class centres of the features, read at
  the given label; ``PRISMMiner`` with its bank filled by every sample), score $1 - p$;
- ``cleanlab``: confident learning, the field's reference, ``cleanlab.filter.find_label_issues``
  on out-of-fold predicted probabilities of a logistic regression (5-fold, stratified), ranking
  by ``cleanlab.rank.get_label_quality_scores`` (self-confidence), score $1 - q$;
- ``cleanlab_spa``: ``find_label_issues`` on Smooth PA's out-of-fold confidences (rows
  normalised), i.e. confident learning's flagged-set rule on our probabilities.

Metrics against the known noise mask: AUROC and average precision of the score; precision
(= recall) of the top-n flagged with n the true number of mislabelled samples
(``p_at_rate``); and precision / recall / size of each scorer's own flagged set
(cleanlab: its issues; Smooth PA: $c(x, \\tilde y_x) < \\mu = 0.1$, the samples the loss leaves
unselected; PRISM: labelled centre not the nearest).

One JSONL line per (dataset, noise, seed, scorer) is appended as soon as it is measured (a rerun
skips what is there), then the markdown table is rewritten::

    PYTHONPATH=. python benchmarks/bench_noise_detection.py --dataset digits \\
        --noise symmetric:0.2 symmetric:0.5 small_cluster:0.25 --seeds 0 1 2
    NOISY_PML_CACHE=/work/cache PYTHONPATH=. python benchmarks/bench_noise_detection.py \\
        --dataset cub --data-root $NOISY_PML_DATA --noise symmetric:0.2 symmetric:0.5 \\
        small_cluster:0.25 --seeds 0
    # choice of K (validation classes of CUB; digits train classes)
    PYTHONPATH=. python benchmarks/bench_noise_detection.py --dataset cub --mode val \\
        --folds 2 3 5 10 --scorers spa_single spa_oof --out benchmarks/results/noise_detection/k
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from noisy_pml.noise import apply_noise
from noisy_pml.trainers import DETECTION_FOLDS, DETECTION_PATIENCE, estimate_confidences
from noisy_pml.utils.noise_diagnostics import label_noise_scores, noise_detection_metrics

SCORERS = ("spa_oof", "spa_single", "prism", "cleanlab", "cleanlab_spa")
OUT = Path(__file__).parent / "results" / "noise_detection"
SPA_MU = 0.1  # SmoothProxyAnchorLoss's default positive threshold


def load_features(
    dataset: str, mode: str, data_root: str | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Centred frozen features (N, D), clean labels (N,), number of classes of the train split.

    ``mode="test"``: every training class; ``mode="val"``: the benchmark's carved validation
    classes only (hyperparameters such as K are chosen there).
    """
    from noisy_pml.bench.cli import default_data_spec
    from noisy_pml.bench.run import prepare_data

    # the benchmark's own image size (Cars196: 160 px), so its feature cache serves both
    data = prepare_data(default_data_spec(dataset, aug_views=0), mode="val" if mode == "val"
                        else "test", data_root=data_root, progress=True)
    if mode == "val":
        x, y = data.eval_feats, data.eval_labels
        y = torch.unique(y, return_inverse=True)[1]
    else:
        x, y = data.train_views[:, 0], data.train_labels
    x = x.float()
    return x - x.mean(0), y.long(), int(y.max()) + 1


def cleanlab_pred_probs(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold predicted probabilities of a logistic regression (cleanlab's usual recipe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    num_classes = int(y.max()) + 1
    probs = np.zeros((len(y), num_classes))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit, held in cv.split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
        clf.fit(x[fit], y[fit])
        probs[np.ix_(held, clf.classes_)] = clf.predict_proba(x[held])  # all C columns
    return probs


def prism_scores(x: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """PRISM's clean probability of every sample with the bank holding every sample."""
    from noisy_pml.miners import PRISMMiner

    miner = PRISMMiner(len(x), num_classes)
    idx = torch.arange(len(x))
    for _ in range(2):  # pass 1 fills the bank, pass 2 scores against the full bank
        for b in idx.split(1024):
            miner(x[b], labels[b], indices=b)
    return miner.scores.clone(), ~miner.in_top_k.clone()


def flagged_metrics(flagged: torch.Tensor, mask: torch.Tensor) -> dict:
    flagged, mask = torch.as_tensor(flagged).bool(), torch.as_tensor(mask).bool()
    tp = int((flagged & mask).sum())
    return {"flagged": int(flagged.sum()),
            "flag_precision": tp / max(1, int(flagged.sum())),
            "flag_recall": tp / max(1, int(mask.sum()))}


def score_metrics(score: torch.Tensor, mask: torch.Tensor) -> dict:
    out = noise_detection_metrics(score, mask)
    n = int(mask.sum())
    top = torch.topk(torch.as_tensor(score).double(), n).indices
    out["p_at_rate"] = float(mask[top].float().mean())
    order = torch.argsort(torch.as_tensor(score).double(), descending=True, stable=True)
    for k in (10, 50, 100):
        out[f"p_at_{k}"] = float(mask[order[:k]].float().mean())
    return out


def run_one(x, clean, num_classes, noise, seed, scorers, folds_list, epochs, oof_cache):
    """Yield (scorer, metrics) for one (noise, seed)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    res = apply_noise(clean, noise, seed=seed, features=x, num_classes=num_classes)
    noisy, mask = res.noisy_labels, res.noise_mask
    data = torch.utils.data.TensorDataset(x, noisy)
    common = {"epochs": epochs, "seed": seed, "device": "cpu", "dataloader_num_workers": 0,
              "patience": DETECTION_PATIENCE}
    for name in scorers:
        variants = [(f"spa_oof_k{k}", k) for k in folds_list] if name == "spa_oof" \
            else [(name, None)]
        for label, k in variants:
            t = time.perf_counter()
            extra: dict = {}
            if label.startswith("spa_"):
                kk = 1 if label == "spa_single" else k
                log: list = []
                conf = estimate_confidences(torch.nn.Identity(), data, num_classes, folds=kk,
                                            fold_log=log, **common)
                oof_cache[kk] = conf
                score = label_noise_scores(conf, noisy)
                extra = flagged_metrics(score > 1 - SPA_MU, mask)
                extra["epochs"] = [f["epochs"] for f in log]
            elif label == "prism":
                p, not_top = prism_scores(x, noisy, num_classes)
                score = 1 - p
                extra = flagged_metrics(not_top, mask)
            elif label == "cleanlab":
                probs = cleanlab_pred_probs(x.numpy(), noisy.numpy(), seed)
                score = torch.from_numpy(1 - get_label_quality_scores(noisy.numpy(), probs))
                extra = flagged_metrics(torch.from_numpy(find_label_issues(noisy.numpy(), probs)),
                                        mask)
            elif label == "cleanlab_spa":
                kk = folds_list[0] if folds_list else DETECTION_FOLDS
                if kk not in oof_cache:
                    oof_cache[kk] = estimate_confidences(torch.nn.Identity(), data, num_classes,
                                                         folds=kk, **common)
                conf = oof_cache[kk].double()
                probs = (conf / conf.sum(1, keepdim=True)).numpy()
                score = label_noise_scores(oof_cache[kk], noisy)
                extra = flagged_metrics(torch.from_numpy(find_label_issues(noisy.numpy(), probs)),
                                        mask)
                label = f"cleanlab_spa_k{kk}"
            else:
                raise ValueError(f"unknown scorer {name!r}; expected one of {SCORERS}")
            out = {**score_metrics(score, mask), **extra,
                   "seconds": round(time.perf_counter() - t, 1)}
            yield label, out


def write_table(rows: list[dict], path: Path) -> None:
    """Mean (± std over seeds) of every metric, one row per (dataset, noise, scorer)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["noise"], r["scorer"]), []).append(r)
    cols = ["auroc", "average_precision", "p_at_rate", "flag_precision", "flag_recall"]
    lines = [
        "# Noise detection on frozen features: Smooth PA and PRISM vs cleanlab",
        "",
        "Written by `benchmarks/bench_noise_detection.py` from `results.jsonl` (mean ± std over "
        "seeds; n = seeds). `p_at_rate`: precision (= recall) of the top-n scores, n = true "
        "number of mislabelled samples. `flag_*`: the scorer's own flagged set (cleanlab: "
        "`find_label_issues`; Smooth PA: $c(x,\\tilde y) < 0.1$; PRISM: labelled centre not "
        "nearest).",
        "",
        "| dataset | noise | scorer | n | AUROC | AP | P=R at rate | flag P | flag R | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ds, noise, scorer), rs in sorted(groups.items()):
        cells = []
        for c in cols:
            v = np.array([r[c] for r in rs if c in r], dtype=float)
            cells.append("" if not len(v) else f"{100 * v.mean():.1f}" +
                         (f" ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else ""))
        sec = np.mean([r["seconds"] for r in rs])
        lines.append(f"| {ds} | {noise} | {scorer} | {len(rs)} | " + " | ".join(cells) +
                     f" | {sec:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", nargs="+", default=["digits"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--mode", choices=("test", "val"), default="test",
                    help="val: the benchmark's carved validation classes (to choose K)")
    ap.add_argument("--noise", nargs="+",
                    default=["symmetric:0.2", "symmetric:0.5", "small_cluster:0.25"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    ap.add_argument("--folds", nargs="+", type=int, default=[DETECTION_FOLDS],
                    help="K values of spa_oof (the first also feeds cleanlab_spa)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("PML").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [json.loads(s) for s in results.read_text().splitlines()] if results.exists() else []
    done = {(r["dataset"], r["noise"], r["seed"], r["scorer"]) for r in rows}
    for ds in args.dataset:
        x, clean, c = load_features(ds, args.mode, args.data_root)
        tag = ds if args.mode == "test" else f"{ds}-val"
        for noise in args.noise:
            for seed in args.seeds:
                want = [s for s in args.scorers
                        if not all((tag, noise, seed, lab) in done for lab in _labels(s, args))]
                if not want:
                    continue
                for label, m in run_one(x, clean, c, noise, seed, want, args.folds,
                                        args.epochs, {}):
                    if (tag, noise, seed, label) in done:
                        continue
                    row = {"dataset": tag, "noise": noise, "seed": seed, "scorer": label,
                           "num_samples": len(x), "num_classes": c, **m}
                    rows.append(row)
                    done.add((tag, noise, seed, label))
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    write_table(rows, args.out / "results.md")
                    print(json.dumps(row), flush=True)
    return 0


def _labels(scorer: str, args) -> list[str]:
    if scorer == "spa_oof":
        return [f"spa_oof_k{k}" for k in args.folds]
    if scorer == "cleanlab_spa":
        return [f"cleanlab_spa_k{args.folds[0]}"]
    return [scorer]


if __name__ == "__main__":
    raise SystemExit(main())
