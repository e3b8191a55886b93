"""Data preparation, one training run, and the resumable grid (JSONL, one line per run)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..noise import NoiseRecipe, apply_noise
from ..utils.feature_cache import ViewSpec, load_views
from .methods import TrainSet
from .registry import check_protocol, get_method
from .training import fit, resolve_device

__all__ = [
    "BenchData",
    "DataSpec",
    "RunSpec",
    "prepare_data",
    "run_one",
    "run_grid",
    "run_key",
    "read_results",
    "repair_results",
]

RESULTS_NAME = "results.jsonl"


@dataclass(frozen=True)
class DataSpec:
    """Which features a run trains on (everything that changes the cached features)."""

    dataset: str = "digits"
    backbone: str = "efficientnet_lite0"
    image_size: int = 224
    aug_views: int = 4
    protocol: str = "frozen"
    smoke: bool = False
    aug_image_size: int | None = None  # size of the augmented views (default: image_size)

    def __post_init__(self) -> None:
        check_protocol(self.protocol)

    def as_dict(self) -> dict[str, Any]:
        """What identifies the data of a run (part of :func:`run_key`). The finetune protocol
        draws fresh augmentations on the fly, so the cached-view settings are left out."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.protocol == "finetune":
            out.pop("aug_views")
            out.pop("aug_image_size")
        return out


@dataclass
class BenchData:
    """Training views and labels (clean), evaluation features and labels, for one mode."""

    train_views: torch.Tensor
    train_labels: torch.Tensor
    num_classes: int
    eval_feats: torch.Tensor
    eval_labels: torch.Tensor
    feature_seconds: float
    description: str = ""
    protocol: str = "frozen"


@dataclass(frozen=True)
class RunSpec:
    method: str
    noise: str = "clean"
    seed: int = 0
    mode: str = "test"  # "test": train on all training classes; "val": carved validation classes
    overrides: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    label: str | None = None  # name in tables (ablation variants); default: the method

    @property
    def name(self) -> str:
        return self.label or self.method

    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


def run_key(data: DataSpec, run: RunSpec, cfg: dict[str, Any]) -> str:
    """Hash of everything that determines a run's result."""
    payload = {
        "data": data.as_dict(),
        "method": run.method,
        "name": run.name,
        "noise": str(NoiseRecipe.parse(run.noise)),
        "seed": run.seed,
        "mode": run.mode,
        "cfg": cfg,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# data

_DATA_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]] = {}


def _resolve_root(dataset: str, data_root: str | os.PathLike | None) -> str | None:
    from ..datasets.registry import parse_dataset_name

    if parse_dataset_name(dataset)[0] in ("digits", "folder", "csv"):
        return None  # embedded, or the path is part of the name
    if data_root is None:
        env = os.environ.get("NOISY_PML_DATA")
        if not env:
            raise ValueError(
                f"--dataset {dataset} needs --data-root DIR (the folder holding {dataset}/, or "
                "the dataset folder itself) or the NOISY_PML_DATA environment variable"
            )
        data_root = env
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(
            f"--data-root {root}: no such folder (expected the folder holding {dataset}/, or "
            "the dataset folder itself; see docs/guide/benchmark.md for the layouts)"
        )
    return str(root / dataset) if (root / dataset).is_dir() else str(root)


