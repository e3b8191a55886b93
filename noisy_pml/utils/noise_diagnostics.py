"""Label-noise diagnostics from per-class confidences: a score per sample, AUROC, precision-recall.

The confidence module of Smooth Proxy-Anchor (Roig et al., arXiv:2006.05142) fits clean structure
before it memorises noise, so a low confidence for the given label flags a likely wrong label.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from .checks import check_labels, check_ndim, check_probabilities


def label_noise_scores(confidences: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Score 1 - c(x, y) per sample: how likely the given (noisy) label y is wrong, in [0, 1]."""
    check_ndim("confidences", confidences, 2)
    check_probabilities("confidences", confidences, confidences.shape)
    labels = torch.as_tensor(labels)
    check_labels("labels", labels, confidences.shape[1], length=confidences.shape[0])
    return 1 - confidences.gather(1, labels.to(confidences.device)[:, None]).squeeze(1)


def _as_numpy(scores, noise_mask) -> tuple[np.ndarray, np.ndarray]:
    s = torch.as_tensor(scores).detach().cpu().double()
    m = torch.as_tensor(noise_mask).detach().cpu()
    check_ndim("scores", s, 1)
    check_ndim("noise_mask", m, 1)
    if len(s) != len(m):
        raise ValueError(f"scores has {len(s)} entries, noise_mask has {len(m)}; expected equal")
    if not torch.isfinite(s).all():
        raise ValueError("scores contains NaN or infinite values; expected finite values")
    m = m.bool()
    if m.all() or not m.any():
        raise ValueError(
            "noise_mask must hold both noisy and clean samples, "
            f"got {int(m.sum())} noisy of {len(m)}"
        )
    return s.numpy(), m.numpy()


def noise_detection_metrics(scores: torch.Tensor, noise_mask: torch.Tensor) -> dict[str, float]:
    """AUROC and average precision of ``scores`` for the injected-noise mask (True = noisy).

    Returns ``{"auroc", "average_precision", "noise_rate"}``; a random score has AUROC 0.5 and
    average precision equal to the noise rate.
    """
    s, m = _as_numpy(scores, noise_mask)
    return {
        "auroc": float(roc_auc_score(m, s)),
        "average_precision": float(average_precision_score(m, s)),
        "noise_rate": float(m.mean()),
    }


def noise_precision_recall_curve(
    scores: torch.Tensor, noise_mask: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) of flagging samples with score >= threshold as noisy."""
    s, m = _as_numpy(scores, noise_mask)
    return precision_recall_curve(m, s)
