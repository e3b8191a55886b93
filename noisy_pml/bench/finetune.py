"""The ``finetune`` protocol: backbone + the method's head trained end to end on images.

Same methods, losses, miners, heads, noisy labels, batches and metrics as the frozen protocol
(`noisy_pml.bench.frozen`); what changes is that every batch is loaded as images and passed
through the backbone, whose weights train too:

- the model is ``method.embed(backbone(image))`` (backbone from `build_backbone`);
- before training, the *frozen* backbone embeds the training images once (evaluation transform):
  those features initialise the head (its mean and PCA start) and are what Smooth
  Proxy-Anchor's phase 1 trains its confidence module on, exactly as in the frozen protocol;
- training views: `weak_transform` (RandomResizedCrop +
  flip); two-view methods get a weak and a `strong_transform` view of each image (colour
  jitter, grayscale, blur on top; ``second_view="strong"``, the default) or two independent
  weak views (``second_view="weak"``) through `TwoViewDataset`, drawn afresh every step;
  evaluation uses
  `eval_transform` (Resize(S * 256 / 224) + CenterCrop(S));
- BatchNorm layers stay in eval mode (``freeze_bn``, default on): their running statistics do
  not move while every weight, BatchNorm affine parameters included, trains;
- AdamW with the method's parameter groups (head lr, proxies at ``lr * loss_lr_mult``) plus the
  backbone at ``backbone_lr`` (default 1e-4);
- device: ``--device`` (auto: CUDA when available, else CPU); the backbone runs in
  channels_last memory format.

Designed for GPU users; on a CPU it runs at reduced resolution (see benchmarks/results/README).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.backbones import build_backbone
from . import distributed
from .data import carve_validation
from .training import RunSpec, balanced_sampler, build_method, fit, make_record, resolve_device

__all__ = ["ImageSplit", "ImageData", "prepare_images", "run_one_finetune", "freeze_batchnorm"]


@dataclass
class ImageSplit:
    """Rows ``rows`` of a noisy_pml dataset (read through its ``load_sample``)."""

    dataset: Any
    rows: list[int]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class ImageData:
    """Images of one evaluation mode, for the finetune protocol.

    ``train_views`` (N, 1, D): frozen backbone features of the training images (centre crop),
    used to initialise the head, for Smooth PA's phase 1 and for small-cluster noise.
    """

    train_images: ImageSplit
    train_views: torch.Tensor
    train_labels: torch.Tensor
    num_classes: int
    eval_images: ImageSplit
    eval_labels: torch.Tensor
    feature_seconds: float
    description: str
    backbone: str
    image_size: int
    protocol: str = "finetune"


def _as_rgb(sample: Any) -> Any:
    """PIL RGB image from a dataset sample (Digits gives (1, 8, 8) tensors in [0, 1])."""
    if isinstance(sample, torch.Tensor):
        from torchvision.transforms.functional import to_pil_image

        return to_pil_image(sample.clamp(0, 1)).convert("RGB")
    return sample.convert("RGB")


class _RGB:
    """Picklable ``transform(_as_rgb(sample))``."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, sample: Any) -> torch.Tensor:
        return self.transform(_as_rgb(sample))


class _OneView(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.dataset.load_sample(i))


SECOND_VIEWS = ("strong", "weak")


def _transforms(backbone: str, image_size: int) -> tuple[Callable, Callable]:
    """(weak training transform, evaluation transform) with the backbone's normalisation."""
    from ..datasets.transforms import eval_transform, weak_transform
    from ..models.backbones import BACKBONES

    b = BACKBONES[backbone]
    weak = weak_transform(image_size, mean=b.mean, std=b.std)
    ev = eval_transform(image_size, round(image_size * 256 / 224), mean=b.mean, std=b.std)
    return _RGB(weak), _RGB(ev)


