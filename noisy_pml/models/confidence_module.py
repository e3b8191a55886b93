"""Confidence module of Smooth Proxy-Anchor (Roig et al. 2020): per-class sigmoid confidences."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.checks import check_finite, check_labels, check_ndim, check_positive, check_rate


class ConfidenceModule(torch.nn.Module):
    r"""Phase-1 head on frozen backbone features: one sigmoid confidence per class.

    C. Roig et al., "Smooth Proxy-Anchor Loss for Noisy Metric Learning", arXiv:2006.05142.
    ``forward`` returns logits $z\in\mathbb{R}^{C}$; the confidences are
    $c(x, p) = \sigma(z_p)$ (``confidences``). Trained with binary cross-entropy against
    the one-hot noisy label ([`ConfidenceBCELoss`][]), so classes do not compete (not a softmax).

    (R) architecture: ``Linear(in_features, hidden) -> ReLU -> Dropout(dropout) ->
    Linear(hidden, num_classes)`` with hidden = 512; ``hidden=None`` is a single Linear.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int | None = 512, dropout: float = 0.5
    ):
        super().__init__()
        check_positive("in_features", in_features)
        check_positive("num_classes", num_classes)
        check_rate("dropout", dropout)
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        if hidden is None:
            self.net = torch.nn.Linear(in_features, num_classes)
        else:
            check_positive("hidden", hidden)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(in_features, hidden),
                torch.nn.ReLU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, num_classes),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of the per-class confidences.

        Raises:
            TypeError: ``features`` not a floating tensor.
            ValueError: ``features`` not (B, in_features), or holding NaN/inf values.
        """
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            got = features.dtype if isinstance(features, torch.Tensor) else type(features).__name__
            raise TypeError(f"features must be a floating-point tensor, got {got}")
        check_ndim("features", features, 2)
        if features.shape[1] != self.in_features:
            raise ValueError(
                f"features must have {self.in_features} columns, got shape {tuple(features.shape)}"
            )
        check_finite("features", features)
        return self.net(features)

    @torch.no_grad()
    def confidences(self, features: torch.Tensor) -> torch.Tensor:
        """c(x, p) = sigmoid(logits) in [0, 1], shape (B, num_classes), without gradient."""
        return torch.sigmoid(self(features))


class ConfidenceBCELoss(torch.nn.Module):
    r"""Binary cross-entropy of confidence logits against the one-hot (noisy) labels.

    $L = -\frac{1}{BC}\sum_{x,p} y_{xp}\log\sigma(z_{xp}) + (1-y_{xp})\log(1-\sigma(z_{xp}))$
    with $y = \mathrm{onehot}(label)$; the phase-1 ``classifier_loss`` of a PML trainer.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        check_positive("num_classes", num_classes)
        self.num_classes = int(num_classes)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean BCE; an empty batch gives 0 (as PML's losses), not the NaN of an empty mean.

        Raises:
            TypeError: non-floating logits or non-integer labels.
            ValueError: logits not (B, num_classes) or non-finite; labels out of range.
        """
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TypeError(f"logits must be a floating-point tensor, got {got}")
        check_ndim("logits", logits, 2)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have {self.num_classes} columns, got shape {tuple(logits.shape)}"
            )
        check_finite("logits", logits)
        check_labels("labels", labels, self.num_classes, length=len(logits))
        if len(logits) == 0:
            return logits.sum() * 0
        target = F.one_hot(labels.to(logits.device), self.num_classes).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target)
