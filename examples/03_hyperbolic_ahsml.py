# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Hyperbolic AHSML: two views, the Poincare head, adaptive thresholds in a PML trainer
#
# Yan et al., "Adaptive Hierarchical Similarity Metric Learning with Noisy Labels" (IEEE TIP
# 2023) replace the fixed thresholds of a pair loss by per-pair thresholds built from two
# noise-insensitive signals:
#
# - **class-wise divergence**: how similar two classes are on average, measured in a hyperbolic
#   embedding (a memory bank holds the latest embedding of every training sample);
# - **sample-wise consistency**: the two augmented views of one image always form a positive pair.
#
# This notebook trains a `PoincareHead` with AHSML on top of PML's `MultiSimilarityLoss`
# (`AdaptiveThresholdLoss`) and with AHSML's own three-term `MultiSimilarityStarLoss`, inside PML's
# `MetricLossOnly` trainer, evaluates with a hyperbolic kNN, and draws classes in the Poincare disk.
# Data: CUB with 30% symmetric noise when `$NOISY_PML_DATA/cub` exists (cached frozen features of
# augmented crops serve as the views), otherwise scikit-learn's digits (shifted copies).

# %%
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

# Quick mode (NOISY_PML_QUICK=1, used by CI) shrinks data and epochs; full mode made the outputs
# you see in the committed notebook.
QUICK = os.environ.get("NOISY_PML_QUICK", "0").lower() not in ("", "0", "false", "no")
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))
T0 = time.perf_counter()
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
print("quick mode" if QUICK else "full mode")


# %%
# Data: CUB-200-2011 when $NOISY_PML_DATA/cub holds it, else scikit-learn's bundled digits.
# `class_subset_features` reads the benchmark's feature cache when `noisy-pml bench --dataset cub`
# has filled it (the numbers the benchmark trains on), else extracts the chosen classes once.
from dataclasses import replace

from noisy_pml.bench.cli import default_data_spec
from noisy_pml.bench.data import DataSpec, class_subset_features

DATA_ROOT = os.environ.get("NOISY_PML_DATA")
CUB_ROOT = Path(DATA_ROOT) / "cub" if DATA_ROOT else None
USE_CUB = CUB_ROOT is not None and (CUB_ROOT / "CUB_200_2011").is_dir()
if USE_CUB:  # the benchmark's sizes: 224 px centre crops, 160 px augmented views
    spec = default_data_spec("cub", aug_views=1)
    n_classes = 10 if QUICK else 100
    if QUICK:
        spec = replace(spec, image_size=128, aug_image_size=128)
    data = class_subset_features(spec, CUB_ROOT, n_classes, n_classes, progress=True)
else:
    data = class_subset_features(DataSpec("digits", aug_views=4), None)


# %%
import logging

logging.getLogger("PML").setLevel(logging.ERROR)

print(data.description)
print(f"train views {tuple(data.train_views.shape)} (image, view, feature), "
      f"ready after {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Two views of every image
#
# A PML dataset whose items are `(view_1, view_2, label, index)`: the same layout as
# `noisy_pml.datasets.TwoViewDataset` on images (weak and strong augmentation), here drawing two
# different cached views of each image. On CUB these are the centre crop and a random resized
# crop with flip (scale 0.2-1) from the benchmark's feature cache; on digits, shifted copies.
# `batch_getter` turns a batch into what `MetricLossOnly` expects (`[view_1; view_2]`,
# labels doubled) and hands the dataset indices to the loss, which keeps its memory bank of
# per-sample embeddings with them.

# %%
from noisy_pml.noise import apply_noise


class CachedTwoViews(torch.utils.data.Dataset):
    """Items (view_a, view_b, label, index): two different cached views of image `index`."""

    def __init__(self, views, labels, seed=0):
        self.views, self.targets = views, labels
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.views)

    def __getitem__(self, i):
        a, b = torch.randperm(self.views.shape[1], generator=self.g)[:2].tolist()
        return self.views[i, a], self.views[i, b], self.targets[i], i


NOISE = "symmetric:0.3"
C = data.num_classes
noise = apply_noise(data.train_labels, NOISE, seed=0, num_classes=C)
train_set = CachedTwoViews(data.train_views, noise.noisy_labels)
print(f"{NOISE}: {int(noise.noise_mask.sum())} of {len(train_set)} labels changed")
D = data.train_views.shape[2]
trunk = torch.nn.Identity()  # frozen backbone, applied once by the feature cache

