"""Pair miner that drops pairs touching samples that look mislabelled."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.ahsml import instance_ids_from_views
from ..utils.checks import (
    check_finite,
    check_finite_number,
    check_float_tensor,
    check_labels,
    check_positive_int,
    check_probabilities,
    check_rate,
    resolve_alias,
)

CRITERIA = ("class_stats", "confidence")


class NoiseAwarePairMiner(BaseMiner):
    r"""All pairs of the batch, minus those whose anchor or partner looks mislabelled.

    (R) In the spirit of AHSML's class-wise statistics (Yan et al., TIP 2023), a sample
    $i$ of labelled class $y_i$ is suspect when

    - ``criterion="class_stats"``: its mean similarity to the other images of its own class in
      the batch falls below its mean similarity to the closest other class by more than
      ``margin``: $\bar s_{i,y_i} - \max_{b \ne y_i} \bar s_{i,b} < -\text{margin}$
      (scores averaged over the views of one image; needs at least ``min_class_size - 1`` other
      images of its class, otherwise the sample is kept);
    - ``criterion="confidence"``: its clean-label confidence (``set_batch_info(confidences=...)``
      per image or row, or a per-dataset table from [`set_sample_confidences`][] looked up by
      the sample indices) is below ``confidence_threshold``.

    At most ``max_drop_fraction`` of the images are dropped (the most suspect first). Returns
    ``(a1, p, a2, n)`` for any pair loss; with ``drop_negatives=False`` only positive pairs are
    filtered. Works with ``ref_emb`` (PML's TwoStreamMetricLoss passes view 1 as queries and view 2
    as references; row ``i`` of both is image ``i``).

    Args:
        criterion: ``"class_stats"`` or ``"confidence"``.
        margin, confidence_threshold, max_drop_fraction, min_class_size, drop_negatives: above.
        views: stacked views ``[view_1; ...; view_V]`` when no instance ids are given.
        distance: default ``CosineSimilarity()``; pass the loss's distance (e.g.
            ``PoincareSimilarity``) to judge in the loss's geometry.

    Raises:
        ValueError: (at call time) embeddings with NaN/inf values, or negative labels;
            (constructor) a non-finite margin or an out-of-range rate.
        TypeError: (at call time) labels that are not integer class ids (e.g. floats).
    """

    def __init__(
        self,
        criterion: str = "class_stats",
        margin: float = 0.0,
        confidence_threshold: float = 0.5,
        max_drop_fraction: float = 0.5,
        min_class_size: int = 2,
        drop_negatives: bool = True,
        views: int = 2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        check_rate("max_drop_fraction", max_drop_fraction, allow_one=True)
        check_rate("confidence_threshold", confidence_threshold, allow_one=True)
        check_finite_number("margin", margin)
        check_positive_int("views", views)
        check_positive_int("min_class_size", min_class_size)
        if min_class_size < 2:
            raise ValueError(f"min_class_size must be >= 2, got {min_class_size}")
        self.criterion, self.margin = criterion, float(margin)
        self.confidence_threshold = float(confidence_threshold)
        self.max_drop_fraction, self.min_class_size = float(max_drop_fraction), int(min_class_size)
        self.drop_negatives, self.views = bool(drop_negatives), int(views)
        self.sample_confidences: torch.Tensor | None = None
        self._pending: dict = {}
        self.add_to_recordable_attributes(list_of_names=["num_dropped"], is_stat=True)

    def set_batch_info(
        self, indices=None, instance_ids=None, confidences=None, sample_indices=None
    ) -> None:
        """Side channel for the next call (consumed by it): dataset indices, instance ids and/or
        per-image confidences. ``sample_indices=`` is a deprecated alias of ``indices=``."""
        self._pending = {
            "indices": resolve_alias("indices", indices, "sample_indices", sample_indices),
            "instance_ids": instance_ids,
            "confidences": confidences,
        }

    def set_sample_confidences(self, confidences: torch.Tensor) -> None:
        """Per-training-sample clean-label confidences, looked up by the batch's ``indices``."""
        check_probabilities("confidences", confidences, (len(confidences),))
        self.sample_confidences = confidences.detach()

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        pending, self._pending = self._pending, {}
        self_mode = ref_emb is embeddings
        # judged before any mining: NaN similarities would silently mark (or spare) suspects
        check_float_tensor("embeddings", embeddings)
        check_finite("embeddings", embeddings)
        check_labels("labels", labels, length=len(embeddings))
        if not self_mode:
            check_float_tensor("ref_emb", ref_emb)
            check_finite("ref_emb", ref_emb)
            check_labels("ref_labels", ref_labels, length=len(ref_emb))
        n = len(embeddings)
        if n == 0 or len(ref_emb) == 0:  # nothing to mine (PML's miners return empty tuples)
            empty = torch.zeros(0, dtype=torch.long, device=embeddings.device)
            self.num_dropped = 0
            return empty, empty, empty, empty
        if self_mode:
            x, y = embeddings, labels
            inst = pending.get("instance_ids")
            inst = instance_ids_from_views(n, self.views, x.device) if inst is None else inst
        else:
            if len(ref_emb) != n:
                raise ValueError(
                    f"ref_emb has {len(ref_emb)} rows but embeddings has {n}: expected the second "
                    "view of the same images (as TwoStreamMetricLoss passes them)"
                )
            x, y = torch.cat([embeddings, ref_emb]), torch.cat([labels, ref_labels])
            inst = torch.arange(n, device=x.device).repeat(2)
        inst = torch.unique(torch.as_tensor(inst, device=x.device), return_inverse=True)[1]
        if len(inst) != len(x):
            raise ValueError(f"instance_ids has {len(inst)} entries, expected {len(x)}")
        suspect = self.suspects(x, y, inst, pending)
        self.num_dropped = int(suspect.sum())
        q_bad, r_bad = (suspect, suspect) if self_mode else (suspect[:n], suspect[n:])
        a1, p, a2, nn = lmu.get_all_pairs_indices(labels, None if self_mode else ref_labels)
        keep_p = ~(q_bad[a1] | r_bad[p])
        a1, p = a1[keep_p], p[keep_p]
        if self.drop_negatives:
            keep_n = ~(q_bad[a2] | r_bad[nn])
            a2, nn = a2[keep_n], nn[keep_n]
        return a1, p, a2, nn

    def suspects(self, x, labels, inst, pending) -> torch.Tensor:
        """Boolean mask over rows: True where the row's image looks mislabelled."""
        num_inst = int(inst.max()) + 1 if len(inst) else 0
        if self.criterion == "confidence":
            score = self._confidences(pending, inst, num_inst) - self.confidence_threshold
        else:
            score = self._class_scores(x, labels, inst, num_inst) + self.margin
        bad = score < 0
        budget = int(self.max_drop_fraction * num_inst)
        if int(bad.sum()) > budget:  # keep only the `budget` most suspect images
            order = torch.argsort(torch.where(bad, score, torch.full_like(score, float("inf"))))
            bad = torch.zeros_like(bad)
            bad[order[:budget]] = True
        return bad[inst]

    def _class_scores(self, x, labels, inst, num_inst):
        mat = self.distance(x)
        sim = mat if self.distance.is_inverted else -mat
        classes, k = torch.unique(labels, return_inverse=True)
        onehot = torch.nn.functional.one_hot(k, len(classes)).to(sim.dtype)
        other = (inst[:, None] != inst[None, :]).to(sim.dtype)  # never count one's own views
        # mean similarity of row i to the other images of each class: (sum_j s_ij [j in b]) / n_b
        sums, counts = (sim * other) @ onehot, other @ onehot
        mean = sums / counts.clamp_min(1)
        own = mean.gather(1, k[:, None]).squeeze(1)
        rival = mean.masked_fill((onehot > 0) | (counts == 0), float("-inf")).amax(1)
        row_score = own - rival
        # too little evidence (own class too small, or no other class): never suspect
        images_per_row = counts.gather(1, k[:, None]).squeeze(1) / self.views_of(inst)[inst]
        enough = (images_per_row >= self.min_class_size - 1) & torch.isfinite(rival)
        row_score = torch.where(enough, row_score, torch.full_like(row_score, float("inf")))
        score = torch.zeros(num_inst, dtype=sim.dtype, device=sim.device)
        score = score.index_add(0, inst, row_score) / self.views_of(inst)
        return score

    @staticmethod
    def views_of(inst):
        return torch.bincount(inst).to(torch.get_default_dtype())

    def _confidences(self, pending, inst, num_inst):
        conf = pending.get("confidences")
        if conf is None:
            idx = pending.get("indices")
            if self.sample_confidences is None or idx is None:
                raise ValueError(
                    "criterion='confidence' needs confidences: call set_batch_info(confidences=...)"
                    " before each batch, or set_sample_confidences(table) and pass indices"
                )
            conf = self.sample_confidences.to(inst.device)[torch.as_tensor(idx, device=inst.device)]
        conf = torch.as_tensor(conf, device=inst.device).flatten().to(torch.get_default_dtype())
        if len(conf) == len(inst):
            conf = torch.zeros(num_inst, dtype=conf.dtype, device=conf.device).index_reduce(
                0, inst, conf, "amin", include_self=False
            )
        check_probabilities("confidences", conf, (num_inst,))
        return conf

    def get_default_distance(self):
        return CosineSimilarity()
