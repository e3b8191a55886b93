"""Two-phase Smooth Proxy-Anchor through PML's TrainWithClassifier / MetricLossOnly and tester."""

from __future__ import annotations

import logging

import pytest
import torch
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from noisy_pml.datasets import Digits
from noisy_pml.losses import SmoothProxyAnchorLoss
from noisy_pml.models import ConfidenceModule
from noisy_pml.trainers import (
    ConfidenceTable,
    IndexedDataset,
    compute_confidences,
    confidence_trainer,
    embedding_trainer,
    split_held_out,
)
from noisy_pml.utils.noise_diagnostics import label_noise_scores, noise_detection_metrics

logging.getLogger("PML").setLevel(logging.WARNING)
QUIET = {"dataloader_num_workers": 0, "data_device": torch.device("cpu")}


def _precision_at_1(trunk, embedder, dataset):
    tester = GlobalEmbeddingSpaceTester(
        dataloader_num_workers=0, data_device=torch.device("cpu"),
        accuracy_calculator=AccuracyCalculator(include=("precision_at_1",), k=5),
    )
    acc = tester.test({"test": dataset}, 1, trunk, embedder)
    return acc["test"]["precision_at_1_level0"]


def test_two_phase_run_with_pml_trainers_and_tester():
    train = Digits("train", noise="symmetric:0.3")
    test = Digits("test")
    trunk = torch.nn.Flatten()  # frozen "backbone": pixels as features
    # phase 1: confidence module with BCE, PML's TrainWithClassifier, early stopping
    module = ConfidenceModule(64, train.num_classes, hidden=64, dropout=0.1)
    fit, held_out = split_held_out(train, 0.1)
    phase1 = confidence_trainer(trunk, module, fit, batch_size=64, lr=1e-2, held_out=held_out,
                                **QUIET)
    phase1.train(num_epochs=15)
    table = ConfidenceTable(compute_confidences(trunk, module, train))
    # confidences flag the injected noise (far better than chance)
    scores = label_noise_scores(table.confidences, train.targets)
    assert noise_detection_metrics(scores, train.noise_mask)["auroc"] > 0.85
    # phase 2: embedder trained by MetricLossOnly; confidences arrive through the table
    torch.manual_seed(0)
    embedder = torch.nn.Linear(64, 16)
    # 5 classes: the BCE confidences of clean samples clear mu = 0.5, the thresholds this run is
    # calibrated on (the default 0.1 was chosen for 100+ classes)
    loss = SmoothProxyAnchorLoss(train.num_classes, 16, smoothing_position=0.5, collect_stats=True)
    history = []
    trainer = embedding_trainer(
        trunk, embedder, loss, train, table, batch_size=64, lr=1e-3,
        end_of_iteration_hook=lambda t: history.append(t.losses["metric_loss"].item()), **QUIET,
    )
    trainer.train(num_epochs=3)
    assert sum(history[-5:]) < 0.5 * sum(history[:5])
    assert loss.confidence_source is table and 0 < loss.mean_confidence < 1
    assert 0 < loss.relabelled_share < 1
    assert _precision_at_1(trunk, embedder, test) > 0.9  # unseen digits 5-9 stay retrievable


def test_table_hands_the_batch_confidences_to_the_loss():
    c = torch.rand(10, 3)
    table = ConfidenceTable(c)
    data, labels = table.data_and_label_getter([torch.zeros(2, 4), torch.tensor([0, 1]),
                                                torch.tensor([7, 2])])
    assert data.shape == (2, 4) and labels.tolist() == [0, 1]
    torch.testing.assert_close(table(), c[[7, 2]])


def test_indexed_dataset_yields_indices_and_forwards_targets():
    ds = IndexedDataset(Digits("train"))
    x, y, i = ds[5]
    assert i == 5 and y == int(ds.targets[5])


def test_table_errors_are_clear():
    with pytest.raises(RuntimeError, match="data_and_label_getter"):
        ConfidenceTable(torch.rand(4, 2))()
    with pytest.raises(ValueError, match="IndexedDataset"):
        ConfidenceTable(torch.rand(4, 2)).data_and_label_getter([torch.zeros(1), torch.zeros(1)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ConfidenceTable(torch.rand(4, 2) * 2)
    with pytest.raises(ValueError, match="rows"):
        embedding_trainer(torch.nn.Flatten(), torch.nn.Linear(64, 4), SmoothProxyAnchorLoss(5, 4),
                          Digits("train"), ConfidenceTable(torch.rand(3, 5)), batch_size=8)
