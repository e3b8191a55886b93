"""Retrieval metrics of the deep-metric-learning papers on top of PML's ``AccuracyCalculator``.

Recall@K (Song et al., CVPR 2016; the "R@1/2/4/8" of every DML paper) is the fraction of queries
with at least one item of their class among their K nearest neighbours:

    R@K = (1 / |Q|) sum_{q in Q} 1[ exists i <= K : y_{nn_i(q)} = y_q ],

with every sample as a query against all the others (self excluded). PML's ``precision_at_1``
equals R@1. MAP@R (Musgrave et al., ECCV 2020) is PML's ``mean_average_precision_at_r``.

Usage, as a drop-in for PML's calculator (e.g. in ``GlobalEmbeddingSpaceTester``)::

    from noisy_pml.utils.accuracy_calculator import RetrievalAccuracyCalculator
    calc = RetrievalAccuracyCalculator(recall_at=(1, 2, 4, 8))
    calc.get_accuracy(embeddings, labels)  # {"recall_at_1": ..., "recall_at_8": ..., ...}
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import BaseDistance, LpDistance
from pytorch_metric_learning.utils import accuracy_calculator as pml_acc
from pytorch_metric_learning.utils.inference import CustomKNN

from .checks import check_finite, check_ndim

try:  # faiss is optional (extras "cpu" / "gpu"); without it PML's default FaissKNN fails
    import faiss  # noqa: F401

    HAS_FAISS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_FAISS = False

__all__ = [
    "HAS_FAISS",
    "RetrievalAccuracyCalculator",
    "SklearnKMeans",
    "count_lone_queries",
    "evaluate_retrieval",
]


class SklearnKMeans:
    """k-means with scikit-learn, the clustering fallback (NMI / AMI) when faiss is missing."""

    def __init__(self, seed: int = 0, n_init: int = 1) -> None:
        self.seed = seed
        self.n_init = n_init

    def __call__(self, x: torch.Tensor, nmb_clusters: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=nmb_clusters, n_init=self.n_init, random_state=self.seed)
        ids = km.fit_predict(x.detach().cpu().double().numpy())
        return torch.as_tensor(ids, dtype=torch.long, device=x.device)


def recall_at_k(
    knn_labels: torch.Tensor,
    query_labels: torch.Tensor,
    k: int,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn=pml_acc.EQUALITY,
):
    """R@K from the (Q, >=K) labels of each query's neighbours, nearest first.

    ``query_labels`` is (Q, 1). If fewer than K neighbours exist (tiny galleries), all of them
    are used, which is what R@K means when K exceeds the gallery.
    """
    same = label_comparison_fn(query_labels, knn_labels[:, :k])
    hit = same.any(dim=1).double()
    return pml_acc.maybe_get_avg_of_avgs(hit, query_labels, avg_of_avgs, return_per_class)


class RetrievalAccuracyCalculator(pml_acc.AccuracyCalculator):
    """PML's ``AccuracyCalculator`` plus ``recall_at_{k}`` for every k in ``recall_at``.

    kNN backend, in order:

    - ``knn_func=...`` passed through ``kwargs``: used as is (as in PML);
    - ``distance=...`` (any ``BaseDistance``, e.g. a hyperbolic one): ``CustomKNN(distance)``,
      ranking by smallest distance, or largest similarity when ``distance.is_inverted``. The
      distance's own ``normalize_embeddings`` applies;
    - faiss importable and ``use_faiss`` not False: PML's ``FaissKNN`` (exact L2 search);
    - otherwise a pure-torch exact search: ``CustomKNN(LpDistance(normalize_embeddings=False))``
      in chunks of ``knn_batch_size`` queries, the same L2 ranking as faiss.

    ``k`` defaults to ``"max_bin_count"`` (bounded memory, exact MAP@R and R-precision) and is
    raised to ``max(recall_at)`` when classes are smaller than that. Queries whose class has no
    other sample in the reference set ("lone" queries) are left out of every kNN metric, as PML
    does for precision_at_1; when *every* query is lone, PML returns NaN for the kNN metrics.
    This class keeps PML's return values (a tester calling it every epoch never crashes) but
    never silently: ``get_accuracy`` emits a ``UserWarning`` saying how many queries were left
    out, and that the kNN metrics are NaN when no query is left ([`evaluate_retrieval`][]
    raises instead).
    Without faiss, clustering metrics (NMI, AMI) use [`SklearnKMeans`][].

    Args:
        recall_at: the K of the R@K metrics (positive integers).
        distance: optional ``BaseDistance`` for the kNN.
        use_faiss: None = faiss when importable; False forces the torch path; True requires faiss.
        knn_batch_size: queries per chunk on the torch / custom-distance path (None: all at once).
        **kwargs: PML ``AccuracyCalculator`` arguments (include, exclude, k, avg_of_avgs, ...).
    """

    def __init__(
        self,
        recall_at: Sequence[int] = (1, 2, 4, 8),
        distance: BaseDistance | None = None,
        use_faiss: bool | None = None,
        knn_batch_size: int | None = 1024,
        **kwargs: Any,
    ) -> None:
        recall_at = tuple(recall_at)
        if not recall_at or any(
            isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in recall_at
        ):
            raise ValueError(f"recall_at must be positive integers, got {recall_at}")
        self.recall_at = tuple(sorted(set(int(k) for k in recall_at)))
        if distance is not None and not isinstance(distance, BaseDistance):
            raise TypeError(
                f"distance must be a pytorch_metric_learning BaseDistance, got "
                f"{type(distance).__name__}"
            )
        if use_faiss and not HAS_FAISS:
            raise ImportError("use_faiss=True but faiss is not installed (pip install faiss-cpu)")
        if kwargs.get("knn_func") is not None and distance is not None:
            raise ValueError("pass either distance= or knn_func=, not both")
        self.distance = distance
        self.use_faiss = HAS_FAISS if use_faiss is None else bool(use_faiss)
        if kwargs.get("knn_func") is None:
            if distance is not None:
                kwargs["knn_func"] = CustomKNN(distance, batch_size=knn_batch_size)
            elif not self.use_faiss:
                kwargs["knn_func"] = CustomKNN(
                    LpDistance(normalize_embeddings=False), batch_size=knn_batch_size
                )
        if kwargs.get("kmeans_func") is None and not HAS_FAISS:
            kwargs["kmeans_func"] = SklearnKMeans()
        kwargs.setdefault("k", "max_bin_count")
        # PML discovers metrics as attributes named calculate_<metric>: add one per K
        for k in self.recall_at:
            setattr(self, f"calculate_recall_at_{k}", functools.partial(self._recall_at, k=k))
        super().__init__(**kwargs)

    def recall_metric_names(self) -> list[str]:
        return [f"recall_at_{k}" for k in self.recall_at]

    def requires_knn(self) -> list[str]:
        return super().requires_knn() + self.recall_metric_names()

    def _recall_at(self, knn_labels, query_labels, not_lone_query_mask, label_counts, k, **kwargs):
        knn_labels, query_labels = pml_acc.try_getting_not_lone_labels(
            knn_labels, query_labels, not_lone_query_mask
        )
        if knn_labels is None:
            return pml_acc.nan_accuracy(label_counts[0], self.return_per_class)
        return recall_at_k(
            knn_labels,
            query_labels[:, None],
            k,
            self.avg_of_avgs,
            self.return_per_class,
            self.label_comparison_fn,
        )

    def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):
        k = super().determine_k(bin_counts, num_reference_embeddings, ref_includes_query)
        if any(m in self.get_curr_metrics() for m in self.recall_metric_names()):
            k = max(k, self.recall_at[-1])
        return min(k, num_reference_embeddings - int(ref_includes_query))

    def get_accuracy(
        self,
        query,
        query_labels,
        reference=None,
        reference_labels=None,
        ref_includes_query=False,
        include=(),
        exclude=(),
    ) -> dict[str, Any]:
        """PML's ``get_accuracy`` after validating shapes, lengths and finiteness."""
        q = _as_tensor("query", query)
        check_ndim("query", q, 2)
        check_finite("query", q)
        _check_lengths("query", q, "query_labels", query_labels)
        n_ref = len(q)
        if reference is not None:
            r = _as_tensor("reference", reference)
            check_ndim("reference", r, 2)
            check_finite("reference", r)
            _check_lengths("reference", r, "reference_labels", reference_labels)
            n_ref = len(r)
        if len(q) < 1 or n_ref - int(reference is None or ref_includes_query) < 1:
            raise ValueError(
                f"retrieval needs at least 2 samples (a query and another item), got {len(q)} "
                f"queries and {n_ref} reference items"
            )
        self_in_ref = reference is None or ref_includes_query
        self._warn_lone_queries(query_labels, reference_labels, self_in_ref, include, exclude)
        return super().get_accuracy(
            query, query_labels, reference, reference_labels, ref_includes_query, include, exclude
        )

    def _warn_lone_queries(self, query_labels, reference_labels, self_in_ref, include, exclude):
        """Warn when queries have no relevant reference item (PML leaves them out, or gives NaN)."""
        metrics = self.get_function_dict(include, exclude)
        if not any(m in metrics for m in self.requires_knn()):
            return
        lone = count_lone_queries(query_labels, reference_labels, self_in_ref)
        if lone is None or lone == 0:
            return
        n = len(query_labels)
        if lone == n:
            warnings.warn(
                f"every one of the {n} queries is alone in its class (no other reference item "
                "has its label): the kNN metrics (recall_at_k, precision_at_1, MAP@R, ...) are "
                "NaN. Retrieval needs at least two samples of some class.",
                UserWarning,
                stacklevel=3,
            )
        else:
            warnings.warn(
                f"{lone} of {n} queries have no other reference item of their class and are "
                "left out of the kNN metrics (as in PML)",
                UserWarning,
                stacklevel=3,
            )