def _digits_views(x: torch.Tensor, n_views: int, seed: int = 0) -> torch.Tensor:
    """Augmented views of 8x8 digits: a random shift of up to 1 pixel plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    imgs = x.view(-1, 8, 8)
    views = [x]
    for _ in range(n_views):
        dy, dx = torch.randint(-1, 2, (2, len(x)), generator=g)
        shifted = torch.stack(
            [
                torch.roll(im, (int(a), int(b)), dims=(0, 1))
                for im, a, b in zip(imgs, dy, dx, strict=True)
            ]
        )
        noise = 0.05 * torch.randn(shifted.shape, generator=g)
        views.append((shifted + noise).clamp(0, 1).reshape(len(x), 64))
    return torch.stack(views, dim=1)


def _smoke_subset(ds, n_classes: int) -> list[int]:
    return [i for i, y in enumerate(ds.clean_targets.tolist()) if y < n_classes]


def _load_split_features(
    spec: DataSpec,
    data_root: str | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    device: str | torch.device = "auto",
):
    """(train views (N,V,D), train labels, test features (M,D), test labels, extraction seconds)."""
    key = (spec, data_root, str(cache_dir))
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    from ..datasets import get_dataset

    if spec.dataset == "digits":
        train, test = get_dataset("digits", split="train"), get_dataset("digits", split="test")
        tr = torch.from_numpy(train.data)
        out = (
            _digits_views(tr, spec.aug_views),
            train.clean_targets.long(),
            torch.from_numpy(test.data),
            test.clean_targets.long(),
            0.0,
        )
        _DATA_CACHE[key] = out
        return out
    train = get_dataset(spec.dataset, data_root, split="train")
    test = get_dataset(spec.dataset, data_root, split="test")
    tr_rows = list(range(len(train.img_paths)))
    te_rows = list(range(len(test.img_paths)))
    if spec.smoke:
        tr_rows, te_rows = _smoke_subset(train, 5), _smoke_subset(test, 5)
    tr_paths = [train.img_paths[i] for i in tr_rows]
    te_paths = [test.img_paths[i] for i in te_rows]
    all_paths = tr_paths + te_paths
    split_all = "train+test" if not spec.smoke else "smoke"
    common = dict(
        backbone=spec.backbone, image_size=spec.image_size, dataset=spec.dataset, split=split_all
    )
    dev = resolve_device(device)
    centre, sec_c = load_views(
        [ViewSpec(**common)], all_paths, cache_dir, progress=progress, device=dev
    )
    aug_common = {**common, "split": "train" if not spec.smoke else "smoke-train"}
    aug_common["image_size"] = spec.aug_image_size or spec.image_size
    aug_specs = [ViewSpec(**aug_common, recipe="aug", view=v) for v in range(spec.aug_views)]
    if aug_specs:
        aug, sec_a = load_views(aug_specs, tr_paths, cache_dir, progress=progress, device=dev)
    else:
        aug, sec_a = centre[: len(tr_paths), :0], 0.0
    views = torch.cat([centre[: len(tr_paths)], aug], dim=1)
    out = (
        views,
        train.clean_targets[tr_rows].long(),
        centre[len(tr_paths) :, 0],
        test.clean_targets[te_rows].long(),
        sec_c + sec_a,
    )
    _DATA_CACHE[key] = out
    return out


def prepare_data(
    spec: DataSpec,
    mode: str = "test",
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_classes: int = 20,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> BenchData:
    """Features for one evaluation mode.

    With ``spec.protocol == "finetune"`` the result is a
    :class:`~noisy_pml.bench.finetune.ImageData` (images, plus frozen backbone features of the
    training images for the head's initialisation and Smooth PA's phase 1).

    ``mode="test"``: train on every training class, evaluate on the test classes.
    ``mode="val"``: carve ``val_classes`` of the training classes (a fixed, seeded choice),
    train on the others and evaluate on the carved ones: hyperparameters are chosen here,
    never on the test classes.
    """
    if mode not in ("test", "val"):
        raise ValueError(f"mode must be 'test' or 'val', got {mode!r}")
    key = (spec, mode, str(data_root), str(cache_dir), val_classes)
    if key not in _PREPARED:
        _PREPARED[key] = _prepare(spec, mode, data_root, cache_dir, val_classes, progress, device)
    return _PREPARED[key]


_PREPARED: dict[tuple, BenchData] = {}


def carve_validation(labels: torch.Tensor, val_classes: int):
    """Fixed, seeded choice of validation classes among the training classes.

    Returns ``(is_val mask, remap of the kept classes to 0..C'-1, C', description)``.
    """
    c = int(labels.max()) + 1
    n_val = min(val_classes, max(1, c // 5)) if c < 5 * val_classes else val_classes
    perm = torch.randperm(c, generator=torch.Generator().manual_seed(12345))
    is_val = torch.isin(labels, perm[:n_val])
    remap = torch.full((c,), -1, dtype=torch.long)
    keep_classes = perm[n_val:].sort().values
    remap[keep_classes] = torch.arange(len(keep_classes))
    desc = f"{n_val} validation classes carved from the training classes"
    return is_val, remap, len(keep_classes), desc


def _prepare(spec, mode, data_root, cache_dir, val_classes, progress, device):
    root = _resolve_root(spec.dataset, data_root)
    if spec.protocol == "finetune":
        from .finetune import prepare_images

        return prepare_images(spec, mode, root, cache_dir, val_classes, progress, device)
    views, labels, test_x, test_y, seconds = _load_split_features(
        spec, root, cache_dir, progress, device
    )
    c = int(labels.max()) + 1
    if mode == "test":
        return BenchData(views, labels, c, test_x, test_y, seconds, "test classes")
    is_val, remap, n_keep, desc = carve_validation(labels, val_classes)
    return BenchData(
        views[~is_val],
        remap[labels[~is_val]],
        n_keep,
        views[is_val, 0],
        labels[is_val],
        seconds,
        desc,
    )


# ---------------------------------------------------------------------------------------------
# one run


def _pick_views(views: torch.Tensor, idx: torch.Tensor, k: int, mode: str, g: torch.Generator):
    """``(x,)`` one view per sample (k=1) or ``(view_1, view_2)`` two different views (k=2)."""
    n_views = views.shape[1] if mode == "all" else 1
    if k == 1:
        v = torch.randint(n_views, (len(idx),), generator=g)
        return (views[idx, v],)
    if n_views < 2:
        return views[idx, 0], views[idx, 0]
    v1 = torch.randint(n_views, (len(idx),), generator=g)
    v2 = (v1 + torch.randint(1, n_views, (len(idx),), generator=g)) % n_views
    return views[idx, v1], views[idx, v2]


def balanced_sampler(labels: torch.Tensor, cfg: dict[str, Any], g: torch.Generator):
    """The run's :class:`~noisy_pml.datasets.ClassBalancedBatchSampler` (cfg's batch size and
    ``m_per_class``), drawing from ``g``."""
    from ..datasets.sampler import ClassBalancedBatchSampler

    return ClassBalancedBatchSampler(labels, cfg["batch_size"], cfg["m_per_class"], generator=g)


def _auroc_curve(scores: torch.Tensor, noisy: torch.Tensor, points: int = 51):
    """AUROC of ``1 - score`` detecting noisy samples, and a downsampled ROC curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if noisy.all() or not noisy.any():
        return None
    y, s = noisy.numpy().astype(int), (-scores).numpy()
    fpr, tpr, _ = roc_curve(y, s)
    grid = torch.linspace(0, 1, points)
    tpr_i = torch.from_numpy(__import__("numpy").interp(grid.numpy(), fpr, tpr))
    return {"auroc": float(roc_auc_score(y, s)), "fpr": grid.tolist(), "tpr": tpr_i.tolist()}


