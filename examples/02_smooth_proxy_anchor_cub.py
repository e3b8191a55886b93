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
# # Smooth Proxy-Anchor end to end with PML's trainers and testers
#
# Roig et al., "Smooth Proxy-Anchor Loss for Noisy Metric Learning" (arXiv:2006.05142) keep the
# ImageNet backbone **frozen** and train in two phases:
#
# 1. a **confidence module** (one sigmoid per class, BCE against the noisy labels) on the frozen
#    features;
# 2. the **embedding**, with Proxy-Anchor terms weighted by a smoothed confidence
#    `S(c) = sigmoid(k (c - mu))` and positives selected by `c >= tau` (relabelling). The loss's
#    defaults are mu = tau = 0.1, the benchmark's choice on validation classes (see the end).
#
# Here both phases run on PML's shipped trainers (`TrainWithClassifier`, `MetricLossOnly`) and are
# evaluated with PML's `GlobalEmbeddingSpaceTester`. Data: CUB-200-2011 with 30% symmetric label
# noise injected into the training classes, when `$NOISY_PML_DATA/cub` exists; otherwise
# scikit-learn's digits. Because the backbone is frozen, its features are extracted once (with the
# benchmark's feature cache) and the PML `trunk` is `Identity` on them: the same models dict as
# `{"trunk": frozen_backbone, ...}` on images, minus the repeated forward passes.

# %%
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
    spec = default_data_spec("cub", aug_views=0)
    n_classes = 10 if QUICK else 100
    if QUICK:
        spec = replace(spec, image_size=128, aug_image_size=128)
    data = class_subset_features(spec, CUB_ROOT, n_classes, n_classes, progress=True)
else:
    data = class_subset_features(DataSpec("digits", aug_views=0), None)


# %%
import logging

logging.getLogger("PML").setLevel(logging.ERROR)  # PML trainers log every epoch