# %% [markdown]
# ## Training: a PML trainer, a Poincare head, AHSML thresholds
#
# - `PoincareHead(D, 128, c=1)`: Linear -> L2-normalise -> `exp0` (the authors' head). The
#   curvature is a reconstructed choice. At c = 1 the Poincare similarity of points on the
#   head's sphere squashes cosines: a plain PML loss's 0.5 threshold means cosine ~0.95 there.
# - `PoincareSimilarity`: the bounded similarity `1 - 2 tanh^2(sqrt(c) d_c / 2)`; it is a PML
#   distance with `is_inverted=True`, so PML's `MultiSimilarityLoss` accepts it. AHSML's
#   constants (gamma = 0.5, delta = 0.2, the miner's epsilon) are in cosine units and are mapped
#   through c (`PoincareSimilarity.from_cosine`), so gamma = 0.5 means cosine 0.5 at any c: the
#   thresholds printed below are in the Poincare similarity's own units.
# - `AdaptiveThresholdLoss(MultiSimilarityLoss(...))`: the PML loss with its fixed `base` replaced
#   by the per-pair threshold matrix; `MultiSimilarityStarLoss`: AHSML's three-term MS*.
# - The baseline is the same PML loss, same head and trainer, without AHSML.
# - Batches of 64 images (128 embeddings with both views) = 8 classes x 8 images
#   (`MPerClassSampler(m=8)`), so every image has same-class partners in the batch.

# %%
from pytorch_metric_learning.losses import MultiSimilarityLoss
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.trainers import MetricLossOnly

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.losses import AdaptiveThresholdLoss, MultiSimilarityStarLoss
from noisy_pml.models import PoincareHead
from noisy_pml.trainers import batch_getter

EMB, BATCH, EPOCHS = 128, 64, (4 if QUICK else 8)


def train_ahsml(make_loss, seed=0):
    torch.manual_seed(seed)
    head = PoincareHead(D, EMB, c=1.0, mode="normalize")
    loss = make_loss()
    is_ahsml = hasattr(loss, "set_batch_info")
    getter = batch_getter(*([loss] if is_ahsml else []), layout="concat")
    MetricLossOnly(
        models={"trunk": trunk, "embedder": head},
        optimizers={"embedder_optimizer":
                    torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=1e-4)},
        batch_size=BATCH,
        loss_funcs={"metric_loss": loss},
        dataset=train_set,
        sampler=MPerClassSampler(train_set.targets, m=8, length_before_new_iter=len(train_set)),
        data_and_label_getter=getter,
        freeze_these=("trunk",),
        dataloader_num_workers=0,
    ).train(num_epochs=EPOCHS)
    return head


