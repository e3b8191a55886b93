"""PNG contact sheet of the most suspicious samples: thumbnail, given vs suggested label."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .label_issues import LabelIssue


def contact_sheet(
    dataset: torch.utils.data.Dataset,
    issues: Sequence[LabelIssue],
    path: str | os.PathLike,
    num: int = 36,
    columns: int = 6,
    class_names: Sequence[str] | None = None,
    noise_mask: torch.Tensor | None = None,
    thumb_inches: float = 1.9,
) -> Path:
    """Save a grid of the first ``num`` issues: image, "given -> suggested" and the score.

    Images come from ``issue.path`` when it is a file, else from ``dataset.load_sample(i)`` or
    ``dataset[i][0]`` (tensors are shown min-max scaled). With ``noise_mask`` (injected noise),
    titles are green for truly mislabelled samples and red for clean ones.
    """
    # a bare Figure (no pyplot): drawing never switches the caller's backend (e.g. a notebook's)
    from matplotlib.figure import Figure

    issues = list(issues)[:num]
    if not issues:
        raise ValueError("contact_sheet got no issues to draw; expected at least one")
    rows = math.ceil(len(issues) / columns)
    fig = Figure(figsize=(columns * thumb_inches, rows * (thumb_inches + 0.35)))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, issue in zip(axes.flat, issues, strict=False):
        ax.imshow(_thumbnail(dataset, issue), cmap="gray", interpolation="nearest")

        def name(c):
            return class_names[c] if class_names is not None else str(c)

        color = "black"
        if noise_mask is not None:
            color = "tab:green" if bool(noise_mask[issue.index]) else "tab:red"
        ax.set_title(f"#{issue.rank} given {_short(name(issue.given_label))}\n"
                     f"-> {_short(name(issue.suggested_label))}  ({issue.score:.2f})",
                     fontsize=7, color=color)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _short(text: str, n: int = 20) -> str:
    """Display form of a class name: "001.Black_footed_Albatross" -> "Black footed Albatross"."""
    text = re.sub(r"^\d+\.", "", text).replace("_", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def _thumbnail(dataset, issue: LabelIssue) -> np.ndarray:
    if issue.path is not None and os.path.isfile(issue.path):
        from PIL import Image

        with Image.open(issue.path) as im:
            im = im.convert("RGB")
            im.thumbnail((160, 160))
            return np.asarray(im)
    if hasattr(dataset, "load_sample"):
        sample = dataset.load_sample(issue.index)
    else:
        sample = dataset[issue.index][0]
    if not isinstance(sample, torch.Tensor):  # a PIL image
        return np.asarray(sample.convert("RGB"))
    x = sample.detach().float().cpu()
    if x.dim() == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)
    if x.dim() == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.dim() == 1:  # a feature vector: show it as a square if it is one
        side = math.isqrt(len(x))
        x = x[: side * side].view(side, side)
    lo, hi = x.min(), x.max()
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).numpy()
