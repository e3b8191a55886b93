"""PML's DistributedLossWrapper with single-process gradients for a loss's own parameters.

PML's wrapper all-gathers the embeddings (other ranks' without gradient), computes the loss on the
global batch and returns ``loss * world_size``, so that after DDP averages the model gradients
they equal a single process's on the global batch. Every rank, however, sees all embeddings, so
a loss's own parameters (the proxies of Proxy-Anchor) receive ``world_size`` times the
single-process gradient. This wrapper instead scales only the gradient flowing back into the
local embeddings by ``world_size`` and returns the unscaled global-batch loss: model gradients
(after DDP averaging) and proxy gradients both equal the single-process run.

It also all-gathers per-sample confidences for
[`SmoothProxyAnchorLoss`][noisy_pml.losses.SmoothProxyAnchorLoss]
(passed as ``confidences=`` or read from the loss's ``confidence_source``), in the same order as
the embeddings.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.utils import distributed as pml_dist


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class DistributedLossWrapper(pml_dist.DistributedLossWrapper):
    """Drop-in for ``pytorch_metric_learning.utils.distributed.DistributedLossWrapper``.

    Differences: proxies and other loss parameters get the single-process gradient (not
    ``world_size`` x it); the returned value is the global-batch loss (PML returns it times
    ``world_size``); ``confidences`` are gathered alongside the embeddings. Local embeddings
    receive ``world_size`` x the single-process gradient, which DDP's averaging turns into the
    single-process model gradient, as with PML. ``efficient=True`` and CrossBatchMemory behave as
    in PML.
    """

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None,
                enqueue_mask=None, confidences=None):
        has_conf = confidences is not None or getattr(self.loss, "confidence_source", None)
        if has_conf and confidences is None:
            confidences = self.loss.confidence_source()
        kwargs = {"confidences": confidences} if has_conf else {}
        if not pml_dist.is_distributed() or torch.distributed.get_world_size() <= 1:
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels, **kwargs)
        if self.efficient or isinstance(self.loss, pml_dist.CrossBatchMemory):
            if has_conf:
                raise ValueError("confidences need efficient=False and a non-CrossBatchMemory loss")
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels,
                                   enqueue_mask)
        world_size = torch.distributed.get_world_size()
        emb = _ScaleGrad.apply(embeddings, float(world_size))
        all_emb, all_labels, all_ref_emb, all_ref_labels, _ = pml_dist.gather_emb_and_ref(
            emb, labels, ref_emb, ref_labels
        )
        if has_conf:
            conf = confidences.to(embeddings.device)
            kwargs["confidences"] = torch.cat([conf, pml_dist.all_gather(conf)], dim=0)
        return self.loss(all_emb, all_labels, indices_tuple, all_ref_emb, all_ref_labels, **kwargs)
