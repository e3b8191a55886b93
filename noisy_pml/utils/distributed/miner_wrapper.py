"""PML's DistributedMinerWrapper in the single-process order, with views and sample indices."""

from __future__ import annotations

from pytorch_metric_learning.utils import distributed as pml_dist

from .batch_info import BatchInfo, deliver, gather_header, gather_info, resolve_views
from .gather import gather_rows, is_distributed
from .loss_wrapper import GlobalIndices


class DistributedMinerWrapper(pml_dist.DistributedMinerWrapper):
    """Drop-in for ``pytorch_metric_learning.utils.distributed.DistributedMinerWrapper``.

    Every rank gathers the embeddings, labels and per-sample information (dataset ``indices``,
    ``instance_ids``, ``confidences``, given through `set_batch_info` or
    ``forward(indices=...)``) into the single-process global batch
    ``[v_1^0; ...; v_1^{W-1}; v_2^0; ...]`` and mines it, so a miner's bank (PRISMMiner) is
    updated with the global batch, identically on every rank. The returned indices refer to the
    global batch (a `noisy_pml.utils.distributed.GlobalIndices`): give them to a loss
    wrapped in `noisy_pml.utils.distributed.DistributedLossWrapper` with the same
    ``views``, as PML's ``MetricLossOnly`` does.

    Mining against ``ref_emb`` is refused under distribution: PML's ``TwoStreamMetricLoss``, the
    trainer that calls miners that way, shifts the mined indices by the local batch size, which
    is wrong for a global batch; use ``MetricLossOnly`` with the views concatenated instead.

    Args:
        miner: the PML or noisy-pml miner.
        efficient: PML's ``efficient`` mode; only for single-view miners without per-sample
            information.
        views: stacked views per rank; default the miner's own ``views``, else 1.
    """

    def __init__(self, miner, efficient: bool = False, views: int | None = None):
        super().__init__(miner, efficient)
        self.views = resolve_views(miner, views)
        if efficient and self.views > 1:
            raise ValueError(
                "efficient=True compares local rows with the gathered batch and cannot pair views; "
                f"got views={self.views}: use efficient=False"
            )
        self._pending = BatchInfo()

    def set_batch_info(self, indices=None, instance_ids=None, confidences=None) -> None:
        """This rank's per-sample information for the next call."""
        self._pending = BatchInfo(indices, instance_ids, confidences)

    def forward(self, emb, labels, ref_emb=None, ref_labels=None, indices=None):
        info, self._pending = self._pending, BatchInfo()
        if indices is not None and info.indices is not None:
            raise ValueError("indices given both to set_batch_info and to forward: pass one")
        if indices is not None:
            info.indices = indices
        if not is_distributed():
            kwargs = deliver(self.miner, info)
            return self.miner(emb, labels, ref_emb, ref_labels, **kwargs)
        if ref_emb is not None:
            raise ValueError(
                "mining against ref_emb is not supported under torch.distributed: "
                "TwoStreamMetricLoss would shift the global indices by the local batch size; use "
                "MetricLossOnly with the views concatenated ([view_1; view_2]) instead"
            )
        if self.efficient:
            if not info.empty() or self.views > 1:
                raise ValueError("efficient=True supports neither views > 1 nor per-sample "
                                 "information")
            return super().forward(emb, labels)
        table = gather_header(info, emb)
        rows = table[:, 0].tolist()
        if any(r % self.views for r in rows):
            raise ValueError(f"rows per rank {rows} are not all divisible by views={self.views}")
        all_emb = gather_rows(emb, rows, self.views)
        all_labels = gather_rows(labels.to(emb.device), rows, self.views)
        kwargs = deliver(self.miner, gather_info(info, table, self.views, emb.device))
        mined = self.miner(all_emb, all_labels, **kwargs)
        return GlobalIndices(mined, len(all_emb))
