"""Command line: ``python -m noisy_pml.diagnose --dataset digits --out DIR``.

Writes ``suspects.csv`` (the ranking: path, given label, suggested label, score), ``suspects.png``
(a contact sheet of the top suspects) and ``summary.json``; with injected noise (``--noise``)
also the precision of the top-k against the known noise mask.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ..trainers.two_phase import DETECTION_FOLDS
from .contact_sheet import contact_sheet
from .label_issues import find_label_issues, write_csv

PREFIXES = ("folder", "csv")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="noisy-pml diagnose",
        description="Rank a labelled dataset's samples by how likely their label is wrong "
                    "(Smooth Proxy-Anchor's out-of-fold confidences on frozen features).",
    )
    ap.add_argument("--dataset", default="digits",
                    help="digits | cub | cars196 | folder:PATH | csv:FILE (default: digits)")
    ap.add_argument("--data-root", default=None,
                    help="folder of CUB / Cars196 (default: $NOISY_PML_DATA/<name>)")
    ap.add_argument("--split", default=None, help="split to diagnose (named datasets: train)")
    ap.add_argument("--noise", default=None,
                    help="inject seeded label noise first, e.g. symmetric:0.2 (to try the tool)")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--features", type=Path, default=None,
                    help="(N, D) features in dataset order, .pt (a tensor) or .npy, instead of "
                         "computing them")
    ap.add_argument("--top", type=int, default=None, help="rows in suspects.csv (default: all)")
    ap.add_argument("--sheet", type=int, default=36, help="suspects in the contact sheet")
    ap.add_argument("--folds", type=int, default=DETECTION_FOLDS, help="K of the cross-fitting")
    ap.add_argument("--epochs", type=int, default=30, help="max epochs per confidence module")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: $NOISY_PML_CACHE)")
    ap.add_argument("--device", default=None)
    return ap


def load_dataset(name: str, data_root=None, split=None, noise=None, noise_seed: int = 0):
    """The dataset through `noisy_pml.datasets.get_dataset`; clear error for unknown names."""
    from ..datasets import get_dataset

    prefixed = name.split(":", 1)[0].lower() in PREFIXES and ":" in name
    kwargs = {}
    if not prefixed or split is not None:
        kwargs["split"] = split or "train"
    if noise is not None:
        kwargs.update(noise=noise, noise_seed=noise_seed)
    try:
        return get_dataset(name, data_root, **kwargs)
    except ValueError as e:
        if prefixed and "must be one of" in str(e):
            raise ValueError(
                f"--dataset {name!r}: this noisy_pml's get_dataset does not read "
                f"{name.split(':', 1)[0]}: datasets yet ({e})"
            ) from e
        raise


def class_names(dataset) -> list[str] | None:
    """``dataset.class_names`` / ``classes``, else each class's image folder (CUB, Cars196,
    folder datasets: the most common folder among the class's samples, by clean label when
    known); None when that does not give one distinct name per class."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if names is not None:
        return list(names)
    paths = getattr(dataset, "img_paths", None)
    labels = getattr(dataset, "clean_targets", getattr(dataset, "targets", None))
    if not paths or labels is None or len(paths) != len(labels):
        return None
    from collections import Counter

    folders: dict[int, Counter] = {}
    for p, y in zip(paths, torch.as_tensor(labels).tolist(), strict=True):
        folders.setdefault(int(y), Counter())[Path(p).parent.name] += 1
    num = int(getattr(dataset, "num_classes", max(folders) + 1))
    out = [folders[c].most_common(1)[0][0] if c in folders else str(c) for c in range(num)]
    return out if len(set(out)) == num and "" not in out else None


def _load_features(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path))
    x = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"--features {path}: expected a saved tensor (N, D), got {type(x)}")
    return x


def precision_at_k(ranked_indices, noise_mask: torch.Tensor, ks) -> dict[str, float]:
    out = {}
    for k in ks:
        k = min(int(k), len(ranked_indices))
        if k > 0:
            out[f"precision@{k}"] = float(noise_mask[list(ranked_indices[:k])].float().mean())
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the diagnosis; returns the process exit code (0 on success, 2 on bad input)."""
    args = build_parser().parse_args(argv)
    logging.getLogger("PML").setLevel(logging.ERROR)
    try:
        dataset = load_dataset(args.dataset, args.data_root, args.split, args.noise,
                               args.noise_seed)
        print(f"diagnosing {dataset!r}", file=sys.stderr)
        features = _load_features(args.features) if args.features is not None else None
        issues = find_label_issues(
            dataset, features, folds=args.folds, seed=args.seed, progress=True, epochs=args.epochs,
            backbone=args.backbone, image_size=args.image_size, cache_dir=args.cache_dir,
            device=args.device,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"noisy-pml diagnose: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    names = class_names(dataset)
    write_csv(issues[: args.top] if args.top else issues, args.out / "suspects.csv", names)
    mask = getattr(dataset, "noise_mask", None)
    known = mask is not None and bool(torch.as_tensor(mask).any())
    contact_sheet(dataset, issues, args.out / "suspects.png", num=args.sheet, class_names=names,
                  noise_mask=torch.as_tensor(mask) if known else None)
    summary = {"dataset": args.dataset, "num_samples": len(issues), "folds": args.folds,
               "noise": args.noise, "top": [i.index for i in issues[:10]]}
    if known:
        mask = torch.as_tensor(mask).bool()
        n_noisy = int(mask.sum())
        summary["num_mislabelled"] = n_noisy
        summary.update(precision_at_k([i.index for i in issues], mask,
                                      (10, 50, 100, n_noisy)))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "top"}))
    print(f"wrote {args.out / 'suspects.csv'} and {args.out / 'suspects.png'}", file=sys.stderr)
    return 0
