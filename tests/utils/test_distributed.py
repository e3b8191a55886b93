"""noisy_pml.utils.distributed under torch.distributed (gloo, 2 CPU processes, float64): every
stateful component, wrapped, trained 3 SGD steps with DDP on the global batch split over the
ranks, gives the losses, gradients, banks and parameters of one process on the concatenated
batch. The processes are spawned once for the module; the single-process references run here."""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import ContrastiveLoss, MultiSimilarityLoss, ProxyAnchorLoss
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper as PMLDistributedLossWrapper,
)

from noisy_pml.losses import AdaptiveThresholdLoss, MultiSimilarityStarLoss, SmoothProxyAnchorLoss
from noisy_pml.miners import NoiseAwarePairMiner, PRISMMiner
from noisy_pml.trainers import ConfidenceTable
from noisy_pml.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
    broadcast_confidences,
    distributed_confidence_table,
    gather_rows,
)

WORLD, N_DATA, C, D_IN, D, STEPS, BATCH = 2, 16, 4, 6, 4, 3, 8
TOL = {"rtol": 1e-9, "atol": 1e-12}
# how the 8 images of a global batch are split over the 2 ranks: (rank 0's count, label order)
SPLITS = {"mixed": (4, "random"), "disjoint": (4, "sorted"), "uneven": (3, "random")}


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_DATA, D_IN, generator=g, dtype=torch.float64)
    x2 = x + 0.1 * torch.randn(N_DATA, D_IN, generator=g, dtype=torch.float64)  # second view
    labels = torch.arange(N_DATA) % C
    conf = torch.rand(N_DATA, C, generator=g, dtype=torch.float64)
    return x, x2, labels, conf


def _batches(split: str) -> list[tuple[torch.Tensor, int]]:
    """Per step: the global batch's dataset indices and rank 0's number of images. "sorted"
    gives the ranks disjoint label sets (rank 0 classes {0, 1}, rank 1 classes {2, 3})."""
    first, order = SPLITS[split]
    g = torch.Generator().manual_seed(2)
    out = []
    for _ in range(STEPS):
        if order == "sorted":  # two images of each class, by class
            per_class = N_DATA // C
            idx = torch.cat([k + C * torch.randperm(per_class, generator=g)[:2] for k in range(C)])
        else:
            idx = torch.randperm(N_DATA, generator=g)[:BATCH]
        out.append((idx, first))
    return out


# --- the components, each as (views, build) with build() -> (model-free parts, step fn) ---------