def count_lone_queries(query_labels, reference_labels=None, self_in_ref: bool = True) -> int | None:
    """Number of queries whose label no other reference item has (None: labels not 1-D ids).

    Args:
        query_labels: (Q,) labels of the queries.
        reference_labels: (R,) labels of the references; None means the queries themselves.
        self_in_ref: the queries are also the first Q references (each query's own row does
            not count as a relevant item).
    """
    q = _as_tensor("query_labels", query_labels)
    r = q if reference_labels is None else _as_tensor("reference_labels", reference_labels)
    if q.dim() != 1 or r.dim() != 1:
        return None  # multi-label or custom comparisons: PML's own rules apply
    classes, counts = torch.unique(r.cpu(), return_counts=True)
    pos = torch.searchsorted(classes, q.cpu()).clamp(max=len(classes) - 1)
    found = classes[pos] == q.cpu() if len(classes) else torch.zeros(len(q), dtype=torch.bool)
    relevant = torch.where(found, counts[pos] - int(self_in_ref), 0) if len(classes) else found
    return int((relevant <= 0).sum())


def _as_tensor(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from e


def _check_lengths(name: str, x: torch.Tensor, label_name: str, labels: Any) -> None:
    if labels is None:
        raise ValueError(f"{label_name} is required with {name}")
    n = len(labels)
    if n != len(x):
        raise ValueError(
            f"{name} has {len(x)} rows but {label_name} has {n} entries; expected one label per row"
        )


def evaluate_retrieval(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    recall_at: Sequence[int] = (1, 2, 4, 8),
    distance: BaseDistance | None = None,
    normalize: bool = True,
    use_faiss: bool | None = None,
) -> dict[str, float]:
    """Recall@K and MAP@R with every sample as a query against all the others (self excluded).

    With ``distance=None`` embeddings are L2-normalised first when ``normalize`` (so ranking is by
    cosine similarity, as in the papers and PML's testers) and searched by L2 distance; with a
    ``distance`` the ranking is that distance's (``normalize`` is then ignored: the distance's
    ``normalize_embeddings`` applies).

    Every class with a single sample is left out as a query (it has nothing to retrieve; a
    ``UserWarning`` says how many); its sample still counts as a distractor for the others.

    Returns:
        ``{"R@1": ..., "R@2": ..., "R@4": ..., "R@8": ..., "MAP@R": ...}`` (one "R@K" per K),
        always finite.

    Raises:
        ValueError: NaN/inf embeddings, fewer than 2 samples, mismatched lengths, or no class
            with two samples (every query alone in its class: no metric is defined).
        TypeError: embeddings or labels that are not tensors or arrays.
    """
    x = _as_tensor("embeddings", embeddings)
    check_ndim("embeddings", x, 2)
    check_finite("embeddings", x)
    y = _as_tensor("labels", labels)
    check_ndim("labels", y, 1)
    _check_lengths("embeddings", x, "labels", y)
    if len(x) < 2:
        raise ValueError(f"retrieval needs at least 2 samples, got {len(x)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise TypeError(f"labels must be integer class ids, got dtype {y.dtype} with fractions")
    if count_lone_queries(y) == len(y):
        raise ValueError(
            f"every one of the {len(y)} samples is alone in its class: retrieval metrics are "
            "undefined (each query needs another sample of its class); check the labels"
        )
    x = x.detach().float()
    if distance is None and normalize:
        x = torch.nn.functional.normalize(x, p=2, dim=1)
    calc = RetrievalAccuracyCalculator(
        recall_at=recall_at,
        distance=distance,
        use_faiss=use_faiss,
        device=x.device,
    )
    metrics = calc.recall_metric_names() + ["mean_average_precision_at_r"]
    acc = calc.get_accuracy(x, y, include=tuple(metrics))
    out = {f"R@{k}": float(acc[f"recall_at_{k}"]) for k in calc.recall_at}
    out["MAP@R"] = float(acc["mean_average_precision_at_r"])
    return out
