"""Seeded, reproducible label-noise injection for the training split of a metric-learning dataset.

Three protocols, each returning a [`NoiseResult`][] (noisy labels, the mask of changed samples
and the achieved fraction of changed samples):

- [`symmetric_noise`][]: exactly ``round(rate * N)`` samples, drawn uniformly without
  replacement, get a different class drawn uniformly from the other classes present in ``labels``.
- [`small_cluster_noise`][]: PRISM's "small-cluster" noise (Liu et al., *Noise-resistant Deep
  Metric Learning with Ranking-based Instance Selection*, CVPR 2021): ``round(rate * C)`` classes
  are broken into small clusters of about 15-35 samples and each cluster is relabelled, as a
  whole, as one of the remaining classes. Mislabelled samples then form coherent groups, the kind
  of noise web-crawled data shows and that uniform flips do not imitate.
- [`pair_flip_noise`][]: the asymmetric "pair flip" of the noisy-label classification
  literature: every class ``c`` has a fixed partner ``pi(c) != c`` and ``round(rate * n_c)`` of its
  ``n_c`` samples are relabelled ``pi(c)``.

Noise never leaves the classes present in ``labels`` (the training classes), so the test split of
a class-disjoint benchmark is never touched; class ids absent from ``labels`` (empty classes) are
never produced. ``round`` is Python's (half to even) throughout.

[`NoiseRecipe`][] names a protocol and rate as a short string (``"symmetric:0.2"``) for configs
and cache keys; [`apply_noise`][] dispatches on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .utils.checks import check_finite, check_labels, check_ndim, check_rate

__all__ = [
    "NoiseResult",
    "NoiseRecipe",
    "NOISE_KINDS",
    "symmetric_noise",
    "small_cluster_noise",
    "pair_flip_noise",
    "pair_flip_mapping",
    "apply_noise",
]

NOISE_KINDS = ("clean", "symmetric", "small_cluster", "pair_flip")
_ALIASES = {
    "small-cluster": "small_cluster",
    "pair-flip": "pair_flip",
    "pairflip": "pair_flip",
    "sym": "symmetric",
    "none": "clean",
}


@dataclass
class NoiseResult:
    """Outcome of a noise injection.

    Attributes:
        noisy_labels: LongTensor (N,), the labels training sees.
        noise_mask: BoolTensor (N,), True exactly where ``noisy_labels != clean labels``.
        rate: achieved fraction of changed samples, ``noise_mask.float().mean()``.
        recipe: the recipe string that produced it (``"symmetric:0.2"``, ``"clean"``, ...).
    """

    noisy_labels: torch.Tensor
    noise_mask: torch.Tensor
    rate: float
    recipe: str


@dataclass(frozen=True)
class NoiseRecipe:
    """A noise protocol and its rate, written ``"<kind>:<rate>"`` or ``"clean"``.

    ``kind`` is one of `NOISE_KINDS`. ``str(recipe)`` round-trips through [`parse`][] and is
    ``"clean"`` whenever the rate is 0, so equal settings give equal cache keys.
    """

    kind: str
    rate: float = 0.0

    def __post_init__(self) -> None:
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        rate = _as_rate("rate", self.rate)
        if kind == "clean" and rate != 0:
            raise ValueError(f"the 'clean' recipe has rate 0, got rate={self.rate}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "rate", rate)

    @property
    def is_clean(self) -> bool:
        """True when the recipe changes no label."""
        return self.kind == "clean" or self.rate == 0

    @classmethod
    def parse(cls, text: NoiseRecipe | str | None) -> NoiseRecipe:
        """Parse ``"clean"``, ``"symmetric:0.2"``, ``"small_cluster:0.25"``, ``"pair_flip:0.2"``.

        ``None`` and an existing [`NoiseRecipe`][] are accepted too (``None`` means clean).
        """
        if text is None:
            return cls("clean", 0.0)
        if isinstance(text, NoiseRecipe):
            return text
        if not isinstance(text, str):
            raise TypeError(f"noise recipe must be a str or NoiseRecipe, got {type(text).__name__}")
        s = text.strip().lower()
        if ":" not in s:
            if _ALIASES.get(s, s) == "clean":
                return cls("clean", 0.0)
            raise ValueError(
                f"noise recipe must look like 'clean' or '<kind>:<rate>' with kind in "
                f"{NOISE_KINDS[1:]}, e.g. 'symmetric:0.2'; got {text!r}"
            )
        kind, _, rate_text = s.partition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(
                f"noise recipe {text!r}: rate {rate_text!r} is not a number; expected e.g. "
                f"'{kind}:0.2'"
            ) from None
        return cls(kind.strip(), rate)

    def __str__(self) -> str:
        if self.is_clean:
            return "clean"
        return f"{self.kind}:{self.rate!r}"


# --------------------------------------------------------------------------------------------
# helpers


def _as_rate(name: str, rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        if not (isinstance(rate, torch.Tensor) and rate.numel() == 1):
            raise TypeError(f"{name} must be a number in [0, 1), got {rate!r}")
    rate = float(rate)
    if math.isnan(rate):
        raise ValueError(f"{name} must lie in [0, 1), got nan")
    check_rate(name, rate)
    return rate


def _as_labels(
    labels: Any, num_classes: int | None = None, min_classes: int = 2
) -> tuple[torch.Tensor, torch.device]:
    """Labels as a CPU LongTensor (validated), plus the device to return results on."""
    device = labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu")
    if isinstance(labels, torch.Tensor):
        t = labels.detach().cpu()
    else:
        arr = np.asarray(labels)
        if arr.size == 0:
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"labels must hold integer class ids, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64))
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    check_labels("labels", t, num_classes=num_classes)
    t = t.long()
    present = torch.unique(t)
    if present.numel() < min_classes:
        raise ValueError(
            f"labels must contain at least 2 distinct classes to inject noise, got "
            f"{present.numel()} ({present.tolist()})"
        )
    return t, device


def _result(clean: torch.Tensor, noisy: torch.Tensor, recipe: str, device) -> NoiseResult:
    mask = noisy != clean
    rate = int(mask.sum()) / mask.numel() if mask.numel() else 0.0
    return NoiseResult(noisy.to(device), mask.to(device), rate, recipe)


def _clean_result(labels: torch.Tensor, device) -> NoiseResult:
    return _result(labels, labels.clone(), "clean", device)


# --------------------------------------------------------------------------------------------
# protocols


def symmetric_noise(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    rate: float,
    num_classes: int | None = None,
    seed: int = 0,
) -> NoiseResult:
    """Symmetric (uniform) label noise.

    Exactly ``round(rate * N)`` samples, chosen uniformly without replacement, are relabelled with a
    class drawn uniformly from the *other* classes present in ``labels``:
    ``P(y~ = j | y = i, flipped) = 1 / (K - 1)`` for ``j != i``, with K the number of distinct
    classes in ``labels``. A class id absent from ``labels`` is never produced, even when
    ``num_classes`` is larger (``num_classes`` only validates the range of ``labels``).

    Args:
        labels: 1-D integer class ids (tensor, array or list), 0-based.
        rate: fraction of samples to relabel, in [0, 1).
        num_classes: optional; when given, labels must lie in ``0..num_classes-1``.
        seed: seed of the numpy generator; equal seeds give equal results.
    """
    rate = _as_rate("rate", rate)
    y, device = _as_labels(labels, num_classes)
    recipe = str(NoiseRecipe("symmetric", rate))
    n_flip = int(round(rate * y.numel()))
    if n_flip == 0:
        return _result(y, y.clone(), recipe, device)
    rng = np.random.default_rng(seed)
    classes = torch.unique(y).numpy()  # sorted
    idx = rng.choice(y.numel(), size=n_flip, replace=False)
    # position of each chosen sample's class in `classes`, then an offset in 1..K-1 (never 0)
    pos = np.searchsorted(classes, y[idx].numpy())
    offset = rng.integers(1, len(classes), size=n_flip)
    noisy = y.clone()
    noisy[torch.from_numpy(idx)] = torch.from_numpy(classes[(pos + offset) % len(classes)])
    return _result(y, noisy, recipe, device)


def _cluster_sizes(n: int, bounds: tuple[int, int], rng: np.random.Generator) -> list[int]:
    """Split ``n`` into random sizes inside ``bounds`` (as close as possible when infeasible).

    The number of clusters m is ``round(n / mean(bounds))`` clamped to the feasible range
    ``ceil(n / hi) <= m <= floor(n / lo)``; each cluster starts at ``lo`` and the remainder is dealt
    one sample at a time to random clusters that are still below ``hi``. If no m is feasible
    (``n < lo``), the class is a single cluster of all its n samples.
    """
    lo, hi = bounds
    m_lo, m_hi = math.ceil(n / hi), n // lo
    if m_lo > m_hi:  # n < lo (or bounds too narrow for n): one cluster, or near-equal clusters
        m = max(1, round(n / ((lo + hi) / 2)))
        base = [n // m + (1 if i < n % m else 0) for i in range(m)]
        return base
    m = min(max(round(n / ((lo + hi) / 2)), m_lo), m_hi)
    sizes = np.full(m, lo)
    for _ in range(n - m * lo):
        open_ = np.flatnonzero(sizes < hi)
        sizes[rng.choice(open_)] += 1
    return sizes.tolist()


def _split_class(
    idx: np.ndarray, sizes: list[int], feats: np.ndarray | None, rng: np.random.Generator, seed: int
) -> list[np.ndarray]:
    """Partition the sample indices ``idx`` of one class into clusters of the given sizes.

    Without features: a random partition. With features: k-means (sklearn, seeded) with
    ``len(sizes)`` centres, then a balanced assignment of samples to centres (each centre j takes
    exactly ``sizes[j]`` samples) minimising the total squared distance (Hungarian algorithm), so
    clusters are compact in feature space and still respect the size bounds.
    """
    if len(sizes) == 1:
        return [idx]
    if feats is None:
        perm = rng.permutation(idx)
        return np.split(perm, np.cumsum(sizes)[:-1])
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    x = feats[idx]
    km = KMeans(n_clusters=len(sizes), n_init=4, random_state=seed).fit(x)
    d2 = ((x[:, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(-1)  # (n, m)
    slot_centre = np.repeat(np.arange(len(sizes)), sizes)  # one column per cluster slot
    rows, cols = linear_sum_assignment(d2[:, slot_centre])
    owner = np.empty(len(idx), dtype=np.int64)
    owner[rows] = slot_centre[cols]
    return [idx[owner == j] for j in range(len(sizes))]


def small_cluster_noise(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    rate: float,
    features: torch.Tensor | np.ndarray | None = None,
    cluster_size: tuple[int, int] = (15, 35),
    seed: int = 0,
    num_classes: int | None = None,
) -> NoiseResult:
    """PRISM's small-cluster noise (Liu et al., CVPR 2021).

    **What ``rate`` means here:** the fraction of *classes* that are broken (R). Exactly
    ``round(rate * K)`` of the K classes present in ``labels`` are chosen uniformly at random; every
    sample of a broken class is relabelled, so those classes disappear from the noisy labels. Each
    broken class is split into clusters of ``cluster_size[0]..cluster_size[1]`` samples and every
    cluster, as a whole, receives one class drawn uniformly (independently per cluster) from the
    K - round(rate * K) unbroken classes. The achieved *sample* rate, reported in
    `NoiseResult.rate`, equals the share of samples held by the broken classes; with balanced
    classes (CUB, Cars196) it is close to ``rate``, so the papers' "25% / 50% small-cluster noise"
    reads the same either way.

    Clusters come from k-means on ``features`` (N, D) when given (for instance frozen backbone
    features, so that a cluster is a visually coherent group, as in PRISM), balanced to the size
    bounds; otherwise from a random partition (R). A class smaller than ``cluster_size[0]`` stays a
    single cluster.

    Args:
        labels: 1-D integer class ids, 0-based.
        rate: fraction of classes to break, in [0, 1); at least one class must stay unbroken.
        features: optional (N, D) features for the k-means clusters.
        cluster_size: (min, max) cluster size, default (15, 35) as in PRISM.
        seed: seed for the class choice, the partition, the targets and k-means.
        num_classes: optional; validates that labels lie in ``0..num_classes-1``.
    """
    rate = _as_rate("rate", rate)
    y, device = _as_labels(labels, num_classes)
    lo_hi = tuple(int(v) for v in cluster_size)
    if len(lo_hi) != 2 or lo_hi[0] < 1 or lo_hi[0] > lo_hi[1]:
        raise ValueError(
            f"cluster_size must be (min, max) with 1 <= min <= max, got {cluster_size}"
        )
    feats = None
    if features is not None:
        f = torch.as_tensor(
            np.asarray(features)
            if not isinstance(features, torch.Tensor)
            else features.detach().cpu()
        )
        check_ndim("features", f, 2)
        if f.shape[0] != y.numel():
            raise ValueError(
                f"features must have one row per label: got {f.shape[0]} rows for "
                f"{y.numel()} labels"
            )
        f = f.double()
        check_finite("features", f)
        feats = f.numpy()
    recipe = str(NoiseRecipe("small_cluster", rate))
    classes = torch.unique(y).numpy()
    k = len(classes)
    n_broken = int(round(rate * k))
    if n_broken == 0:
        return _result(y, y.clone(), recipe, device)
    if n_broken >= k:
        raise ValueError(
            f"rate={rate} breaks round({rate} * {k}) = {n_broken} of the {k} classes, leaving no "
            "class to relabel clusters into; use a smaller rate or more classes"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(classes)
    broken, kept = np.sort(perm[:n_broken]), perm[n_broken:]
    y_np = y.numpy()
    noisy = y_np.copy()
    for c in broken:
        idx = np.flatnonzero(y_np == c)
        sizes = _cluster_sizes(len(idx), lo_hi, rng)
        for cluster in _split_class(idx, sizes, feats, rng, seed):
            noisy[cluster] = rng.choice(kept)
    return _result(y, torch.from_numpy(noisy), recipe, device)


def pair_flip_mapping(classes: Sequence[int], seed: int = 0) -> dict[int, int]:
    """The fixed class -> partner map of [`pair_flip_noise`][] (no class maps to itself).

    A seeded permutation ``p`` of the classes is read as one cycle: ``p[i] -> p[(i + 1) % K]``.
    """
    classes = np.asarray(sorted(set(int(c) for c in classes)))
    if len(classes) < 2:
        raise ValueError(f"pair flip needs at least 2 classes, got {classes.tolist()}")
    p = np.random.default_rng(seed).permutation(classes)
    return {int(a): int(b) for a, b in zip(p, np.roll(p, -1), strict=True)}


def pair_flip_noise(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    rate: float,
    num_classes: int | None = None,
    seed: int = 0,
) -> NoiseResult:
    """Pair-flip (asymmetric) noise: ``round(rate * n_c)`` samples of each class c become ``pi(c)``.

    ``pi`` is [`pair_flip_mapping`][] of the classes present in ``labels`` (a seeded single
    cycle, hence no fixed point); the flipped samples of each class are drawn uniformly without
    replacement. The achieved overall rate is ``sum_c round(rate * n_c) / N``.
    """
    rate = _as_rate("rate", rate)
    y, device = _as_labels(labels, num_classes)
    recipe = str(NoiseRecipe("pair_flip", rate))
    rng = np.random.default_rng(seed)
    y_np = y.numpy()
    mapping = pair_flip_mapping(np.unique(y_np), seed=int(rng.integers(2**31)))
    noisy = y_np.copy()
    for c, target in mapping.items():
        idx = np.flatnonzero(y_np == c)
        n_flip = int(round(rate * len(idx)))
        noisy[rng.choice(idx, size=n_flip, replace=False)] = target
    return _result(y, torch.from_numpy(noisy), recipe, device)


def apply_noise(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    recipe: NoiseRecipe | str | None,
    seed: int = 0,
    features: torch.Tensor | np.ndarray | None = None,
    num_classes: int | None = None,
) -> NoiseResult:
    """Apply a [`NoiseRecipe`][] (or its string) to ``labels``; ``"clean"`` changes nothing.

    ``features`` is used by ``small_cluster`` only (k-means clusters); ``num_classes`` validates
    the label range.
    """
    r = NoiseRecipe.parse(recipe)
    if r.is_clean:
        y, device = _as_labels(labels, num_classes, min_classes=0)
        return _clean_result(y, device)
    if r.kind == "symmetric":
        return symmetric_noise(labels, r.rate, num_classes=num_classes, seed=seed)
    if r.kind == "pair_flip":
        return pair_flip_noise(labels, r.rate, num_classes=num_classes, seed=seed)
    return small_cluster_noise(
        labels, r.rate, features=features, seed=seed, num_classes=num_classes
    )