class _Net(torch.nn.Module):
    """Linear, then 0.45 tanh: every embedding stays inside the Poincare ball (norm < 0.9)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(D_IN, D)

    def forward(self, x):
        return 0.45 * torch.tanh(self.fc(x))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return _Net().double()


def _pair_loss_step(miner, loss):
    def step(emb, labels, idx, conf):
        miner.set_batch_info(indices=idx)
        return loss(emb, labels, miner(emb, labels))
    return [miner, loss], step


def _prism():
    miner = DistributedMinerWrapper(PRISMMiner(N_DATA, C, warmup=0.0, min_class_size=1,
                                               noise_rate=0.25))
    loss = DistributedLossWrapper(ContrastiveLoss(pos_margin=0.9, neg_margin=0.3,
                                                  distance=CosineSimilarity()))
    return _pair_loss_step(miner, loss)


def _napm_class_stats():
    miner = DistributedMinerWrapper(NoiseAwarePairMiner(margin=0.05, max_drop_fraction=0.3))
    loss = DistributedLossWrapper(MultiSimilarityLoss(), views=2)
    return _pair_loss_step(miner, loss)


def _napm_confidence():
    inner = NoiseAwarePairMiner(criterion="confidence", confidence_threshold=0.4)
    inner.set_sample_confidences(_data()[3][:, 0])
    miner = DistributedMinerWrapper(inner)
    loss = DistributedLossWrapper(MultiSimilarityLoss(), views=2)
    return _pair_loss_step(miner, loss)


def _napm_instance_ids():
    """Instance ids given explicitly (here each image's dataset index, one per row)."""
    miner = DistributedMinerWrapper(NoiseAwarePairMiner(margin=0.05, max_drop_fraction=0.3))
    loss = DistributedLossWrapper(MultiSimilarityLoss(), views=2)

    def step(emb, labels, idx, conf):
        miner.set_batch_info(instance_ids=idx.repeat(2))
        return loss(emb, labels, miner(emb, labels))
    return [miner, loss], step


def _ms_instance_ids():
    """MS* memory scope with per-row indices and explicit instance ids."""
    loss = DistributedLossWrapper(_ms("memory"))

    def step(emb, labels, idx, conf):
        loss.set_batch_info(indices=idx.repeat(2), instance_ids=idx.repeat(2))
        return loss(emb, labels)
    return [loss], step


def _banked_loss(inner, two_stream=False):
    loss = DistributedLossWrapper(inner)

    def step(emb, labels, idx, conf):
        loss.set_batch_info(indices=idx)
        triplets = None
        if two_stream:  # what TwoStreamMetricLoss passes without a miner (its own batch)
            half = len(emb) // 2
            a, p, n = lmu.get_all_triplets_indices(labels[:half], labels[:half].clone())
            triplets = (a, p + half, n + half)
        return loss(emb, labels, triplets)
    return [loss], step


def _smooth_pa():
    table = ConfidenceTable(_data()[3])
    loss = DistributedLossWrapper(SmoothProxyAnchorLoss(C, D, confidence_source=table))

    def step(emb, labels, idx, conf):
        table.data_and_label_getter((None, labels, idx))
        return loss(emb, labels)
    return [loss], step


def _smooth_pa_by_index():
    """Only the indices are gathered; every rank reads its own copy of the table."""
    loss = DistributedLossWrapper(SmoothProxyAnchorLoss(C, D), confidence_table=_data()[3])

    def step(emb, labels, idx, conf):
        loss.set_batch_info(indices=idx)
        return loss(emb, labels)
    return [loss], step


def _pml_loss_with_ref():
    """A PML loss called with ref_emb (view 1 as queries, view 2 as references)."""
    loss = DistributedLossWrapper(ContrastiveLoss(distance=CosineSimilarity()))

    def step(emb, labels, idx, conf):
        half = len(emb) // 2
        return loss(emb[:half], labels[:half], None, emb[half:], labels[half:])
    return [loss], step


def _ms(scope):
    return MultiSimilarityStarLoss(scope=scope, num_samples=N_DATA)


def _atl(scope):
    return AdaptiveThresholdLoss(ContrastiveLoss(distance=CosineSimilarity()), scope=scope,
                                 num_samples=N_DATA)


COMPONENTS: dict[str, tuple[int, Callable]] = {
    "prism_miner": (1, _prism),
    "noise_aware_pair_miner_class_stats": (2, _napm_class_stats),
    "noise_aware_pair_miner_confidence": (2, _napm_confidence),
    "noise_aware_pair_miner_instance_ids": (2, _napm_instance_ids),
    "ms_star_memory": (2, lambda: _banked_loss(_ms("memory"))),
    "ms_star_memory_instance_ids": (2, _ms_instance_ids),
    "ms_star_batch": (2, lambda: _banked_loss(_ms("batch"))),
    "ms_star_memory_two_stream": (2, lambda: _banked_loss(_ms("memory"), two_stream=True)),
    "adaptive_threshold_memory": (2, lambda: _banked_loss(_atl("memory"))),
    "adaptive_threshold_batch": (2, lambda: _banked_loss(_atl("batch"))),
    "smooth_proxy_anchor": (1, _smooth_pa),
    "smooth_proxy_anchor_table_by_index": (1, _smooth_pa_by_index),
    "pml_contrastive_with_ref_emb": (2, _pml_loss_with_ref),
}


def _train(name: str, split: str, rank: int | None = None) -> dict:
    """3 SGD steps; ``rank=None``: one process on the whole batch, else DDP on rank's part."""
    views, build = COMPONENTS[name]
    x, x2, labels, conf = _data()
    model = _model()
    net = model if rank is None else torch.nn.parallel.DistributedDataParallel(model)
    parts, step = build()
    params = list(model.parameters()) + [p for m in parts for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.5)
    out = {"loss": [], "grads": []}
    for idx, first in _batches(split):
        if rank is not None:
            idx = idx[:first] if rank == 0 else idx[first:]
        inputs = torch.cat([x[idx], x2[idx]]) if views == 2 else x[idx]
        opt.zero_grad()
        value = step(net(inputs), labels[idx].repeat(views), idx, conf[idx])
        value.backward()
        out["loss"].append(value.detach())
        out["grads"].append([p.grad.clone() for p in params if p.grad is not None])
    out["params"] = [p.detach().clone() for p in params]
    out["state"] = [{k: v.clone() for k, v in m.state_dict().items()} for m in parts]
    return out


# --- the worker: every scenario, then the refusals and the confidence broadcast ----------------

def _gathered_order(rank):
    """Row tags 100 rank + 10 view + image of a two-view batch (rank 0: 2 images, rank 1: 3)."""
    images = 2 + rank
    tags = torch.tensor([100 * rank + 10 * v + i for v in range(2) for i in range(images)])
    return gather_rows(tags, [4, 6], views=2)


def _pml_proxy_grads(rank):
    """PML's own wrapper, for the contrast: proxies get world_size x the gradient."""
    x, _, labels, _ = _data()
    model, pml = _model(), ProxyAnchorLoss(C, D).double()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    part = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    PMLDistributedLossWrapper(pml)(ddp(x[:BATCH][part]), labels[:BATCH][part]).backward()
    return pml.proxies.grad.clone()


def _refusals(rank) -> dict[str, str]:
    """The message each combination a wrapper cannot handle raises (or "" if none)."""
    x, x2, labels, _ = _data()
    emb = torch.cat([x[:4], x2[:4]]) if rank == 0 else torch.cat([x[4:8], x2[4:8]])
    lab = labels[:4].repeat(2) if rank == 0 else labels[4:8].repeat(2)
    cases = {
        "local_indices_tuple": lambda: DistributedLossWrapper(MultiSimilarityLoss(), views=2)(
            emb, lab, lmu.get_all_pairs_indices(lab)),
        "miner_ref_emb": lambda: DistributedMinerWrapper(NoiseAwarePairMiner())(
            emb[:4], lab[:4], emb[4:], lab[4:]),
        "fields_on_one_rank_only": lambda: _fields_on_rank0_only(emb, lab, rank),
        "field_the_loss_cannot_take": lambda: _wrapped_call(
            DistributedLossWrapper(ContrastiveLoss()), emb, lab, confidences=torch.rand(8, C)),
    }
    out = {}
    for key, fn in cases.items():
        try:
            fn()
            out[key] = ""
        except ValueError as e:
            out[key] = str(e)
    return out


def _fields_on_rank0_only(emb, lab, rank):
    loss = DistributedLossWrapper(_ms("memory"))
    if rank == 0:
        loss.set_batch_info(indices=torch.arange(4))
    return loss(emb, lab)


def _wrapped_call(loss, emb, lab, **info):
    loss.set_batch_info(**info)
    return loss(emb, lab)


def _broadcast(rank) -> dict:
    calls = []

    def compute():
        calls.append(rank)
        return torch.rand(N_DATA, C, generator=torch.Generator().manual_seed(10 + rank))

    table = broadcast_confidences(compute)
    wrapped = distributed_confidence_table(compute, src=1)
    return {"table": table, "calls": calls, "wrapped": wrapped.confidences}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    out = {"runs": {}}
    for name in COMPONENTS:
        for split in SPLITS:
            try:  # one failing scenario fails its own test, not the module
                out["runs"][name, split] = _train(name, split, rank)
            except Exception as e:  # noqa: BLE001
                out["runs"][name, split] = f"rank {rank}: {type(e).__name__}: {e}"
    out["order"] = _gathered_order(rank)
    out["pml_proxy_grad"] = _pml_proxy_grads(rank)
    out["refusals"] = _refusals(rank)
    out["broadcast"] = _broadcast(rank)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]


