"""Quick probe (not the benchmark's recipe): Smooth PA's `unselected` options on frozen CUB.

Phase 1: `estimate_confidences` (folds=1 or 5) on the cached centre-crop EfficientNet-Lite0
features of CUB's training classes; phase 2: a Linear(1280, 512) head trained with
SmoothProxyAnchorLoss (AdamW 1e-4, proxies x100, batch 120, 20 epochs, no augmented views);
R@1 on the test classes (cosine, leave-one-out). One seed. JSONL lines to --out.

    NOISY_PML_CACHE=/work/cache PYTHONPATH=. python benchmarks/probe_unselected.py --out probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging

import torch
import torch.nn.functional as F

from noisy_pml.bench.run import DataSpec, prepare_data
from noisy_pml.losses import SmoothProxyAnchorLoss
from noisy_pml.noise import apply_noise
from noisy_pml.trainers import estimate_confidences


def recall_at_1(x: torch.Tensor, y: torch.Tensor) -> float:
    z = F.normalize(x, dim=1)
    s = z @ z.T
    s.fill_diagonal_(-2)
    return float((y[s.argmax(1)] == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--noise", nargs="+", default=["clean", "symmetric:0.5"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--folds", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--mu", nargs="+", type=float, default=[0.1])
    ap.add_argument("--unselected", nargs="+", default=["negative", "ignore", "positive", "pa"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("PML").setLevel(logging.ERROR)
    d = prepare_data(DataSpec(dataset="cub", aug_views=0), data_root="/work/shared/data",
                     progress=False)
    x = d.train_views[:, 0]
    mean = x.mean(0)
    x, xt = x - mean, d.eval_feats - mean
    for noise in args.noise:
        res = apply_noise(d.train_labels, noise, seed=0, features=x, num_classes=d.num_classes)
        y = res.noisy_labels
        data = torch.utils.data.TensorDataset(x, y)
        for folds in args.folds:
            conf = estimate_confidences(torch.nn.Identity(), data, d.num_classes, folds=folds,
                                        device="cpu", dataloader_num_workers=0)
            for mu, unselected in [(m, u) for m in args.mu for u in args.unselected]:
                torch.manual_seed(0)
                head = torch.nn.Linear(x.shape[1], 512)
                loss_fn = SmoothProxyAnchorLoss(d.num_classes, 512, unselected=(
                    "negative" if unselected == "pa" else unselected), smoothing_position=mu,
                    collect_stats=True)
                opt = torch.optim.AdamW([{"params": head.parameters(), "lr": 1e-4},
                                         {"params": loss_fn.parameters(), "lr": 1e-2}],
                                        weight_decay=1e-4)
                g = torch.Generator().manual_seed(0)
                share = []
                for _ in range(args.epochs):
                    for idx in torch.randperm(len(x), generator=g).split(120):
                        c = None if unselected == "pa" else conf[idx]
                        loss = loss_fn(head(x[idx]), y[idx], confidences=c)
                        opt.zero_grad()
                        loss.backward()
                        torch.nn.utils.clip_grad_value_(head.parameters(), 10)
                        opt.step()
                        share.append(loss_fn.unselected_share)
                with torch.no_grad():
                    r1 = recall_at_1(head(xt), d.eval_labels)
                row = {"noise": noise, "folds": folds, "unselected": unselected, "mu": mu,
                       "r_at_1": r1, "unselected_share": sum(share) / len(share)}
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
