"""Wall time of one epoch with 1 vs 2 gloo processes on this CPU, same global batch.

A PML-trainer-free training loop: a two-layer MLP embedder on synthetic frozen features
(N = 4096 samples, 512-d, 100 classes), SGD, global batch B = 256 images (128 per rank with two
processes), one epoch = N / B = 16 steps. Methods: Proxy-Anchor (PML's loss, our wrapper),
Smooth Proxy-Anchor with its confidence table looked up by the gathered indices, and
MS* in memory scope (PoincareHead, two views, so 512 embedding rows a step, bank of N samples). Two
processes run DDP with ``noisy_pml.utils.distributed`` wrappers; one process runs the same
wrappers without a process group. ``torch.set_num_threads(1)`` in every process, so 1 process
uses one core and 2 processes two (the machine has 2 shared cores). Also timed: the all-gather
of one step's embeddings alone, to separate communication from computation.

Epoch times are medians over ``--epochs`` epochs after one warm-up epoch, the configurations
interleaved round by round (robust to load drift on a shared machine). Prints the ratios and
writes the table into benchmarks/results/distributed_scaling.md (between the markers).

    PYTHONPATH=. python benchmarks/bench_distributed.py [--epochs 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.losses import ProxyAnchorLoss

from noisy_pml.losses import MultiSimilarityStarLoss, SmoothProxyAnchorLoss
from noisy_pml.models import PoincareHead
from noisy_pml.utils.distributed import DistributedLossWrapper, gather_rows

N, D_IN, HIDDEN, D, C, B = 4096, 512, 512, 128, 100, 256
METHODS = ("proxy_anchor", "smooth_proxy_anchor", "ms_star_memory")
OUT = Path(__file__).parent / "results" / "distributed_scaling.md"
START, END = "<!-- measured:start -->", "<!-- measured:end -->"


def _data():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % C
    means = torch.randn(C, D_IN, generator=g)
    x = means[labels] + 2 * torch.randn(N, D_IN, generator=g)
    x2 = x + 0.3 * torch.randn(N, D_IN, generator=g)  # a second view for MS*
    conf = torch.rand(N, C, generator=g)
    return x, x2, labels, conf


def _setup(method: str, conf: torch.Tensor):
    torch.manual_seed(0)
    head = PoincareHead(HIDDEN, D) if method == "ms_star_memory" else torch.nn.Linear(HIDDEN, D)
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), head)
    if method == "proxy_anchor":
        loss, views = DistributedLossWrapper(ProxyAnchorLoss(C, D)), 1
    elif method == "smooth_proxy_anchor":
        loss = DistributedLossWrapper(SmoothProxyAnchorLoss(C, D), confidence_table=conf)
        views = 1
    else:  # hyperbolic, as AHSML: PoincareHead maps into the ball
        loss, views = DistributedLossWrapper(MultiSimilarityStarLoss(num_samples=N)), 2
    return model, loss, views


def _epoch_times(rank: int, world: int, method: str, epochs: int) -> list[float]:
    x, x2, labels, conf = _data()
    model, loss, views = _setup(method, conf)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.01)
    local = B // world
    times = []
    for epoch in range(epochs + 1):  # epoch 0: warm-up
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))
        if world > 1:
            dist.barrier()
        t = time.perf_counter()
        for step in range(N // B):
            idx = perm[step * B:(step + 1) * B][rank * local:(rank + 1) * local]
            inputs = torch.cat([x[idx], x2[idx]]) if views == 2 else x[idx]
            emb = net(inputs)
            if method != "proxy_anchor":  # PML's loss takes no per-sample information
                loss.set_batch_info(indices=idx)
            opt.zero_grad()
            loss(emb, labels[idx].repeat(views)).backward()
            opt.step()
        if epoch:
            times.append(time.perf_counter() - t)
    return times


def _gather_time(rank: int, repeats: int = 50) -> float:
    """Median time of one all-gather of a step's embeddings (128 x 128 float32 per rank)."""
    emb = torch.randn(B // 2, D)
    out = []
    for _ in range(repeats + 5):
        t = time.perf_counter()
        gather_rows(emb, [B // 2] * 2)
        out.append(time.perf_counter() - t)
    return statistics.median(out[5:])


def _worker(rank: int, world: int, method: str, epochs: int, tmp: str):
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank,
                                world_size=world)
    res = {"times": _epoch_times(rank, world, method, epochs)}
    if world > 1:
        res["gather"] = _gather_time(rank)
        dist.barrier()  # nobody tears gloo down while the other rank is still in a collective
        dist.destroy_process_group()
    if rank == 0:
        torch.save(res, f"{tmp}/out.pt")


def run(world: int, method: str, epochs: int, attempts: int = 2) -> dict:
    for attempt in range(attempts):  # a process killed by the shared machine: run again
        with tempfile.TemporaryDirectory() as tmp:
            try:
                mp.spawn(_worker, args=(world, method, epochs, tmp), nprocs=world)
                return torch.load(os.path.join(tmp, "out.pt"))
            except mp.ProcessExitedException as e:
                if attempt + 1 == attempts:
                    raise
                print(f"retrying {method} with {world} process(es) after: {e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    times = {(m, w): [] for m in methods for w in (1, 2)}
    gathers = []
    for r in range(args.rounds):
        for m in methods:
            for w in (1, 2):
                res = run(w, m, args.epochs)
                times[m, w] += res["times"]
                gathers += [res["gather"]] if "gather" in res else []
                med = statistics.median(res["times"])
                print(f"round {r} {m:22s} {w} process(es): epoch {med:.3f} s", flush=True)
    rows = []
    for m in methods:
        one, two = statistics.median(times[m, 1]), statistics.median(times[m, 2])
        rows.append(f"| {m} | {one:.3f} | {two:.3f} | {one / two:.2f}x |")
        print(f"{m}: 1 process {one:.3f} s, 2 processes {two:.3f} s, speed-up {one / two:.2f}x")
    gather_ms = 1e3 * statistics.median(gathers)
    print(f"all-gather of {B // 2} x {D} float32 per rank: {gather_ms:.2f} ms (median)")
    load = os.getloadavg()[0]
    table = "\n".join([
        START,
        f"torch {torch.__version__}, gloo, 1 thread per process; {args.rounds} rounds x "
        f"{args.epochs} epochs per configuration, medians; load average at the end {load:.1f} "
        f"on 2 cores; `PYTHONPATH=. python benchmarks/bench_distributed.py --epochs "
        f"{args.epochs} --rounds {args.rounds}`.",
        "",
        f"One epoch = {N // B} steps of a global batch of {B} images (N = {N}, {D_IN}-d "
        f"features, MLP {D_IN}-{HIDDEN}-{D}, C = {C}).",
        "",
        "| method | 1 process (s / epoch) | 2 processes (s / epoch) | speed-up |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"All-gather of one step's embeddings ({B // 2} x {D} float32 per rank, gloo over "
        f"localhost): {gather_ms:.2f} ms (median of {len(gathers)} runs' medians).",
        END,
    ])
    text = OUT.read_text() if OUT.exists() else f"# Distributed scaling\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    OUT.write_text(head + table + rest.split(END, 1)[1])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