def _assert_same(got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            _assert_same(got[k], want[k])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_same(a, b)
    else:
        torch.testing.assert_close(got, want, **TOL, equal_nan=True)


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("name", list(COMPONENTS))
def test_every_rank_matches_one_process_over_three_steps(ranks, name, split):
    want = _train(name, split)
    assert any(len(g) for g in want["grads"])  # something was trained
    for got in ranks:
        if isinstance(got["runs"][name, split], str):
            pytest.fail(got["runs"][name, split])
        _assert_same(got["runs"][name, split]["loss"], want["loss"])
        _assert_same(got["runs"][name, split]["grads"], want["grads"])
        _assert_same(got["runs"][name, split]["state"], want["state"])  # banks, statistics
        _assert_same(got["runs"][name, split]["params"], want["params"])


def test_two_view_batches_are_gathered_view_by_view_in_rank_order(ranks):
    # [v1 of rank 0; v1 of rank 1; v2 of rank 0; v2 of rank 1], not PML's
    # [own rank's v1; own v2; other ranks' v1; v2] (issue #13, item 10)
    want = torch.tensor([0, 1, 100, 101, 102, 10, 11, 110, 111, 112])
    for got in ranks:
        assert torch.equal(got["order"], want)


def test_pml_wrapper_gives_proxies_world_size_times_the_gradient(ranks):
    x, _, labels, _ = _data()
    model, pml = _model(), ProxyAnchorLoss(C, D).double()  # the worker's order of creation
    pml(model(x[:BATCH]), labels[:BATCH]).backward()
    torch.testing.assert_close(ranks[0]["pml_proxy_grad"], WORLD * pml.proxies.grad, **TOL)


@pytest.mark.parametrize("case, words", [
    ("local_indices_tuple", "DistributedMinerWrapper"),
    ("miner_ref_emb", "ref_emb"),
    ("fields_on_one_rank_only", "indices was given on some ranks"),
    ("field_the_loss_cannot_take", "takes no per-sample confidences"),
])
def test_a_combination_the_wrappers_cannot_handle_is_refused_on_every_rank(ranks, case, words):
    for got in ranks:
        assert words in got["refusals"][case]


def test_confidence_table_is_computed_on_one_rank_and_broadcast(ranks):
    rank0 = torch.rand(N_DATA, C, generator=torch.Generator().manual_seed(10))
    rank1 = torch.rand(N_DATA, C, generator=torch.Generator().manual_seed(11))
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["broadcast"]["table"], rank0, rtol=0, atol=0)
        torch.testing.assert_close(got["broadcast"]["wrapped"], rank1, rtol=0, atol=0)
        assert got["broadcast"]["calls"] == [r]  # rank 0 computed the first, rank 1 the second


