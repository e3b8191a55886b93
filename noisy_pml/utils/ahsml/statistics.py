r"""AHSML's batch structure and class statistics as pure functions of tensors.

A batch holds $N = V B$ embeddings ($V$ augmented views of $B$ images), their (noisy) labels
and the instance id of each row (the rows of one image share it). With $s$ a similarity, for a
class $a$ with $n_a$ members and a class pair $(a, b)$:

$$
S_{aa} = \operatorname{mean}_{i \ne j \in a} s_{ij}, \qquad
S_{ab} = \operatorname{mean}_{i \in a,\ j \in b} s_{ij}.
$$

For the cosine of unit vectors both follow from the class sums $\sigma_a = \sum_{i \in a} x_i$:
$S_{ab} = \sigma_a \cdot \sigma_b / (n_a n_b)$ and
$S_{aa} = (\|\sigma_a\|^2 - n_a) / (n_a (n_a - 1))$, which is what the memory bank keeps.
"""

from __future__ import annotations

import torch

__all__ = [
    "class_pair_means",
    "cosine_class_means",
    "cosine_statistics_from_sums",
    "instance_ids_from_views",
    "minmax_to_range",
    "pair_masks",
]


def instance_ids_from_views(n: int, views: int, device=None) -> torch.Tensor:
    """Instance ids of a batch stacked as `[view_1; ...; view_V]` (PML's TwoStreamMetricLoss
    order): `arange(n // views)` repeated `views` times.

    Raises:
        ValueError: `views < 1`, or `n` is not a multiple of `views`.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if n % views:
        raise ValueError(
            f"batch of {n} embeddings cannot be split into views={views} equal blocks "
            "(expected [view_1; ...; view_V] with the same images in each block)"
        )
    return torch.arange(n // views, device=device).repeat(views)


def pair_masks(labels: torch.Tensor, instance_ids: torch.Tensor):
    """Boolean N x N masks `(A, P, N)`: augmentation pairs (same instance, $i \\ne j$), label
    positives of different instances, and negatives (different labels)."""
    same_inst = instance_ids[:, None] == instance_ids[None, :]
    same_label = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same_inst & ~eye, same_label & ~same_inst, ~same_label


def class_pair_means(
    sim: torch.Tensor,
    labels: torch.Tensor,
    classes: torch.Tensor,
    exclude: torch.Tensor | None = None,
):
    r"""Class statistics $S_{aa}$, $S_{ab}$ of a square similarity matrix, by one-hot matmuls.

    Args:
        sim: M x M similarities between samples with `labels`.
        labels: M class ids.
        classes: the K classes to report, sorted.
        exclude: optional M x M mask of pairs left out (e.g. two views of one image).

    Returns:
        `(intra, inter, n)`: `intra[k]` the mean over distinct pairs inside `classes[k]` (NaN
        without a pair), `inter[k, l]` the mean over pairs across `classes[k]` and `classes[l]`
        (its diagonal holds `intra`), `n[k]` the member counts.
    """
    onehot = (labels[:, None] == classes[None, :]).to(sim.dtype)  # M x K
    valid = ~torch.eye(len(labels), dtype=torch.bool, device=sim.device)
    if exclude is not None:
        valid = valid & ~exclude
    v = valid.to(sim.dtype)
    sums = onehot.T @ (sim * v) @ onehot
    counts = onehot.T @ v @ onehot
    means = sums / counts.clamp_min(1)
    means = means.masked_fill(counts == 0, float("nan"))
    return means.diagonal().clone(), means, onehot.sum(0)


def cosine_statistics_from_sums(sums: torch.Tensor, n: torch.Tensor):
    r"""Cosine class statistics from the sums $\sigma_a$ of each class's unit vectors.

    $S_{ab} = \sigma_a \cdot \sigma_b / (n_a n_b)$ and
    $S_{aa} = (\|\sigma_a\|^2 - n_a) / (n_a (n_a - 1))$: exactly the mean cosine over distinct
    member pairs, in $O(K^2 D)$.

    Args:
        sums: K x D class sums of unit vectors.
        n: K member counts.

    Returns:
        `(intra, inter, n)` as `class_pair_means` (NaN where a class has too few members).
    """
    gram = sums @ sums.T
    pairs = n[:, None] * n[None, :]
    inter = gram / pairs.clamp_min(1)
    inter = inter.masked_fill(pairs == 0, float("nan"))
    intra = (gram.diagonal() - n) / (n * (n - 1)).clamp_min(1)
    intra = intra.masked_fill(n < 2, float("nan"))
    inter.diagonal().copy_(intra)  # distinct pairs only, as class_pair_means
    return intra, inter, n


def cosine_class_means(emb: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor):
    r"""Closed form of `class_pair_means` for the cosine similarity, from the class sums
    of the L2-normalised embeddings (see `cosine_statistics_from_sums`); $O(M D + K^2 D)$."""
    x = torch.nn.functional.normalize(emb, dim=1)
    onehot = (labels[:, None] == classes[None, :]).to(x.dtype)
    return cosine_statistics_from_sums(onehot.T @ x, onehot.sum(0))


def minmax_to_range(
    x: torch.Tensor, delta: float, reference: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Map the finite entries of `x` linearly onto $[0, \delta]$ (min-max); NaN entries and a
    degenerate range (max == min) map to 0. With `reference`, the range is that of the finite
    entries of `reference` (e.g. every class of a memory bank rather than the batch's), and the
    result is clamped to $[0, \delta]$."""
    ref = x if reference is None else reference
    finite, ref_finite = torch.isfinite(x), torch.isfinite(ref)
    if not finite.any() or not ref_finite.any():
        return torch.zeros_like(x)
    lo, hi = ref[ref_finite].min(), ref[ref_finite].max()
    scaled = delta * (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    if reference is not None:
        scaled = scaled.clamp(0, delta)
    return torch.where(finite, scaled, torch.zeros_like(x))