def _second_view_transform(backbone: str, image_size: int, kind: str, weak: Callable) -> Callable:
    """The second view of two-view methods: ``"strong"`` (`strong_transform`) or ``"weak"``
    (``weak``, the first view's transform)."""
    from ..datasets.transforms import strong_transform
    from ..models.backbones import BACKBONES

    if kind not in SECOND_VIEWS:
        raise ValueError(f"second_view must be one of {SECOND_VIEWS}, got {kind!r}")
    if kind == "weak":
        return weak
    b = BACKBONES[backbone]
    return _RGB(strong_transform(image_size, mean=b.mean, std=b.std))


def _workers(dataset: Any) -> int:
    if isinstance(dataset.img_paths[0], str) and dataset.img_paths[0].startswith("sklearn"):
        return 0  # in-memory digits: workers cost more than they save
    return min(4, max(0, (os.cpu_count() or 1) - 1))


@torch.no_grad()
def _embed_images(
    f: Callable[[torch.Tensor], torch.Tensor],
    split: ImageSplit,
    transform: Callable,
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(_OneView(split.dataset, transform), split.rows),
        batch_size=batch_size,
        num_workers=_workers(split.dataset),
    )
    nhwc = torch.channels_last
    return torch.cat([f(x.to(device).contiguous(memory_format=nhwc)).float().cpu() for x in loader])


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics stay fixed)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return module


