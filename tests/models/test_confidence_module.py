"""ConfidenceModule: per-class sigmoid confidences trained with BCE on one-hot labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from noisy_pml.models import ConfidenceBCELoss, ConfidenceModule


def test_confidences_are_sigmoid_of_logits_per_class():
    module = ConfidenceModule(6, 4).eval()
    x = torch.randn(5, 6)
    c = module.confidences(x)
    torch.testing.assert_close(c, torch.sigmoid(module(x)))
    assert c.shape == (5, 4) and not c.requires_grad
    assert not torch.allclose(c.sum(1), torch.ones(5))  # independent sigmoids, not a softmax


def test_single_linear_variant():
    module = ConfidenceModule(6, 4, hidden=None)
    assert isinstance(module.net, torch.nn.Linear)


def test_bce_loss_is_binary_cross_entropy_against_one_hot():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    target = F.one_hot(labels, 3).float()
    expected = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(ConfidenceBCELoss(3)(logits, labels), expected)


def test_training_separates_the_true_class():
    torch.manual_seed(0)
    x, labels = torch.randn(60, 2), torch.arange(60) % 3
    x = x + 4 * F.one_hot(labels, 3).float()[:, :2] - 2 * (labels == 2).float()[:, None]
    module = ConfidenceModule(2, 3, hidden=16, dropout=0.0)
    opt, loss_fn = torch.optim.Adam(module.parameters(), 1e-2), ConfidenceBCELoss(3)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(module(x), labels).backward()
        opt.step()
    c = module.confidences(x)
    assert (c.argmax(1) == labels).float().mean() > 0.95


def test_bad_input_raises():
    with pytest.raises(ValueError, match="features"):
        ConfidenceModule(6, 4)(torch.randn(5, 7))
    with pytest.raises(ValueError, match="labels"):
        ConfidenceBCELoss(3)(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="dropout"):
        ConfidenceModule(6, 4, dropout=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_rejected(bad):
    x = torch.randn(4, 6)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="features contains 1 NaN or infinite"):
        ConfidenceModule(6, 3)(x)
    with pytest.raises(ValueError, match="features contains"):
        ConfidenceModule(6, 3).confidences(x)
    with pytest.raises(TypeError, match="floating-point"):
        ConfidenceModule(6, 3)(torch.ones(4, 6, dtype=torch.long))


def test_bce_loss_of_an_empty_batch_is_zero_not_nan():
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = ConfidenceBCELoss(3)(logits, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(TypeError, match="floating-point"):
        ConfidenceBCELoss(3)(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="3 columns"):
        ConfidenceBCELoss(3)(torch.zeros(2, 4), torch.tensor([0, 1]))
