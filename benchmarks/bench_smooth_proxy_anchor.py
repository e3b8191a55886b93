"""Speed and peak memory of SmoothProxyAnchorLoss vs PML's ProxyAnchorLoss and the bare matmul.

Forward + backward of each method on random data, for (B, C, d) in CONFIGS. Timing: one fresh
subprocess per config runs every method round-robin (so load on the shared machine hits all alike)
and reports the median of the repeats. Memory: one fresh subprocess per (config, method) runs one
forward + backward and reports the growth of the process's peak resident set
(``resource.getrusage(...).ru_maxrss``) over the inputs already allocated.

    PYTHONPATH=. python benchmarks/bench_smooth_proxy_anchor.py [--quick] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [(120, 100, 512), (512, 1000, 512), (1024, 11318, 512), (1024, 100000, 128)]
REPEATS = {100: 200, 1000: 25, 11318: 7, 100000: 5}  # many cheap repeats: load spikes
METHODS = ["matmul", "pml", "ours", "ours+conf", "ours+conf negative", "ours+conf unweighted-neg",
           "ours+conf labels"]


def build(method: str, B: int, C: int, d: int):
    """A zero-argument step running forward + backward of ``method``."""
    import torch
    import torch.nn.functional as F
    from pytorch_metric_learning.losses import ProxyAnchorLoss

    from noisy_pml.losses import SmoothProxyAnchorLoss

    torch.manual_seed(0)
    emb = torch.randn(B, d, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    if method.startswith("ours+conf"):  # only here: a transient B x C would hide in maxrss
        # noisy-web-like: one or two confident classes per sample, every other class below the
        # loss's positive threshold (its default smoothing position mu), as a one-vs-all BCE
        # module over many classes gives them
        mu = inspect.signature(SmoothProxyAnchorLoss).parameters["smoothing_position"].default
        conf = torch.rand(B, C).mul_(0.8 * mu)
        conf[torch.arange(B), labels] = 0.5 + 0.5 * torch.rand(B)
        conf[torch.arange(B), torch.randint(0, C, (B,))] = 0.9
    if method == "matmul":
        proxies = torch.nn.Parameter(torch.randn(C, d))
        upstream = torch.randn(B, C)

        def step():
            (F.normalize(emb) @ F.normalize(proxies).T).backward(upstream)
        return step
    if method == "pml":
        loss = ProxyAnchorLoss(C, d)
        return lambda: loss(emb, labels).backward()
    kwargs = {"weighted_negatives": "unweighted" not in method,
              "positive_set": "labels" if method.endswith("labels") else "confidence"}
    if method.endswith("negative"):
        kwargs["unselected"] = "negative"
    loss = SmoothProxyAnchorLoss(C, d, **kwargs)
    if method == "ours":
        return lambda: loss(emb, labels).backward()
    return lambda: loss(emb, labels, confidences=conf).backward()


def child_time(B: int, C: int, d: int, repeats: int) -> dict:
    steps = {m: build(m, B, C, d) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for m in METHODS:  # warm-up
        steps[m]()
    for _ in range(repeats):
        for m in METHODS:
            t0 = time.perf_counter()
            steps[m]()
            times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) * 1000 for m, v in times.items()}


def child_memory(method: str, B: int, C: int, d: int) -> float:
    import gc
    import resource

    build(method, 8, 16, 8)()  # warm up allocator, thread pool and BLAS outside the measurement
    step = build(method, B, C, d)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB -> MiB


def run_child(args: list[str]) -> object:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first two configs only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                              "smooth_proxy_anchor_speed.md"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of every measurement (1: both sides of each ratio "
                             "on one core, the least disturbed by other jobs on a shared CPU)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        kind, *rest = args.child
        if kind == "time":
            B, C, d, r = map(int, rest)
            print(json.dumps(child_time(B, C, d, r)))
        else:
            m, B, C, d = rest[0], *map(int, rest[1:])
            print(json.dumps(child_memory(m, B, C, d)))
        return

    import torch

    rows = []
    for B, C, d in CONFIGS[:2] if args.quick else CONFIGS:
        threads = ["--threads", str(args.threads)]
        t = run_child([*threads, "--child", "time", str(B), str(C), str(d), str(REPEATS[C])])
        mem = {m: run_child([*threads, "--child", "mem", m, str(B), str(C), str(d)])
               for m in METHODS}  # fmt: skip
        rows.append(((B, C, d), t, mem))
        print((B, C, d), t, mem, flush=True)

    lines = [
        "# Smooth Proxy-Anchor: forward + backward speed and peak memory",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), float32, CPU. Command: "
        f"`PYTHONPATH=. python benchmarks/bench_smooth_proxy_anchor.py --threads {args.threads}`.",
        "Time: median of repeats, all methods round-robin in one process per config. Memory: "
        "growth of peak RSS (getrusage ru_maxrss) during one forward + backward, fresh "
        "subprocess per method after a tiny warm-up, inputs already allocated.",
        f"Load average (1 min) at the end of the run: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (shared machine: absolute times are noisy, ratios less so).",
        "`matmul` = normalize + B x C cosine matmul + its backward (the floor); `pml` = "
        "pytorch_metric_learning ProxyAnchorLoss; `ours` = SmoothProxyAnchorLoss without "
        "confidences (= Proxy-Anchor); `ours+conf` = with (B, C) confidences at the loss's "
        "defaults (relabelling, weighted negatives, unselected own-label pairs ignored); "
        "`negative` / `unweighted-neg` / `labels` = the other (R) options.",
        "",
        "| B | C | d | method | time (ms) | vs pml | vs matmul | peak mem (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (B, C, d), t, mem in rows:
        if "error" in t:
            lines.append(f"| {B} | {C} | {d} | all | failed: {t['error']} | | | |")
            continue
        for m in METHODS:
            mm = mem[m] if isinstance(mem[m], float) else "failed"
            mm = f"{mm:.0f}" if isinstance(mm, float) else mm
            lines.append(f"| {B} | {C} | {d} | {m} | {t[m]:.1f} | {t[m] / t['pml']:.2f}x | "
                         f"{t[m] / t['matmul']:.2f}x | {mm} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
