"""Backbone feature extraction with an atomic, content-keyed on-disk cache.

The frozen protocol extracts backbone features once and trains only an embedding head on them.
Each *view* of a split is cached in its own file:

- view recipe ``center``: Resize(S * 256 / 224) + CenterCrop(S), one deterministic view;
- view recipe ``aug``: RandomResizedCrop(S, scale=(0.2, 1)) + horizontal flip, view ``v`` of
  image ``i`` drawn from a generator seeded by ``(seed, v, i)``, so view files are reproducible
  and more views can be added later without recomputing the first ones.

The cache key hashes everything that changes the numbers: dataset, split, backbone, image size,
view recipe, view index, augmentation seed, the set of image files and a format version. Files are
written to a temporary name and renamed (``os.replace``), so an interrupted extraction never
leaves a truncated file behind. Rows are stored with the image paths they came from, and
`load_views` aligns them to the caller's dataset order by path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models.backbones import BACKBONES, build_backbone

__all__ = [
    "CACHE_VERSION",
    "ViewSpec",
    "default_cache_dir",
    "cache_key",
    "cache_path",
    "extract_view",
    "load_views",
]

CACHE_VERSION = 1
VIEW_RECIPES = ("center", "aug")


@dataclass(frozen=True)
class ViewSpec:
    """One cached view of a split: what goes into the cache key besides the image set."""

    dataset: str
    split: str
    backbone: str
    image_size: int
    recipe: str = "center"
    view: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recipe not in VIEW_RECIPES:
            raise ValueError(f"recipe must be one of {VIEW_RECIPES}, got {self.recipe!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected {sorted(BACKBONES)}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")


def default_cache_dir() -> Path:
    """``$NOISY_PML_CACHE`` if set, else ``~/.cache/noisy_pml``."""
    env = os.environ.get("NOISY_PML_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "noisy_pml"


def _rel_path(path: str) -> str:
    """Class folder + file name: unique within CUB and Cars196, independent of the data root."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def cache_key(spec: ViewSpec, img_paths: Sequence[str]) -> str:
    """Hex digest over the view spec, the set of image files and the cache format version."""
    rel = sorted(_rel_path(p) for p in img_paths)
    images = hashlib.sha1("\n".join(rel).encode()).hexdigest()
    payload = {"version": CACHE_VERSION, "images": images, **asdict(spec)}
    if spec.recipe == "center":  # one deterministic view: index and seed do not change it
        payload.pop("view")
        payload.pop("seed")
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(
    spec: ViewSpec, img_paths: Sequence[str], cache_dir: str | Path | None = None
) -> Path:
    """Where the features of ``spec`` over ``img_paths`` live."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = "center" if spec.recipe == "center" else f"aug{spec.view}"
    key = cache_key(spec, img_paths)
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.dataset).strip("_")[-40:]  # folder:/a/b
    name = f"{dataset}-{spec.split}-{spec.backbone}-{spec.image_size}-{tag}-{key}.pt"
    return root / name


def _transform(spec: ViewSpec):
    from torchvision import transforms as T

    bspec = BACKBONES[spec.backbone]
    norm = T.Normalize(bspec.mean, bspec.std)
    size = spec.image_size
    if spec.recipe == "center":
        return T.Compose(
            [T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm]
        )
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            norm,
        ]
    )


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], spec: ViewSpec) -> None:
        self.paths = list(paths)
        self.spec = spec
        self.transform = _transform(spec)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        if self.spec.recipe == "aug":  # reproducible per (seed, view, image)
            torch.manual_seed(hash((self.spec.seed, self.spec.view, i)) % (2**31))
        try:
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read image {self.paths[i]}: {e}") from e


def extract_view(
    spec: ViewSpec,
    img_paths: Sequence[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 1,
    progress: bool = True,
    model: torch.nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Compute (or find cached) features of one view of ``img_paths``; return the cache file.

    The backbone runs on ``device`` in channels_last memory format. The file holds
    ``features`` (float16, N x D), ``sha1`` (their checksum), ``paths``
    (relative, in extraction order), ``spec`` and ``seconds`` (wall time of the extraction).
    """
    path = cache_path(spec, img_paths, cache_dir)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = [p for p in img_paths[:5] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {missing} (check --data-root)")
    if model is None:
        model, _ = build_backbone(spec.backbone, spec.image_size)
    loader = torch.utils.data.DataLoader(
        _ImageFiles(img_paths, spec), batch_size=batch_size, num_workers=num_workers
    )
    from tqdm.auto import tqdm

    start = time.perf_counter()
    chunks = []
    view = spec.view if spec.recipe == "aug" else ""
    desc = f"features {spec.dataset}/{spec.split} {spec.recipe}{view}"
    model.to(device, memory_format=torch.channels_last)  # NHWC: faster convolutions
    with torch.inference_mode():
        for x in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            chunks.append(model(x).to(torch.float16).cpu())
    seconds = time.perf_counter() - start
    features = torch.cat(chunks)
    payload = {
        "features": features,
        "sha1": _checksum(features),
        "paths": [_rel_path(p) for p in img_paths],
        "spec": asdict(spec),
        "seconds": seconds,
    }
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files of ``path`` left by killed processes (their pid is gone), with a
    warning. They are never read (only the final name is), so this only frees the disk."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: another process is writing this file now
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, owned by another user
            continue
        tmp.unlink(missing_ok=True)
        warnings.warn(
            f"removed {tmp.name}, a partial feature cache file left by process {pid}, which "
            "was interrupted while writing it (the cache never reads such files)",
            RuntimeWarning,
            stacklevel=3,
        )


def _checksum(features: torch.Tensor) -> str:
    """SHA-1 of the feature bytes (stored in the cache file, checked on every load)."""
    return hashlib.sha1(features.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _load_checked(path: Path, order: Sequence[str]) -> dict | None:
    """The cache file's contents, or None after moving a corrupt file aside with a warning.

    Corrupt means: it does not load (truncated, not a torch file), misses a field, its
    feature rows and paths disagree, a requested image is missing from it, or its stored
    checksum does not match the features (files written before checksums were stored are
    accepted when everything else holds).
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        feats, paths = blob["features"], blob["paths"]
        problem = None
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or len(feats) != len(paths):
            problem = "features and paths disagree"
        elif not set(order) <= set(paths):
            problem = "it lacks some of the requested images"
        elif "sha1" in blob and blob["sha1"] != _checksum(feats):
            problem = "checksum mismatch"
        float(blob["seconds"])
    except Exception as exc:  # any load failure means the file cannot be trusted
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return blob
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process already moved it
        pass
    warnings.warn(
        f"feature cache {path} is corrupt ({problem}); moved it to {aside.name} and "
        "extracting these features again",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def load_views(
    specs: Sequence[ViewSpec],
    img_paths: Sequence[str],
    cache_dir: str | Path | None = None,
    **extract_kwargs,
) -> tuple[torch.Tensor, float]:
    """Features ``(N, V, D)`` (float32) of ``len(specs)`` views, rows in ``img_paths`` order.

    Views not cached yet are extracted first; a cached file that is corrupt (does not load,
    truncated, checksum mismatch) is moved aside with a warning and extracted again. Also
    returns the summed extraction wall time recorded in the cache files (the cost paid once,
    whenever it was paid).
    """
    order = [_rel_path(p) for p in img_paths]
    if len(set(order)) != len(order):
        dup = next(p for p in order if order.count(p) > 1)
        raise ValueError(
            f"two images share the cache name {dup!r} (class folder / file name); the feature "
            "cache tells images apart by it: rename one of them"
        )
    out, seconds = [], 0.0
    model = None
    for spec in specs:
        path = cache_path(spec, img_paths, cache_dir)
        if not path.exists():
            if model is None:
                model, _ = build_backbone(spec.backbone, spec.image_size)
            extract_view(spec, img_paths, cache_dir, model=model, **extract_kwargs)
        blob = _load_checked(path, order)
        if blob is None:  # corrupt or truncated: moved aside, extract again
            if model is None:
                model, _ = build_backbone(spec.backbone, spec.image_size)
            extract_view(spec, img_paths, cache_dir, model=model, **extract_kwargs)
            blob = _load_checked(path, order)
            if blob is None:
                raise RuntimeError(f"feature cache {path} is unreadable right after writing it")
        rows = {p: i for i, p in enumerate(blob["paths"])}
        idx = torch.tensor([rows[p] for p in order])
        out.append(blob["features"][idx].float())
        seconds += float(blob["seconds"])
    return torch.stack(out, dim=1), seconds
