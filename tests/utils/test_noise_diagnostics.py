"""Noise diagnostics: the score is 1 - c(x, y); AUROC / AP agree with their definitions."""

from __future__ import annotations

import pytest
import torch

from noisy_pml.utils.noise_diagnostics import (
    label_noise_scores,
    noise_detection_metrics,
    noise_precision_recall_curve,
)


def test_score_is_one_minus_confidence_of_the_given_label():
    c = torch.tensor([[0.9, 0.1], [0.3, 0.8]])
    scores = label_noise_scores(c, torch.tensor([0, 0]))
    torch.testing.assert_close(scores, torch.tensor([0.1, 0.7]))


def test_perfect_scores_give_auroc_and_ap_of_one():
    mask = torch.tensor([True, False, False, True, False])
    out = noise_detection_metrics(mask.float() * 0.8 + 0.1, mask)
    assert out == {"auroc": 1.0, "average_precision": 1.0, "noise_rate": 0.4}


def test_auroc_is_the_probability_a_noisy_sample_outscores_a_clean_one():
    scores, mask = torch.rand(200), torch.rand(200) < 0.3
    pairs = (scores[mask][:, None] > scores[~mask][None, :]).double().mean().item()
    assert noise_detection_metrics(scores, mask)["auroc"] == pytest.approx(pairs)


def test_precision_recall_curve_ends_at_full_recall_and_noise_rate():
    mask = torch.tensor([True, False, True, False, False, False])
    precision, recall, thresholds = noise_precision_recall_curve(torch.rand(6), mask)
    assert recall[0] == 1.0 and precision[0] == pytest.approx(2 / 6)
    assert len(thresholds) == len(precision) - 1


@pytest.mark.parametrize(
    "scores,mask,match",
    [
        (torch.rand(4), torch.tensor([True, False, True]), "entries"),
        (torch.rand(3), torch.tensor([False, False, False]), "both"),
        (torch.tensor([0.1, float("nan"), 0.2]), torch.tensor([True, False, True]), "NaN"),
    ],
)
def test_bad_input_raises(scores, mask, match):
    with pytest.raises(ValueError, match=match):
        noise_detection_metrics(scores, mask)


def test_bad_confidences_or_labels_raise():
    with pytest.raises(ValueError, match="labels"):
        label_noise_scores(torch.rand(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="confidences"):
        label_noise_scores(torch.rand(3, 2) + 1, torch.tensor([0, 1, 1]))
