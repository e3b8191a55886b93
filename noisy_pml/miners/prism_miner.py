"""PRISM: ranking-based instance selection for noisy labels, as a PML pair miner."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from ..utils.ahsml.memory_bank import EmbeddingMemoryBank
from ..utils.checks import (
    check_finite,
    check_float_tensor,
    check_labels,
    check_ndim,
    check_positive,
    check_rate,
    resolve_alias,
)

__all__ = ["PRISMMiner"]


class PRISMMiner(BaseMiner):
    r"""PRISM (Liu, Wu, Wang, Liu, Wang, "Noise-resistant Deep Metric Learning with Ranking-based
    Instance Selection", CVPR 2021) as a miner: pairs touching a sample judged noisy are dropped.

    A memory bank (`noisy_pml.utils.ahsml.EmbeddingMemoryBank`, the one AHSML uses) holds the
    latest (detached) embedding and label of every training sample, indexed by sample id, and
    keeps per-class sums, so the class centres $c_k$ (the means of the bank's members of class
    $k$) cost $O(B D)$ per step. The clean score of a batch sample $x_i$ with (noisy) label
    $y_i$ is

    $$ p_i = \frac{\exp(s(x_i, c_{y_i}) / T)}{\sum_k \exp(s(x_i, c_k) / T)} $$

    (the softmax over class centres, read at the labelled class). A sample is kept when
    $p_i \ge \tau$, with $\tau$ the $r$-quantile of the bank's stored scores and $r$ the noise
    rate:

    - ``noise_rate=None`` (default, "adaptive"): $r$ is estimated as the fraction of bank
      samples whose labelled centre is not among their ``top_k`` most similar centres;
    - ``noise_rate=r``: the known (or assumed) rate, as in PRISM's main experiments.

    The miner returns all label pairs ``(a1, p, a2, n)`` of the batch (or those of
    ``inner_miner``) whose two samples are both kept; then the bank is updated with the batch.
    Filtering starts once ``warmup`` of the samples have entered the bank (before that, and for
    classes with fewer than ``min_class_size`` bank members, every sample is kept).

    Reconstructed choices (R), configurable: the indexed bank (one entry per sample, rather than
    PRISM's FIFO queue; it makes per-sample scores available as `scores`), the adaptive
    rate estimate from top-k ranks, ``temperature=1`` and ``warmup=0.5``.

    Sample indices are required: pass `indices=` to `forward`, or, with PML trainers that call
    `miner(embeddings, labels)`, call `set_batch_info(indices=idx)` from the trainer's
    `data_and_label_getter` (`set_batch_indices(idx)` is its deprecated alias):

        def getter(batch):
            data, labels, idx = batch  # dataset built with return_index=True
            miner.set_batch_info(indices=idx)
            return data, labels

    Non-finite embeddings, bad labels or indices are rejected before the bank, the scores or
    the statistics change. A state dict taken after training loads into a freshly constructed
    miner (the bank takes the checkpoint's width).

    Args:
        num_samples: size of the training set (bank rows).
        num_classes: number of (noisy) label classes.
        top_k: rank within which the labelled centre must fall for the rate estimate.
        noise_rate: known noise rate in [0, 1), or ``None`` to estimate it.
        temperature: softmax temperature ``T`` of the clean score.
        warmup: share of the training set that must be in the bank before filtering.
        min_class_size: bank members a class needs before its centre is trusted.
        inner_miner: optional PML pair miner run first (e.g. MultiSimilarityMiner).
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        top_k: int = 1,
        noise_rate: float | None = None,
        temperature: float = 1.0,
        warmup: float = 0.5,
        min_class_size: int = 2,
        inner_miner: BaseMiner | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 1 <= int(top_k) <= int(num_classes):
            raise ValueError(f"top_k must lie in 1..num_classes={num_classes}, got {top_k}")
        if noise_rate is not None:
            check_rate("noise_rate", noise_rate)
        check_positive("temperature", temperature)
        check_rate("warmup", warmup, allow_one=True)
        self.num_samples, self.num_classes = int(num_samples), int(num_classes)
        self.top_k, self.noise_rate, self.temperature = int(top_k), noise_rate, float(temperature)
        self.warmup, self.min_class_size = float(warmup), int(min_class_size)
        self.inner_miner = inner_miner
        self.bank = EmbeddingMemoryBank(
            self.num_samples, normalize_sums=False  # centres: means of the rows as stored
        )
        self.register_buffer("scores", torch.full((self.num_samples,), float("nan")))
        self.register_buffer("in_top_k", torch.ones(self.num_samples, dtype=torch.bool))
        self._pending_indices: torch.Tensor | None = None
        self.add_to_recordable_attributes(
            list_of_names=["num_samples", "num_classes", "top_k", "temperature"], is_stat=False
        )
        self.add_to_recordable_attributes(
            list_of_names=["kept_fraction", "threshold", "estimated_noise_rate"], is_stat=True
        )
        self.kept_fraction, self.threshold, self.estimated_noise_rate = 1.0, 0.0, 0.0

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

    @property
    def filled(self) -> torch.Tensor:
        """Boolean mask of the samples the bank has seen."""
        return self.bank.filled

    def set_batch_info(
        self, indices=None, instance_ids=None, confidences=None, sample_indices=None
    ) -> None:
        """Dataset indices of the next batch (consumed by the next `forward`); `instance_ids`
        and `confidences` are accepted for the library-wide convention and not used;
        `sample_indices` is a deprecated alias of `indices`.

        Raises:
            ValueError: both `indices` and `sample_indices` given.
        """
        indices = resolve_alias("indices", indices, "sample_indices", sample_indices)
        self._pending_indices = None if indices is None else torch.as_tensor(indices)

    def set_batch_indices(self, indices: torch.Tensor) -> None:
        """Deprecated alias of `set_batch_info(indices=...)`."""
        self.set_batch_info(indices=indices)

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None, indices=None):
        if indices is None:
            indices, self._pending_indices = self._pending_indices, None
        if indices is None:
            raise ValueError(
                "PRISMMiner needs the dataset indices of the batch samples: call "
                "miner(embeddings, labels, indices=idx), or miner.set_batch_info(indices=idx) "
                "before a PML trainer calls the miner (e.g. from data_and_label_getter with a "
                "dataset built with return_index=True)"
            )
        if ref_emb is not None and ref_emb is not embeddings:
            raise ValueError("PRISMMiner mines within the batch; ref_emb is not supported")
        # everything is checked before the bank, scores or statistics change
        check_float_tensor("embeddings", embeddings)
        check_ndim("embeddings", embeddings, 2)
        check_finite("embeddings", embeddings)
        indices = torch.as_tensor(indices, device=embeddings.device)
        check_labels("labels", labels, self.num_classes, length=len(embeddings))
        check_labels("indices", indices, self.num_samples, length=len(embeddings))
        self.bank.check_batch(embeddings, labels, indices)
        self._indices = indices.long()
        return super().forward(embeddings, labels)

    def _centres(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        sums, counts = self.bank.class_sums_of(torch.arange(self.num_classes))
        sums, counts = sums.to(self.bank.embeddings.device), counts.to(self.bank.embeddings.device)
        return (sums / counts.clamp_min(1).unsqueeze(1)).to(dtype), counts.long()

    def _clean_scores(self, emb: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor):
        """Clean probability p_i and whether y_i's centre ranks in the top-k, per sample."""
        sim = self.distance(emb, centres)
        if not self.distance.is_inverted:
            sim = -sim
        logp = torch.log_softmax(sim / self.temperature, dim=1)
        p = logp.gather(1, labels[:, None]).squeeze(1).exp()
        own = sim.gather(1, labels[:, None])
        rank = (sim > own).sum(dim=1)  # number of centres strictly more similar
        return p, rank < self.top_k

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        idx = self._indices
        emb = embeddings.detach()
        if self.distance.normalize_embeddings:
            emb = self.distance.normalize(emb)
        keep = torch.ones(len(emb), dtype=torch.bool, device=emb.device)
        if self.filled.any():
            centres, counts = self._centres(emb.dtype)
            p, top = self._clean_scores(emb, labels, centres)
            self.scores[idx] = p.to(self.scores.dtype)
            self.in_top_k[idx] = top
            trusted = counts[labels] >= self.min_class_size
            if self.filled.float().mean() >= self.warmup:
                seen = self.filled & ~torch.isnan(self.scores)
                rate = self.noise_rate
                if rate is None:
                    rate = 1.0 - self.in_top_k[seen].float().mean().item()
                self.estimated_noise_rate = float(rate)
                self.threshold = float(torch.quantile(self.scores[seen].float(), rate))
                keep = (p >= self.threshold) | ~trusted
        self.kept_fraction = keep.float().mean().item()
        self.bank.update(emb, labels, idx)
        if self.inner_miner is not None:
            a1, p_, a2, n = self.inner_miner(embeddings, labels)
        else:
            a1, p_, a2, n = lmu.get_all_pairs_indices(labels)
        pos = keep[a1] & keep[p_]
        neg = keep[a2] & keep[n]
        return a1[pos], p_[pos], a2[neg], n[neg]