@torch.no_grad()
def _embed_all(method, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    method.eval()
    out = torch.cat([method.embed(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    method.train()
    return out


def build_method(data, run: RunSpec, cfg: dict[str, Any], protocol: str = "frozen"):
    """Shared by both protocols: noisy labels of ``run``, the method (head + loss + miner) built
    on ``data.train_views`` and its optional first phase (Smooth PA's confidence module).

    Returns ``(cfg, noise result, TrainSet, method, views per sample k, seconds)``;
    ``seconds`` is the wall time after the noise injection (method building + first phase).
    """
    spec = get_method(run.method)
    cfg = spec.config(run.overrides_dict(), protocol=protocol) if cfg is None else cfg
    torch.manual_seed(run.seed)
    feats0 = data.train_views[:, 0]
    noise = apply_noise(
        data.train_labels, run.noise, seed=run.seed, features=feats0, num_classes=data.num_classes
    )
    train = TrainSet(
        data.train_views, noise.noisy_labels, data.train_labels, noise.noise_mask, data.num_classes
    )
    t0 = time.perf_counter()
    method = spec.load()(train, cfg, spec)
    method.prepare(train, run.seed)
    k = 2 if getattr(method, "two_view", spec.two_view) else 1
    return cfg, noise, train, method, k, time.perf_counter() - t0


def make_record(run: RunSpec, cfg, noise, method, train, metrics, **extra) -> dict[str, Any]:
    """The JSONL record of one run (both protocols)."""
    scores = method.sample_scores(train)
    detection = None
    if scores is not None:
        detection = _auroc_curve(scores.detach().float().cpu(), noise.noise_mask.cpu())
    return {
        "method": run.name,
        "base_method": run.method,
        "noise": str(NoiseRecipe.parse(run.noise)),
        "seed": run.seed,
        "mode": run.mode,
        "cfg": cfg,
        "metrics": metrics,
        "achieved_noise_rate": float(noise.rate),
        "noisy_labels_sha1": hashlib.sha1(noise.noisy_labels.cpu().numpy().tobytes()).hexdigest(),
        **extra,
        "detection": detection,
    }


def run_one(
    data, run: RunSpec, cfg: dict[str, Any] | None = None, device: str | torch.device = "auto"
) -> dict[str, Any]:
    """Train one method on one noisy copy of the training labels; evaluate retrieval.

    ``data`` from :func:`prepare_data`: cached features (frozen protocol) or images
    (:class:`~noisy_pml.bench.finetune.ImageData`, finetune protocol); the protocol is chosen
    by ``data.protocol``. ``device``: see :func:`~noisy_pml.bench.training.resolve_device`.
    """
    from ..utils.accuracy_calculator import evaluate_retrieval

    device = resolve_device(device)
    if data.protocol == "finetune":
        from .finetune import run_one_finetune

        return run_one_finetune(data, run, cfg, device)[0]
    cfg, noise, train, method, k, build_seconds = build_method(data, run, cfg)
    t0 = time.perf_counter() - build_seconds
    method.to(device)
    g = torch.Generator().manual_seed(run.seed)
    groups = method.param_groups()
    sampler = balanced_sampler(train.labels, cfg, g) if groups and cfg["epochs"] > 0 else None

    def epoch_batches():
        for idx in sampler.index_batches():
            views = _pick_views(train.views, idx, k, cfg["train_views"], g)
            batch = (*views, train.labels[idx], idx)
            yield tuple(t.to(device) for t in batch)

    losses, _ = fit(method, groups, cfg, epoch_batches, two_view=k == 2)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    emb = _embed_all(method, data.eval_feats.to(device)).cpu()
    method.cpu()
    metrics = evaluate_retrieval(emb, data.eval_labels, distance=method.eval_distance)
    eval_seconds = time.perf_counter() - t1
    return make_record(
        run,
        cfg,
        noise,
        method,
        train,
        metrics,
        train_seconds=round(train_seconds, 3),
        eval_seconds=round(eval_seconds, 3),
        feature_seconds=round(data.feature_seconds, 1),
        loss_per_epoch=[round(v, 5) for v in losses],
    )


# ---------------------------------------------------------------------------------------------
# grid


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a results JSONL file (a truncated last line, from an interruption, is skipped)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def repair_results(path: str | os.PathLike) -> Path | None:
    """Move a torn last line of a results JSONL file aside; return where it went (or None).

    A process killed while writing leaves a last line without its newline. Appending to such a
    file would glue the next record onto the torn line and lose both, so before any append the
    torn tail is cut off (the file is truncated after its last newline) and saved next to it as
    ``<name>.torn-<unix time>`` with a warning. Every complete line (every finished run) stays.
    """
    p = Path(path)
    if not p.exists():
        return None
    data = p.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
    aside = p.with_name(f"{p.name}.torn-{int(time.time())}-{os.getpid()}")
    aside.write_bytes(data[cut:])
    with open(p, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(
        f"{p}: its last line was cut off mid-write ({len(data) - cut} bytes, no newline; an "
        f"interrupted run). Moved it to {aside.name}; that run will be repeated.",
        RuntimeWarning,
        stacklevel=2,
    )
    return aside


def _append(path: Path, record: dict[str, Any]) -> None:
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:  # another process sharing the file was killed mid-write
            repair_results(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_grid(
    data_spec: DataSpec,
    runs: Iterable[RunSpec],
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cfg_for: Any = None,
    val_classes: int = 20,
    device: str | torch.device = "auto",
) -> list[dict[str, Any]]:
    """Run every :class:`RunSpec` not finished yet; append each result to ``results.jsonl``.

    A run is identified by :func:`run_key` (data spec, method, resolved hyperparameters, noise,
    seed, mode): an interrupted grid started again skips the runs already in the file.
    ``cfg_for(run) -> dict`` may supply resolved hyperparameters (e.g. those chosen on the
    validation classes); by default the method's defaults updated by ``run.overrides``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_NAME
    repair_results(path)
    done = {r.get("key") for r in read_results(path)}
    runs = list(runs)
    todo = []
    for run in runs:
        cfg = (
            cfg_for(run)
            if cfg_for is not None
            else get_method(run.method).config(run.overrides_dict(), data_spec.protocol)
        )
        key = run_key(data_spec, run, cfg)
        if key not in done:
            todo.append((run, cfg, key))
            done.add(key)
    bar = tqdm(todo, desc=f"runs {data_spec.dataset}", disable=not progress or not todo)
    for run, cfg, key in bar:
        if key in {r.get("key") for r in read_results(path)}:
            continue  # finished meanwhile by another process sharing this results file
        bar.set_postfix_str(f"{run.name} {run.noise} s{run.seed} {run.mode}")
        data = prepare_data(
            data_spec, run.mode, data_root, cache_dir, val_classes, progress, device
        )
        rec = run_one(data, run, cfg, device)
        rec.update(
            {
                "key": key,
                "protocol": data_spec.protocol,
                "data": data_spec.as_dict(),
                "eval_set": data.description,
            }
        )
        _append(path, rec)
    return read_results(path)


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """``["lr=1e-3", "head=linear"]`` -> (("head", "linear"), ("lr", 0.001)) (JSON values)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return tuple(sorted(out.items()))