def test_views_contradicting_the_components_own_are_refused():
    with pytest.raises(ValueError, match="stacks views=2"):
        DistributedLossWrapper(_ms("batch"), views=1)
    with pytest.raises(ValueError, match="stacks views=2"):
        DistributedMinerWrapper(NoiseAwarePairMiner(), views=3)
    with pytest.raises(ValueError, match="cannot pair views; got views=2"):
        DistributedLossWrapper(_ms("memory"), efficient=True)


def test_without_a_process_group_the_wrappers_are_the_plain_components():
    x, x2, labels, _ = _data()
    emb, lab, idx = _model()(torch.cat([x[:8], x2[:8]])), labels[:8].repeat(2), torch.arange(8)
    plain, wrapped = _ms("memory"), _ms("memory")
    plain.set_batch_info(indices=idx)
    loss = DistributedLossWrapper(wrapped)
    loss.set_batch_info(indices=idx)
    torch.testing.assert_close(loss(emb, lab), plain(emb, lab), rtol=0, atol=0)
    _assert_same(wrapped.state_dict(), plain.state_dict())
    miner, plain_miner = PRISMMiner(N_DATA, C, warmup=0.0), PRISMMiner(N_DATA, C, warmup=0.0)
    got = DistributedMinerWrapper(miner)(emb[:8], lab[:8], indices=idx)
    for a, b in zip(got, plain_miner(emb[:8], lab[:8], indices=idx), strict=True):
        assert torch.equal(a, b)
    _assert_same(miner.state_dict(), plain_miner.state_dict())


class _NewStyle(torch.nn.Module):
    def set_batch_info(self, indices=None, instance_ids=None, confidences=None):
        self.got = {"indices": indices, "instance_ids": instance_ids, "confidences": confidences}

    def forward(self, embeddings, labels):
        return self.got


class _ForwardOnly(torch.nn.Module):
    def forward(self, embeddings, labels, indices=None):
        return indices


def test_batch_info_reaches_set_batch_info_or_forward():
    from noisy_pml.utils.distributed.batch_info import BatchInfo, deliver

    idx, ids = torch.arange(4), torch.tensor([0, 1, 0, 1])
    new = _NewStyle()
    assert deliver(new, BatchInfo(idx, ids)) == {}
    assert new.got["indices"] is idx and new.got["instance_ids"] is ids
    ms = _ms("memory")
    emb = 0.1 * torch.randn(8, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="dataset index"):  # memory scope needs the indices
        ms(emb, torch.arange(4).repeat(2))
    deliver(ms, BatchInfo(idx))
    assert torch.isfinite(ms(emb, torch.arange(4).repeat(2)))
    assert deliver(_ForwardOnly(), BatchInfo(idx)) == {"indices": idx}  # forward(indices=)
    with pytest.raises(ValueError, match="_ForwardOnly takes no per-sample instance_ids"):
        deliver(_ForwardOnly(), BatchInfo(idx, ids))
    # indices without a table to look them up in: the loss itself refuses them
    with pytest.raises(ValueError, match="needs confidence_source"):
        _wrapped_call(DistributedLossWrapper(SmoothProxyAnchorLoss(C, D)), torch.randn(4, D),
                      torch.arange(4), indices=idx)