print(data.description)
print(f"train {tuple(data.train_views.shape)}, test {tuple(data.test_feats.shape)}, "
      f"features ready after {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Inject label noise
#
# `apply_noise` replaces a fraction of the training labels by another training class (seeded;
# the mask of changed labels is kept for the diagnostics). The test classes stay clean.

# %%
from noisy_pml.noise import apply_noise

NOISE = "symmetric:0.3"
features = data.train_views[:, 0]
clean_labels, C = data.train_labels, data.num_classes
noise = apply_noise(clean_labels, NOISE, seed=0, num_classes=C)
noisy_labels, noise_mask = noise.noisy_labels, noise.noise_mask
print(f"{NOISE}: {int(noise_mask.sum())} of {len(noisy_labels)} training labels changed "
      f"(rate {noise.rate:.3f})")

train_set = torch.utils.data.TensorDataset(features, noisy_labels)
trunk = torch.nn.Identity()  # the frozen backbone, already applied by the feature cache
D = features.shape[1]

# %% [markdown]
# ## Phase 1: the confidence module, with PML's `TrainWithClassifier`
#
# `confidence_trainer` builds `TrainWithClassifier(models={"trunk", "classifier"})` with the
# trunk frozen, `ConfidenceBCELoss` as the classifier loss, Adam, and early stopping on a held-out
# slice of the *noisy* training data (no clean labels are used anywhere in training).

# %%
from noisy_pml.models import ConfidenceModule
from noisy_pml.trainers import compute_confidences, confidence_trainer, split_held_out

torch.manual_seed(0)
conf_module = ConfidenceModule(D, C, hidden=512, dropout=0.5)
fit_part, held_out = split_held_out(train_set, fraction=0.1, seed=0)
trainer = confidence_trainer(trunk, conf_module, fit_part, batch_size=64, lr=1e-3,
                             held_out=held_out, patience=2, dataloader_num_workers=0)
trainer.train(num_epochs=15 if QUICK else 30)
stopper = trainer.end_of_epoch_hook
print(f"phase 1: {len(stopper.history)} epochs, held-out BCE per epoch:",
      [round(v, 4) for v in stopper.history])

confidences = compute_confidences(trunk, conf_module, train_set)  # (N, C), dataset order
print("confidence table", tuple(confidences.shape))

# %% [markdown]
# ## Noise diagnostics
#
# The score `1 - c(x, y_noisy)` flags likely mislabelled samples. Since we injected the noise we
# know the truth: AUROC 0.5 is chance, 1.0 a perfect detector.

# %%
from noisy_pml.utils.noise_diagnostics import (
    label_noise_scores,
    noise_detection_metrics,
    noise_precision_recall_curve,
)

scores = label_noise_scores(confidences, noisy_labels)
det = noise_detection_metrics(scores, noise_mask)
print({k: round(v, 3) for k, v in det.items()})

c_given = 1 - scores
precision, recall, _ = noise_precision_recall_curve(scores, noise_mask)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
bins = np.linspace(0, 1, 41)
axes[0].hist(c_given[~noise_mask].numpy(), bins=bins, alpha=0.6, label="correct label")
axes[0].hist(c_given[noise_mask].numpy(), bins=bins, alpha=0.6, label="injected wrong label")
axes[0].set_xlabel("confidence for the given label, c(x, y)")
axes[0].set_ylabel("training samples")
axes[0].set_yscale("log")
axes[0].legend()
axes[0].set_title(f"noise detection AUROC {det['auroc']:.3f}")
axes[1].plot(recall, precision)
axes[1].axhline(det["noise_rate"], ls="--", c="gray", label="chance")
axes[1].set_xlabel("recall of mislabelled samples")
axes[1].set_ylabel("precision")
axes[1].set_title(f"average precision {det['average_precision']:.3f}")
axes[1].legend()
plt.tight_layout()
plt.show()


# %%
def show_sample(ax, data, i, title):
    """Draw training sample i: the CUB image, or the 8x8 digit."""
    if USE_CUB:
        from PIL import Image

        with Image.open(data.train_paths[i]) as im:
            ax.imshow(im.convert("RGB"))
    else:
        ax.imshow(data.train_views[i, 0].view(8, 8), cmap="gray_r")
    ax.set_title(title, fontsize=8)
    ax.axis("off")

# the training samples the confidence module finds most likely mislabelled
top = torch.argsort(scores, descending=True)[:12]
fig, axes = plt.subplots(2, 6, figsize=(13, 5))
for ax, i in zip(axes.flat, top.tolist(), strict=True):
    verdict = "injected" if noise_mask[i] else "not injected"
    show_sample(ax, data, i, f"label {int(noisy_labels[i])}, true {int(clean_labels[i])}\n"
                             f"c={float(c_given[i]):.2f} ({verdict})")
plt.suptitle("12 samples with the highest label-noise score")
plt.tight_layout()
plt.show()
print(f"{int(noise_mask[top].sum())} of the 12 were injected noise")

# %% [markdown]
# ## Phase 2: the embedding, with PML's `MetricLossOnly`
#
# PML trainers call `loss(embeddings, labels, indices_tuple)` only, so the batch's confidences
# travel through a side channel: `embedding_trainer` wraps the dataset in `IndexedDataset` (items
# `(x, label, index)`), gives the trainer the `ConfidenceTable`'s `data_and_label_getter` (which
# remembers the batch's indices) and sets the table as the loss's `confidence_source`.
#
# We compare, on the same noisy labels, PML's `ProxyAnchorLoss` and `SmoothProxyAnchorLoss`, and
# report the untrained features (cosine kNN) as the floor.

# %%
from pytorch_metric_learning.losses import ProxyAnchorLoss
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester
from pytorch_metric_learning.trainers import MetricLossOnly

from noisy_pml.losses import SmoothProxyAnchorLoss
from noisy_pml.trainers import ConfidenceTable, embedding_trainer
from noisy_pml.utils.accuracy_calculator import RetrievalAccuracyCalculator

EMB, EPOCHS, BATCH = 512, (8 if QUICK else 20), 120
test_set = torch.utils.data.TensorDataset(data.test_feats, data.test_labels)
tester = GlobalEmbeddingSpaceTester(
    accuracy_calculator=RetrievalAccuracyCalculator(
        include=("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8",
                 "mean_average_precision_at_r")),
    dataloader_num_workers=0, batch_size=256,
)


def evaluate(embedder):
    acc = tester.test({"test": test_set}, 0, trunk, embedder)["test"]
    return {"R@1": acc["recall_at_1_level0"], "R@2": acc["recall_at_2_level0"],
            "R@4": acc["recall_at_4_level0"], "R@8": acc["recall_at_8_level0"],
            "MAP@R": acc["mean_average_precision_at_r_level0"]}


def make_embedder():
    torch.manual_seed(0)
    return torch.nn.Linear(D, EMB)


results = {"frozen features (no training)": evaluate(torch.nn.Identity())}

# Proxy-Anchor: PML's loss and trainer, nothing from noisy-pml
embedder = make_embedder()
pa = ProxyAnchorLoss(C, EMB, margin=0.1, alpha=32)
MetricLossOnly(
    models={"trunk": trunk, "embedder": embedder},
    optimizers={
        "embedder_optimizer": torch.optim.AdamW(embedder.parameters(), 1e-4, weight_decay=1e-4),
        "metric_loss_optimizer": torch.optim.AdamW(pa.parameters(), 1e-2, weight_decay=1e-4)},
    batch_size=BATCH, loss_funcs={"metric_loss": pa}, dataset=train_set,
    freeze_these=("trunk",), dataloader_num_workers=0,
).train(num_epochs=EPOCHS)
results["Proxy-Anchor (PML)"] = evaluate(embedder)

# Smooth Proxy-Anchor: same embedder, optimisers and epochs; confidences from phase 1
embedder = make_embedder()
# defaults: smoothing_position mu = 0.1 (chosen on validation classes), positive_threshold tau = mu
spa = SmoothProxyAnchorLoss(C, EMB, margin=0.1, alpha=32, smoothing_sharpness=10.0)
table = ConfidenceTable(confidences)
embedding_trainer(trunk, embedder, spa, train_set, table, batch_size=BATCH, lr=1e-4,
                  weight_decay=1e-4, proxy_lr_multiplier=100.0,
                  dataloader_num_workers=0).train(num_epochs=EPOCHS)
results["Smooth Proxy-Anchor"] = evaluate(embedder)
print(f"phase 2 done after {time.perf_counter() - T0:.0f} s")

# %%
print(f"{data.description}, training labels {NOISE}\n")
print(f"{'':32s}" + "".join(f"{k:>8s}" for k in ["R@1", "R@2", "R@4", "R@8", "MAP@R"]))
for name, r in results.items():
    print(f"{name:32s}" + "".join(f"{v:8.3f}" for v in r.values()))

fig, ax = plt.subplots(figsize=(6, 2.5))
names = list(results)
ax.barh(names, [results[n]["R@1"] for n in names])
for i, n in enumerate(names):
    ax.text(results[n]["R@1"], i, f" {results[n]['R@1']:.3f}", va="center")
ax.set_xlabel("R@1 on the test classes")
ax.set_xlim(0, 1)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to read from this: one seed, one noise rate, a frozen backbone and a linear head; the
# benchmark (notebook 4 and the documentation's "Which method when") repeats it over seeds, noise
# types and rates.
#
# ## Relabelling: whose positive is each sample?
#
# With `positive_set="confidence"` a sample is a positive of every proxy `p` with
# `c(x, p) >= tau` (here the default tau = mu = 0.1), whatever its label. For the samples whose
# label we corrupted, this is where Smooth Proxy-Anchor can undo the damage. For comparison the
# cell also counts what tau = 0.5, the spec's first reconstruction, would select:

# %%
rows = torch.arange(len(confidences))
for tau in (spa.positive_threshold, 0.5):
    pos = confidences >= tau  # X_p^+ membership of every training sample
    print(f"tau = {tau}" + (" (the loss's default)" if tau == spa.positive_threshold else ""))
    for group, m in [("correct label", ~noise_mask), ("injected wrong label", noise_mask)]:
        print(f"  {group:22s} ({int(m.sum()):5d} samples): positive for the given label "
              f"{pos[rows, noisy_labels][m].float().mean():.1%}, for the true class "
              f"{pos[rows, clean_labels][m].float().mean():.1%}, for no class "
              f"{(pos.sum(1) == 0)[m].float().mean():.1%}")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# How to read this: relabelling can only help where the confidence module is confident. When a
# large share of the *correctly* labelled samples is positive for no class (their confidence for
# their own class is below tau), those samples drop out of the positive term and the loss sees
# less signal than Proxy-Anchor. Compare the two blocks printed above: the share of correctly
# labelled samples that are positive for no class at tau = 0.5 against the default tau = 0.1.
#
# This is why the default is mu = tau = 0.1. These are reconstructed choices, marked (R); the
# benchmark ablates them. Its verdict (`benchmarks/results/README.md`): on the validation classes
# of both CUB and Cars196 `smoothing_position = 0.1` (tau = mu) was chosen over 0.2 and 0.5, and
# with mu = 0.5 (the spec's first reconstruction) Smooth Proxy-Anchor fell *below* Proxy-Anchor on
# CUB at 50 % noise (54.1 vs 54.6 R@1), because this one-vs-all BCE confidence module over 100
# classes rarely gives a clean sample c >= 0.5 (7 % of the clean samples at 50 % noise), so
# almost no positives are selected; relabelling beat `positive_set="labels"` in every ablation
# run. If your confidences are calibrated (softmax-like, or few classes), a higher mu may suit;
# if many correct samples are still positive for no class, lower `smoothing_position` (tau
# follows it) or use `positive_set="labels"` (weights only, no relabelling).
