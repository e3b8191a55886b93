"""Fine-tuning and feature-extraction throughput: channels_last (the benchmark's path) against
the previous contiguous-NCHW path, in the same process, interleaved, so machine load hits both.

    python benchmarks/bench_throughput.py [--backbone efficientnet_lite0] [--image-size 128]
        [--batch 60] [--steps 5] [--threads 1]

Prints images per second of each path and their ratio, for
- fine-tuning: forward + backward of the backbone in train mode with BatchNorm frozen (as
  ``noisy-pml bench --protocol finetune`` runs it), and
- feature extraction: inference-mode forward (as the frozen protocol's cache is built).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from noisy_pml.bench.finetune import freeze_batchnorm
from noisy_pml.models.backbones import build_backbone


def _step(model, x, train: bool) -> None:
    if train:
        model.train()
        freeze_batchnorm(model)
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    else:
        model.eval()
        with torch.inference_mode():
            model(x)


def measure(name: str, image_size: int, batch: int, steps: int, train: bool) -> dict:
    """Seconds per batch of both memory formats, alternating one step of each."""
    nchw, _ = build_backbone(name, image_size)
    nhwc, _ = build_backbone(name, image_size)
    nhwc.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, image_size, image_size)
    x_last = x.contiguous(memory_format=torch.channels_last)
    for m, inp in ((nchw, x), (nhwc, x_last)):  # warm-up
        _step(m, inp, train)
    times: dict[str, list[float]] = {"nchw (previous)": [], "channels_last": []}
    for _ in range(steps):
        for key, m, inp in (("nchw (previous)", nchw, x), ("channels_last", nhwc, x_last)):
            t0 = time.perf_counter()
            _step(m, inp, train)
            times[key].append(time.perf_counter() - t0)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--extract-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.backbone}, batch {a.batch}, {a.threads} thread(s), median of {a.steps} steps")
    print("| path | fine-tuning fwd+bwd img/s | feature extraction img/s |")
    print("|---|---|---|")
    ft = measure(a.backbone, a.image_size, a.batch, a.steps, train=True)
    ex = measure(a.backbone, a.extract_size, a.batch, a.steps, train=False)
    for key in ft:
        row = f"| {key} | {ft[key]:.1f} ({a.image_size} px) | {ex[key]:.1f} ({a.extract_size} px) |"
        print(row)
    r_ft = ft["channels_last"] / ft["nchw (previous)"]
    r_ex = ex["channels_last"] / ex["nchw (previous)"]
    print(f"| ratio | {r_ft:.2f}x | {r_ex:.2f}x |")


if __name__ == "__main__":
    main()
