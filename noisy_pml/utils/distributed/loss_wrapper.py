"""PML's DistributedLossWrapper with single-process gradients, views and per-sample information.

PML's wrapper all-gathers the embeddings (other ranks' without gradient, its own rank first),
computes the loss on that batch and returns ``loss * world_size``, so that after DDP averages
the model gradients they equal a single process's on the global batch. Every rank, however, sees
all embeddings, so a loss's own parameters (the proxies of Proxy-Anchor) receive ``world_size``
times the single-process gradient; two-view batches come out as
``[v_1^0; v_2^0; v_1^1; v_2^1]`` (views of different images paired); and per-sample
information (dataset indices for a memory bank, confidences) is not gathered at all.

This wrapper gathers in the single-process order on every rank (see
`noisy_pml.utils.distributed.gather`), scales only the gradient flowing back into the
local embeddings by ``world_size`` and returns the unscaled global-batch loss: model gradients
(after DDP averaging), the loss's parameters' gradients, the loss value and every bank or
statistic the loss keeps equal the single-process run on the concatenated batch.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.utils import distributed as pml_dist
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from .batch_info import BatchInfo, deliver, gather_header, gather_info, resolve_views
from .gather import all_gather_ints, comm_device, gather_rows, is_distributed


class GlobalIndices(tuple):
    """An indices tuple over the gathered global batch (what `DistributedMinerWrapper`
    returns), with the number of rows it refers to."""

    num_rows: int

    def __new__(cls, indices, num_rows: int):
        out = super().__new__(cls, indices)
        out.num_rows = int(num_rows)
        return out


class DistributedLossWrapper(pml_dist.DistributedLossWrapper):
    """Drop-in for ``pytorch_metric_learning.utils.distributed.DistributedLossWrapper``.

    Differences from PML's wrapper:

    - the global batch is in the single-process order on every rank, view by view:
      ``[v_1^0; ...; v_1^{W-1}; v_2^0; ...]`` for ``views`` stacked blocks per rank;
    - loss parameters (proxies) get the single-process gradient (PML: ``world_size`` x); local
      embeddings get ``world_size`` x theirs, which DDP's averaging turns into the
      single-process model gradient; the returned value is the global-batch loss (PML:
      ``world_size`` x it);
    - per-sample information given through `set_batch_info` (dataset ``indices``,
      ``instance_ids``, ``confidences``), ``forward(confidences=...)`` or the loss's
      ``confidence_source`` is gathered in the same order and handed to the loss, so a memory
      bank is updated with the global batch, identically on every rank;
    - ``indices_tuple`` must come from `DistributedMinerWrapper` (global rows) or be
      the cross-view triplets PML's ``TwoStreamMetricLoss`` builds when it has no miner (then
      the global batch's cross-view triplets replace them); local indices of any other origin
      are refused, since they cannot name another rank's rows.

    Confidences by index: with ``confidence_table`` (the (N, C) table of
    `noisy_pml.trainers.ConfidenceTable`, identical on every rank, see
    `noisy_pml.utils.distributed.broadcast_confidences`), only the dataset ``indices``
    (``set_batch_info(indices=...)``) are gathered and every rank reads the global batch's rows
    from its own table: ``8 B`` bytes per step instead of ``4 B C`` (PML-sized batches at
    C = 100k classes make the difference between kilobytes and gigabytes).

    Args:
        loss: the PML or noisy-pml loss.
        efficient: PML's ``efficient`` mode (local rows against the gathered batch); only for
            single-view losses without per-sample information.
        views: stacked views per rank; default the loss's own ``views`` (MS*, AdaptiveThreshold
            loss), else 1. A value that contradicts the loss's own is refused.
        confidence_table: optional (N, C) confidences looked up by the gathered indices
            (replaces the loss's ``confidence_source``; needs ``indices`` at every call).
    """

    def __init__(self, loss, efficient: bool = False, views: int | None = None,
                 confidence_table: torch.Tensor | None = None):
        super().__init__(loss, efficient)
        self.views = resolve_views(loss, views)
        if efficient and self.views > 1:
            raise ValueError(
                "efficient=True compares local rows with the gathered batch and cannot pair views; "
                f"got views={self.views}: use efficient=False"
            )
        if confidence_table is not None and confidence_table.dim() != 2:
            raise ValueError(
                f"confidence_table must be (N, C), got shape {tuple(confidence_table.shape)}"
            )
        self.confidence_table = confidence_table
        # with a table the wrapper consumes the indices; the loss gets them only if it takes them
        self._optional = ("indices",) if confidence_table is not None else ()
        self._pending = BatchInfo()

    def set_batch_info(self, indices=None, instance_ids=None, confidences=None) -> None:
        """This rank's per-sample information for the next call."""
        self._pending = BatchInfo(indices, instance_ids, confidences)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None,
                enqueue_mask=None, confidences=None):
        info, self._pending = self._pending, BatchInfo()
        if confidences is not None and info.confidences is not None:
            raise ValueError("confidences given both to set_batch_info and to forward: pass one")
        if confidences is not None:
            info.confidences = confidences
        source = getattr(self.loss, "confidence_source", None)
        if self.confidence_table is not None:
            if info.indices is None or info.confidences is not None:
                raise ValueError(
                    "confidence_table looks the confidences up by dataset index: call "
                    "set_batch_info(indices=...) before each call, and pass no confidences"
                )
        elif info.confidences is None and source is not None:
            info.confidences = source()
        if not is_distributed():
            kwargs = deliver(self.loss, self._look_up(info, len(embeddings)), self._optional)
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels, **kwargs)
        if self.efficient or isinstance(self.loss, pml_dist.CrossBatchMemory):
            if not info.empty() or self.views > 1:
                raise ValueError(
                    "efficient=True and CrossBatchMemory support neither views > 1 nor per-sample "
                    f"information (got views={self.views}, fields "
                    f"{[k for k, v in vars(info).items() if v is not None]})"
                )
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels,
                                   enqueue_mask)
        if ref_emb is not None and self.views > 1:
            raise ValueError("ref_emb is not supported with views > 1")
        world = torch.distributed.get_world_size()
        table = gather_header(info, embeddings)
        rows = table[:, 0].tolist()
        if any(r % self.views for r in rows):
            raise ValueError(f"rows per rank {rows} are not all divisible by views={self.views}")
        emb = gather_rows(embeddings, rows, self.views, grad_scale=world)
        labels = None if labels is None else gather_rows(labels.to(embeddings.device), rows,
                                                         self.views)
        if ref_emb is not None:
            ref_rows = all_gather_ints([len(ref_emb)], comm_device(ref_emb))[:, 0].tolist()
            ref_emb = gather_rows(ref_emb, ref_rows, 1, grad_scale=world)
            ref_labels = None if ref_labels is None else gather_rows(ref_labels, ref_rows, 1)
        indices_tuple = self._global_indices(indices_tuple, table, labels, len(emb))
        info = self._look_up(gather_info(info, table, self.views, embeddings.device), len(emb))
        kwargs = deliver(self.loss, info, self._optional)
        return self.loss(emb, labels, indices_tuple, ref_emb, ref_labels, **kwargs)

    def _look_up(self, info: BatchInfo, rows: int) -> BatchInfo:
        """With ``confidence_table``: the rows of the batch's indices (one per row) as
        confidences, which replace the indices (the loss needs no table of its own)."""
        if self.confidence_table is None:
            return info
        idx = torch.as_tensor(info.indices).long()
        if len(idx) != rows:  # one index per image: the same images in every view block
            idx = idx.repeat(self.views)
        table = self.confidence_table.to(idx.device)
        return BatchInfo(None, info.instance_ids, table[idx])

    def _global_indices(self, indices_tuple, table, global_labels, num_rows):
        """Global rows for ``indices_tuple`` (see the class docstring), or ValueError."""
        if indices_tuple is None:
            return None
        if isinstance(indices_tuple, GlobalIndices):
            if indices_tuple.num_rows != num_rows:
                raise ValueError(
                    f"indices_tuple refers to a global batch of {indices_tuple.num_rows} rows, "
                    f"but the loss gathered {num_rows}"
                )
            return tuple(indices_tuple)
        local_rows = int(table[torch.distributed.get_rank(), 0])
        if self.views == 2 and _is_two_stream_triplets(indices_tuple, local_rows, global_labels,
                                                      table):
            half = num_rows // 2
            first = global_labels[:half]  # a clone as ref: TwoStream keeps the i-i pairs
            a, p, n = lmu.get_all_triplets_indices(first, first.clone())
            return a, p + half, n + half
        raise ValueError(
            "indices_tuple holds this rank's local row indices, which cannot name the rows of "
            "other ranks in the gathered batch: wrap the miner in "
            "noisy_pml.utils.distributed.DistributedMinerWrapper (its output refers to the global "
            "batch), or pass no indices_tuple"
        )


def _is_two_stream_triplets(indices_tuple, local_rows, global_labels, table) -> bool:
    """Whether ``indices_tuple`` is what TwoStreamMetricLoss passes without a miner: every
    (view-1 anchor, view-2 positive, view-2 negative) triplet of this rank's batch."""
    if len(indices_tuple) != 3:
        return False
    rank, half = torch.distributed.get_rank(), local_rows // 2
    start = int(table[:rank, 0].sum()) // 2
    labels = global_labels[start:start + half]  # this rank's view-1 labels
    a, p, n = lmu.get_all_triplets_indices(labels, labels.clone())
    expected = (a, p + half, n + half)
    return all(
        torch.equal(torch.as_tensor(x, device=e.device), e)
        for x, e in zip(indices_tuple, expected, strict=True)
    )
