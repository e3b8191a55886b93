"""The data layer: which data a run trains on (`DataSpec`), dataset roots, the frozen
protocol's cached features, the validation classes carved from the training classes, and the
features of a dataset's first classes (`class_subset_features`, what the example notebooks
train on)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..utils.feature_cache import ViewSpec, load_views
from .registry import check_protocol

__all__ = [
    "BenchData",
    "ClassSubsetFeatures",
    "class_subset_features",
    "split_features_cached",
    "DataSpec",
    "EMBEDDED_SHAPES",
    "carve_validation",
    "prepare_features",
    "resolve_device",
    "resolve_root",
]


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
        """What identifies the data of a run (part of `run_key`). The finetune protocol
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


_DATA_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]] = {}


def resolve_root(dataset: str, data_root: str | os.PathLike | None) -> str | None:
    from ..datasets.registry import parse_dataset_name

    if parse_dataset_name(dataset)[0] in (*EMBEDDED_SHAPES, "folder", "csv"):
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


# the embedded datasets (no download, no backbone: their pixels are the features) and their
# image shape (height, width)
EMBEDDED_SHAPES: dict[str, tuple[int, int]] = {"digits": (8, 8), "digit_pairs": (8, 16)}


def _digits_views(
    x: torch.Tensor, n_views: int, seed: int = 0, shape: tuple[int, int] = (8, 8)
) -> torch.Tensor:
    """Augmented views of flattened digit images of ``shape`` (N, H*W): a random shift of up
    to 1 pixel (wrapping around) plus pixel noise. Returns (N, 1 + n_views, H*W), the
    unchanged image first."""
    g = torch.Generator().manual_seed(seed)
    imgs = x.view(-1, *shape)
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
        views.append((shifted + noise).clamp(0, 1).reshape(len(x), -1))
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

    if spec.dataset in EMBEDDED_SHAPES:
        train = get_dataset(spec.dataset, split="train")
        test = get_dataset(spec.dataset, split="test")
        tr = torch.from_numpy(train.data)
        out = (
            _digits_views(tr, spec.aug_views, shape=EMBEDDED_SHAPES[spec.dataset]),
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
    (centre_view, all_paths), *aug = _split_specs(spec, tr_paths, te_paths, _cache_splits(spec))
    dev = resolve_device(device)
    centre, sec_c = load_views([centre_view], all_paths, cache_dir, progress=progress, device=dev)
    aug_specs = [view for view, _ in aug]
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


@dataclass
class ClassSubsetFeatures:
    """Frozen features (or an embedded dataset's pixels) of the first classes of a dataset."""

    train_views: torch.Tensor  # (N, 1 + aug_views, D): view 0 the centre crop
    train_labels: torch.Tensor  # clean labels, 0 .. num_classes - 1
    train_paths: list[str]
    test_feats: torch.Tensor  # (M, D), centre crop
    test_labels: torch.Tensor
    test_paths: list[str]
    num_classes: int
    description: str


def _cache_splits(spec: DataSpec) -> tuple[str, str]:
    """Split names of the cache files of ``spec``: (centre crops of train + test, augmented
    views of train); the smoke subset has its own."""
    return ("train+test", "train") if not spec.smoke else ("smoke", "smoke-train")


def _split_specs(
    spec: DataSpec, train_paths, test_paths, splits: tuple[str, str] = ("train+test", "train")
) -> list[tuple[ViewSpec, list[str]]]:
    """The cache files `noisy-pml bench` reads for ``spec``, as (view, image set): the centre
    crops of ``train_paths + test_paths``, then each augmented view of ``train_paths``."""
    common = dict(dataset=spec.dataset, backbone=spec.backbone)
    centre_split, aug_split = splits
    centre = ViewSpec(**common, split=centre_split, image_size=spec.image_size)
    aug = dict(common, split=aug_split, image_size=spec.aug_image_size or spec.image_size)
    views = [(ViewSpec(**aug, recipe="aug", view=v), train_paths) for v in range(spec.aug_views)]
    return [(centre, train_paths + test_paths), *views]


def split_features_cached(
    spec: DataSpec, root: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None
) -> bool:
    """True when the benchmark's cache holds every view of ``spec`` for the whole train and test
    splits (then `class_subset_features` of any classes extracts nothing)."""
    from ..datasets import get_dataset
    from ..utils.feature_cache import cache_path

    if spec.dataset in EMBEDDED_SHAPES:
        return True  # pixels: nothing to extract
    train = get_dataset(spec.dataset, root, split="train").img_paths
    test = get_dataset(spec.dataset, root, split="test").img_paths
    return all(
        cache_path(v, paths, cache_dir).exists() for v, paths in _split_specs(spec, train, test)
    )


def class_subset_features(
    spec: DataSpec,
    root: str | os.PathLike | None,
    train_classes: int | None = None,
    test_classes: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> ClassSubsetFeatures:
    """Features of the first ``train_classes`` training and ``test_classes`` test classes
    (all when None): backbone ``spec.backbone`` at ``spec.image_size`` (augmented views at
    ``spec.aug_image_size``), ``spec.aug_views`` augmented views per training image.

    Each view is read from the whole-split file of the benchmark's feature cache when one
    exists (same numbers as ``noisy-pml bench`` trains on); otherwise only the chosen classes
    are extracted and cached (a few minutes on a CPU instead of the whole split). The embedded
    datasets (``digits``, ``digit_pairs``) give their pixels, augmented by a random shift of
    up to one pixel plus pixel noise.

    Raises:
        ValueError: a class count below 1 or above the split's number of classes.
    """
    from ..datasets import get_dataset
    from ..utils.feature_cache import cache_path

    embedded = spec.dataset in EMBEDDED_SHAPES
    train = get_dataset(spec.dataset, None if embedded else root, split="train")
    test = get_dataset(spec.dataset, None if embedded else root, split="test")
    rows = []
    for name, ds, n in (
        ("train_classes", train, train_classes),
        ("test_classes", test, test_classes),
    ):
        labels = ds.clean_targets.long()
        available = int(labels.max()) + 1
        n = available if n is None else n
        if not 1 <= n <= available:
            raise ValueError(f"{name}={n}: the {spec.dataset} split has {available} classes")
        rows.append(torch.nonzero(labels < n).flatten())
    tr, te = rows
    tr_paths = [train.img_paths[i] for i in tr.tolist()]
    te_paths = [test.img_paths[i] for i in te.tolist()]
    n_train, n_test = (int(ds.clean_targets[r].max()) + 1 for ds, r in ((train, tr), (test, te)))
    if embedded:
        shape = EMBEDDED_SHAPES[spec.dataset]
        views = _digits_views(torch.from_numpy(train.data)[tr], spec.aug_views, shape=shape)
        test_feats = torch.from_numpy(test.data)[te]
        desc = f"{spec.dataset} pixels, {n_train} train / {n_test} test classes"
    else:
        full = _split_specs(spec, train.img_paths, test.img_paths)
        subset_paths = [tr_paths + te_paths, *[tr_paths] * spec.aug_views]
        full_rows = [torch.cat([tr, len(train.img_paths) + te]), *[tr] * spec.aug_views]
        feats = []
        for (view, full_paths), paths, rows_in_full in zip(
            full, subset_paths, full_rows, strict=True
        ):
            if cache_path(view, full_paths, cache_dir).exists():  # the benchmark's numbers
                whole = load_views([view], full_paths, cache_dir, progress=progress)[0]
                feats.append(whole[rows_in_full, 0])
            else:  # extract the chosen classes only, cached under their own split name
                sub = ViewSpec(**{**asdict(view), "split": f"subset-{view.split}"})
                feats.append(load_views([sub], paths, cache_dir, progress=progress)[0][:, 0])
        centre = feats[0]
        views = torch.stack([centre[: len(tr)], *feats[1:]], dim=1)
        test_feats = centre[len(tr) :]
        desc = (
            f"{spec.dataset}, {n_train} train / {n_test} test classes, frozen {spec.backbone} "
            f"features at {spec.image_size} px"
        )
    return ClassSubsetFeatures(
        views,
        train.clean_targets[tr].long(),
        tr_paths,
        test_feats,
        test.clean_targets[te].long(),
        te_paths,
        n_train,
        desc,
    )


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


def prepare_features(
    spec: DataSpec,
    mode: str,
    root: str | None,
    cache_dir: str | os.PathLike | None = None,
    val_classes: int = 20,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> BenchData:
    """The frozen protocol's data: cached backbone features of ``spec`` for one mode.

    ``mode="test"``: train on every training class, evaluate on the test classes.
    ``mode="val"``: carve ``val_classes`` of the training classes (a fixed, seeded choice),
    train on the others and evaluate on the carved ones.
    """
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


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else the CPU; ``"cpu"`` / ``"cuda"`` as named.

    Raises:
        ValueError: ``"cuda"`` asked for where no CUDA device is available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use auto or cpu")
    return dev
