"""DistributedLossWrapper under torch.distributed (gloo, 2 CPU processes) equals one process."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.losses import ProxyAnchorLoss
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper as PMLDistributedLossWrapper,
)

from noisy_pml.losses import SmoothProxyAnchorLoss
from noisy_pml.utils.distributed import DistributedLossWrapper

WORLD, B, C, D_IN, D = 2, 12, 5, 6, 4


def _setup():
    torch.manual_seed(0)
    x = torch.randn(WORLD * B, D_IN, dtype=torch.float64)
    labels = torch.randint(0, C, (WORLD * B,))
    conf = torch.rand(WORLD * B, C, dtype=torch.float64)
    model = torch.nn.Linear(D_IN, D).double()
    loss = SmoothProxyAnchorLoss(C, D).double()
    pml = ProxyAnchorLoss(C, D).double()
    pml.proxies.data.copy_(loss.proxies.data)
    return x, labels, conf, model, loss, pml


def _grads(model, loss_fn, x, labels, wrap=None, **kw):
    model.zero_grad(), loss_fn.zero_grad()
    fn = wrap(loss_fn) if wrap else loss_fn
    emb = model(x)
    emb.retain_grad()
    value = fn(emb, labels, **kw)
    value.backward()
    weight = getattr(model, "module", model).weight
    return [value.detach(), weight.grad.clone(), loss_fn.proxies.grad.clone(), emb.grad]


def _worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    x, labels, conf, model, loss, pml = _setup()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    part = slice(rank * B, (rank + 1) * B)
    ours = _grads(ddp, loss, x[part], labels[part], DistributedLossWrapper, confidences=conf[part])
    theirs = _grads(ddp, pml, x[part], labels[part], PMLDistributedLossWrapper)
    if rank == 0:
        torch.save({"ours": ours, "pml": theirs}, out_file)
    dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_global_batch():
    x, labels, conf, model, loss, pml = _setup()
    single = _grads(model, loss, x, labels, confidences=conf)
    single_pml = _grads(model, pml, x, labels)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), out), nprocs=WORLD)
        got = torch.load(out)
    # ours: global-batch loss, DDP-averaged model gradient and proxy gradient all match;
    # rank 0's local embeddings get world_size x their rows of the single-process gradient,
    # which DDP's averaging over ranks turns into the single-process model gradient
    for a, b in zip(got["ours"][:3], single[:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["ours"][3], WORLD * single[3][:B], rtol=1e-10, atol=1e-12)
    # PML's wrapper: model gradient right, proxy gradient world_size times too large
    torch.testing.assert_close(got["pml"][1], single_pml[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["pml"][2], WORLD * single_pml[2], rtol=1e-10, atol=1e-12)


def test_without_a_process_group_it_is_the_plain_loss():
    x, labels, conf, model, loss, _ = _setup()
    want = _grads(model, loss, x, labels, confidences=conf)
    got = _grads(model, loss, x, labels, DistributedLossWrapper, confidences=conf)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