N = len(train_set)
methods = {
    "MS on Poincare (PML, no AHSML)": lambda: MultiSimilarityLoss(
        alpha=2, beta=50, base=0.5, distance=PoincareSimilarity(c=1.0)),
    "AHSML on PML's MS (AdaptiveThresholdLoss)": lambda: AdaptiveThresholdLoss(
        MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=PoincareSimilarity(c=1.0)),
        gamma=0.5, delta=0.2, scope="memory", num_samples=N),
    "AHSML MS* (MultiSimilarityStarLoss)": lambda: MultiSimilarityStarLoss(
        alpha=2, beta=50, base=0.5, delta=0.2, scope="memory", num_samples=N,
        distance=PoincareSimilarity(c=1.0)),
}
heads = {}
for name, make in methods.items():
    heads[name] = train_ahsml(make)
    print(f"{name}: trained, {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Hyperbolic kNN evaluation with PML's tester
#
# The tester must not L2-normalise (points would land on the ball's boundary), and the kNN ranks
# by `PoincareDistance` through `RetrievalAccuracyCalculator(distance=...)` (PML's `CustomKNN`).
# With the authors' head every point lies on one sphere, so hyperbolic ranking equals cosine
# ranking: the geometry changes the loss, not the retrieval.

# %%
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester

from noisy_pml.distances import PoincareDistance
from noisy_pml.utils.accuracy_calculator import RetrievalAccuracyCalculator, evaluate_retrieval

test_set = torch.utils.data.TensorDataset(data.test_feats, data.test_labels)
tester = GlobalEmbeddingSpaceTester(
    normalize_embeddings=False,
    accuracy_calculator=RetrievalAccuracyCalculator(
        distance=PoincareDistance(c=1.0),
        include=("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8",
                 "mean_average_precision_at_r")),
    dataloader_num_workers=0, batch_size=256,
)
rows = {"frozen features (cosine kNN)": evaluate_retrieval(data.test_feats, data.test_labels)}
for name, head in heads.items():
    acc = tester.test({"test": test_set}, 0, trunk, head)["test"]
    rows[name] = {"R@1": acc["recall_at_1_level0"], "R@2": acc["recall_at_2_level0"],
                  "R@4": acc["recall_at_4_level0"], "R@8": acc["recall_at_8_level0"],
                  "MAP@R": acc["mean_average_precision_at_r_level0"]}
print(f"{data.description}, training labels {NOISE}\n")
print(f"{'':44s}" + "".join(f"{k:>8s}" for k in ["R@1", "R@2", "R@4", "R@8", "MAP@R"]))
for name, r in rows.items():
    print(f"{name:44s}" + "".join(f"{v:8.3f}" for v in r.values()))

# %% [markdown]
# ## Inside AHSML: the threshold matrix of one batch
#
# For one batch of two views per image, the thresholds take `M_a` on the augmentation pairs
# (`A`), `M_p(a) = gamma + S_aa` on same-label pairs (`P`) and `M_n(a, b) = gamma - S_ab` on
# different-label pairs (`N`), with the class statistics read from the memory bank.

# %%
from noisy_pml.utils.ahsml import AdaptiveThresholds

head = heads["AHSML on PML's MS (AdaptiveThresholdLoss)"]
thresholds = AdaptiveThresholds(gamma=0.5, delta=0.2, scope="batch")
idx = torch.cat([torch.nonzero(noise.noisy_labels == k).flatten()[:6] for k in range(min(C, 5))])
with torch.no_grad():
    emb = head(torch.cat([data.train_views[idx, 0], data.train_views[idx, 1]]))
res = thresholds(PoincareSimilarity(c=1.0), emb, noise.noisy_labels[idx].repeat(2))
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
im = axes[0].imshow(res.thresholds, cmap="viridis")
axes[0].set_title("threshold T_ij ([view 1; view 2] of 30 images)")
plt.colorbar(im, ax=axes[0])
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

kinds = res.aug_mask.int() + 2 * res.pos_mask.int() + 3 * res.neg_mask.int()
colours = ["white", "tab:orange", "tab:green", "lightgray"]
axes[1].imshow(kinds, cmap=ListedColormap(colours), vmin=0, vmax=3)
pair_types = zip(colours[1:], ["A", "P", "N"], strict=True)
axes[1].legend(handles=[Patch(color=c, label=t) for c, t in pair_types],
               bbox_to_anchor=(1.02, 1), loc="upper left")
axes[1].set_title("pair type")
plt.tight_layout()
plt.show()
for name, m in [("A", res.aug_mask), ("P", res.pos_mask), ("N", res.neg_mask)]:
    print(f"{name}: {int(m.sum())} pairs, thresholds {res.thresholds[m].min():.3f} .. "
          f"{res.thresholds[m].max():.3f}")

# %% [markdown]
# ## Classes in the Poincare disk
#
# The MS* head's 128-d embeddings of the **test** images (classes never seen in training), drawn
# in the Poincare disk: each point is mapped to the tangent space at the origin (`log0`), the
# tangent vectors are projected on their two principal directions (rescaled to keep their mean
# norm), and mapped back into the disk (`exp0`, c = 1). A projection loses much of 128
# dimensions: read it as a picture of how the classes are arranged, not as the retrieval.

# %%
from noisy_pml.utils.hyperbolic import exp0, log0

head = heads["AHSML MS* (MultiSimilarityStarLoss)"]
show = 8  # classes drawn
sel = data.test_labels < show
with torch.no_grad():
    u = log0(head(data.test_feats[sel]), 1.0)  # tangent vectors at the origin
    centred = u - u.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    u2 = centred @ vh[:2].T
    u2 = u2 * (u.norm(dim=1).mean() / u2.norm(dim=1).mean())
    z2 = exp0(u2, 1.0)
fig, ax = plt.subplots(figsize=(7.5, 6))
ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k"))
cmap = plt.get_cmap("tab10")
for k in range(show):
    m = data.test_labels[sel] == k
    ax.scatter(*z2[m].T, s=8, color=cmap(k), alpha=0.7, label=f"test class {k}")
ax.set_xlim(-1.05, 1.05)
ax.set_ylim(-1.05, 1.05)
ax.set_aspect("equal")
ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
ax.set_title("AHSML (MS*) embeddings of unseen classes, tangent-space PCA in the Poincare disk")
plt.show()

# %%
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