def prepare_images(
    spec: Any,
    mode: str,
    root: str | None,
    cache_dir: Any = None,
    val_classes: int = 20,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> ImageData:
    """Images of ``spec.dataset`` for ``mode`` ("test" or "val", as `prepare_data`) plus
    the frozen backbone's features of the training images.

    On CUB / Cars196 those features come from (or go into) the frozen protocol's feature cache
    (same centre-crop recipe), so both protocols see the same noisy labels for a seed.
    """
    from ..datasets import get_dataset
    from .data import EMBEDDED_SHAPES, _smoke_subset

    kw = {} if spec.dataset in EMBEDDED_SHAPES else {"root": root}
    train = get_dataset(spec.dataset, split="train", **kw)
    test = get_dataset(spec.dataset, split="test", **kw)
    tr_rows, te_rows = list(range(len(train))), list(range(len(test)))
    if spec.smoke:
        tr_rows, te_rows = _smoke_subset(train, 5), _smoke_subset(test, 5)
    t0 = time.perf_counter()
    if spec.dataset in EMBEDDED_SHAPES:
        backbone, _ = build_backbone(spec.backbone, spec.image_size)
        _, ev = _transforms(spec.backbone, spec.image_size)
        dev = resolve_device(device)
        backbone.to(dev, memory_format=torch.channels_last)
        feats = _embed_images(backbone, ImageSplit(train, tr_rows), ev, dev)
        seconds = time.perf_counter() - t0
    else:
        from ..utils.feature_cache import load_views
        from .data import _cache_splits, _split_specs

        # the frozen protocol's centre-crop cache entry (train + test images, one file)
        view, paths = _split_specs(
            spec,
            [train.img_paths[i] for i in tr_rows],
            [test.img_paths[i] for i in te_rows],
            _cache_splits(spec),
        )[0]
        views, seconds = load_views(
            [view], paths, cache_dir, progress=progress, device=resolve_device(device)
        )
        feats = views[: len(tr_rows), 0]
    labels = train.clean_targets[tr_rows].long()
    c = int(labels.max()) + 1
    common = dict(backbone=spec.backbone, image_size=spec.image_size, feature_seconds=seconds)
    if mode == "test":
        return ImageData(
            ImageSplit(train, tr_rows),
            feats[:, None],
            labels,
            c,
            ImageSplit(test, te_rows),
            test.clean_targets[te_rows].long(),
            description="test classes",
            **common,
        )
    if mode != "val":
        raise ValueError(f"mode must be 'test' or 'val', got {mode!r}")
    is_val, remap, n_keep, desc = carve_validation(labels, val_classes)
    rows = torch.tensor(tr_rows)
    return ImageData(
        ImageSplit(train, rows[~is_val].tolist()),
        feats[~is_val][:, None],
        remap[labels[~is_val]],
        n_keep,
        ImageSplit(train, rows[is_val].tolist()),
        labels[is_val],
        description=desc,
        **common,
    )


def _train_loader(
    split: ImageSplit,
    weak: Callable,
    second: Callable | None,
    batches: Sequence[torch.Tensor],
) -> torch.utils.data.DataLoader:
    """Batches of images for the (position) index batches ``batches`` of ``split``: one weak
    view per image, or (``second`` given) a weak and a ``second`` view."""
    from ..datasets import TwoViewDataset

    ds = _OneView(split.dataset, weak) if second is None else TwoViewDataset(
        split.dataset, weak, second
    )
    rows = [[split.rows[i] for i in idx.tolist()] for idx in batches]
    return torch.utils.data.DataLoader(ds, batch_sampler=rows, num_workers=_workers(split.dataset))


def run_one_finetune(
    data: ImageData,
    run: RunSpec,
    cfg: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
) -> tuple[dict[str, Any], nn.Module, nn.Module]:
    """Fine-tune backbone + method on one noisy copy of the training labels; evaluate.

    Returns ``(record, trained backbone, trained method)``; the record is the frozen protocol's
    plus ``epoch_seconds`` and ``device``. Under torchrun (`noisy_pml.bench.distributed`)
    each rank trains on its share of every batch; ranks other than 0 return ``None`` as the
    record (rank 0 evaluates).
    """
    from ..utils.accuracy_calculator import evaluate_retrieval

    cfg, noise, train, method, k, build_seconds = build_method(data, run, cfg, "finetune")
    t0 = time.perf_counter() - build_seconds
    device = resolve_device(device)
    backbone, _ = build_backbone(data.backbone, data.image_size)
    backbone.to(device, memory_format=torch.channels_last)  # NHWC: faster convolutions
    method.to(device)
    weak, ev = _transforms(data.backbone, data.image_size)
    # checked for every method, used by two-view ones
    second = _second_view_transform(data.backbone, data.image_size, cfg["second_view"], weak)
    groups = method.param_groups()
    if groups:
        groups.append({"params": list(backbone.parameters()), "lr": cfg["backbone_lr"]})
    g = torch.Generator().manual_seed(run.seed)
    sampler = balanced_sampler(train.labels, cfg, g) if groups and cfg["epochs"] > 0 else None
    labels = train.labels.to(device)

    def start_epoch() -> None:
        backbone.train()
        if cfg["freeze_bn"]:
            freeze_batchnorm(backbone)
        method.train()

    def epoch_batches():
        # under torchrun, this rank's classes of every global batch (and only their images)
        batches = [distributed.local_share((i,), sampler.m)[0] for i in sampler.index_batches()]
        loader = _train_loader(data.train_images, weak, second if k == 2 else None, batches)
        for idx, images in zip(batches, loader, strict=True):
            views = images[:2] if k == 2 else [images]  # TwoViewDataset: (v1, v2, y, i)
            idx_d = idx.to(device)
            yield (*(v.to(device) for v in views), labels[idx_d], idx_d)

    with distributed.training(method, backbone) as (trained_backbone,):
        hist = fit(
            method,
            groups,
            cfg,
            epoch_batches,
            two_view=k == 2,
            encode=lambda x: trained_backbone(x.contiguous(memory_format=torch.channels_last)),
            on_epoch_start=start_epoch,
        )
    train_seconds = time.perf_counter() - t0
    if not distributed.is_main():
        return None, backbone, method  # rank 0 evaluates and writes
    t1 = time.perf_counter()
    backbone.eval()
    method.eval()
    emb = _embed_images(lambda x: method.embed(backbone(x)), data.eval_images, ev, device)
    metrics = evaluate_retrieval(emb, data.eval_labels, distance=method.eval_distance)
    eval_seconds = time.perf_counter() - t1
    method.cpu()
    record = make_record(
        run,
        cfg,
        noise,
        method,
        train,
        metrics,
        hist,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        feature_seconds=data.feature_seconds,
        epoch_seconds=hist.seconds,
        device=str(device),
    )
    return record, backbone, method
