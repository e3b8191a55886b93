"""Two-phase Smooth Proxy-Anchor through PML's TrainWithClassifier / MetricLossOnly and tester."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from pytorch_metric_learning.testers import GlobalEmbeddingSpaceTester
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from noisy_pml.datasets import Digits
from noisy_pml.losses import SmoothProxyAnchorLoss
from noisy_pml.models import ConfidenceModule
from noisy_pml.trainers import (
    ConfidenceTable,
    HeldOutEarlyStopping,
    IndexedDataset,
    assign_folds,
    compute_confidences,
    confidence_trainer,
    embedding_trainer,
    estimate_confidences,
    split_held_out,
)
from noisy_pml.utils.noise_diagnostics import label_noise_scores, noise_detection_metrics

logging.getLogger("PML").setLevel(logging.WARNING)
QUIET = {"dataloader_num_workers": 0, "data_device": torch.device("cpu")}
QUIET_KW = {"dataloader_num_workers": 0}


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


def test_table_takes_indices_through_set_batch_info_or_the_call():
    c = torch.rand(10, 3)
    table = ConfidenceTable(c)
    table.set_batch_info(indices=torch.tensor([4, 1]), instance_ids=torch.tensor([0, 0]))
    torch.testing.assert_close(table(), c[[4, 1]])
    torch.testing.assert_close(table(torch.tensor([9])), c[[9]])
    with pytest.raises(ValueError, match="batch indices must lie in 0..9"):
        table.set_batch_info(indices=torch.tensor([10]))
    with pytest.raises(ValueError, match="NaN"):
        ConfidenceTable(torch.full((2, 2), math.nan))


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


# --- estimate_confidences: out-of-fold (cross-fitted) phase 1 --------------------------------

QUICK = {"epochs": 3, "batch_size": 16, "hidden_size": 8, "device": "cpu"}


def _blobs(per_class=(12, 12, 12), seed=0):
    """Gaussian blobs, one per class; the last feature column is the sample index."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    centres = 3 * torch.randn(len(per_class), 4, generator=g)
    x = centres[labels] + torch.randn(len(labels), 4, generator=g)
    x = torch.cat([x, torch.arange(len(labels), dtype=torch.float32)[:, None]], 1)
    return torch.utils.data.TensorDataset(x, labels)


class _RecordingModule(ConfidenceModule):
    """Confidence module that drops the index column and records which samples it saw."""

    instances: list = []

    def __init__(self, in_features, num_classes, hidden=512, dropout=0.5):
        super().__init__(in_features - 1, num_classes, hidden, dropout)
        self.trained_on, self.evaluated = set(), set()
        _RecordingModule.instances.append(self)

    def forward(self, features):
        ids = features[:, -1].long().tolist()
        (self.trained_on if self.training else self.evaluated).update(ids)
        return super().forward(features[:, :-1])


def test_out_of_fold_scoring_never_scores_a_training_sample(monkeypatch):
    import noisy_pml.trainers.two_phase as two_phase

    _RecordingModule.instances = []
    monkeypatch.setattr(two_phase, "ConfidenceModule", _RecordingModule)
    data = _blobs()
    conf = estimate_confidences(torch.nn.Identity(), data, 3, folds=3, **QUICK, **QUIET_KW)
    modules = _RecordingModule.instances
    assert len(modules) == 3 and conf.shape == (36, 3)
    scored_by = {}
    for m in modules:
        assert m.trained_on, "each module trains"
        assert not (m.trained_on & m.evaluated), "a module evaluated a sample it trained on"
        for i in m.evaluated:
            scored_by.setdefault(i, []).append(m)
    # every sample is evaluated (held-out early stopping or scoring) by a module that never
    # trained on it, and each sample is trained on by exactly K - 1 = 2 modules at most
    assert sorted(scored_by) == list(range(36))
    counts = torch.zeros(36)
    for m in modules:
        counts[list(m.trained_on)] += 1
    assert counts.max() <= 2


def test_single_fold_equals_the_held_out_slice_path():
    data = _blobs()
    conf = estimate_confidences(torch.nn.Identity(), data, 3, folds=1, seed=4, **QUICK,
                                **QUIET_KW)
    # today's path by hand: one module, split_held_out, confidence_trainer, best weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4000)
        module = ConfidenceModule(5, 3, hidden=8)
        fit, held = split_held_out(data, 0.1, seed=4000)
        trainer = confidence_trainer(torch.nn.Identity(), module, fit, batch_size=16,
                                     held_out=held, **QUIET)
        trainer.train(num_epochs=3)
        trainer.end_of_epoch_hook.restore_best()
        expected = compute_confidences(torch.nn.Identity(), module, data)
    torch.testing.assert_close(conf, expected)


def test_estimate_confidences_is_deterministic_for_a_seed_and_keeps_the_global_rng():
    data = _blobs()
    state = torch.get_rng_state()
    a = estimate_confidences(torch.nn.Identity(), data, 3, folds=3, seed=1, **QUICK, **QUIET_KW)
    assert torch.equal(state, torch.get_rng_state())
    b = estimate_confidences(torch.nn.Identity(), data, 3, folds=3, seed=1, **QUICK, **QUIET_KW)
    c = estimate_confidences(torch.nn.Identity(), data, 3, folds=3, seed=2, **QUICK, **QUIET_KW)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_folds_are_stratified_by_label():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)
    fold_ids = assign_folds(labels, 5, seed=0)
    for c in range(3):
        per_fold = torch.bincount(fold_ids[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = torch.bincount(fold_ids, minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_out_of_fold_confidences_flag_noise_better_than_chance():
    train = Digits("train", noise="symmetric:0.3")
    conf = estimate_confidences(torch.nn.Flatten(), train, 5, folds=3, epochs=10, lr=1e-2,
                                hidden_size=64, device="cpu", **QUIET_KW)
    scores = label_noise_scores(conf, train.targets)
    assert noise_detection_metrics(scores, train.noise_mask)["auroc"] > 0.9


def test_estimate_confidences_errors_are_clear():
    small = _blobs(per_class=(12, 12, 2))
    with pytest.raises(ValueError, match="class 2 has 2 sample.*fewer than folds=3"):
        estimate_confidences(torch.nn.Identity(), small, 3, folds=3, **QUICK, **QUIET_KW)
    data = _blobs()
    with pytest.raises(ValueError, match=r"dataset labels must lie in 0\.\.1"):
        estimate_confidences(torch.nn.Identity(), data, 2, folds=3, **QUICK, **QUIET_KW)
    with pytest.raises(ValueError, match="folds must be an int >= 1"):
        estimate_confidences(torch.nn.Identity(), data, 3, folds=0, **QUICK, **QUIET_KW)
    one_fold_class = torch.arange(36) % 2
    one_fold_class[24:] = 1  # class 2 (samples 24..35) only in fold 1
    with pytest.raises(ValueError, match="class 2 is present in only one fold"):
        estimate_confidences(torch.nn.Identity(), data, 3, folds=one_fold_class, **QUICK,
                             **QUIET_KW)
    x, y = data.tensors
    # NaN features are refused by the confidence module itself, before any confidence exists
    nan = torch.utils.data.TensorDataset(x.clone().index_fill_(0, torch.tensor([3]), math.nan), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        estimate_confidences(torch.nn.Identity(), nan, 3, folds=3, held_out_fraction=0.0,
                             **QUICK, **QUIET_KW)


def test_a_batch_larger_than_the_data_still_trains_with_a_warning():
    # PML's trainers drop incomplete batches: uncapped, 40 samples at batch 256 train nothing
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 4
    data = torch.utils.data.TensorDataset(x, y)
    torch.manual_seed(0)
    module = ConfidenceModule(6, 4, None)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.warns(UserWarning, match="larger than the 40 training samples"):
        trainer = confidence_trainer(torch.nn.Identity(), module, data, batch_size=256,
                                     **QUIET_KW)
    trainer.train(num_epochs=2)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def _scripted_hook(stop_on, bce, accuracy, patience=2):
    """A hook whose held-out metrics follow a script (one entry per epoch)."""
    module = ConfidenceModule(2, 2, None)
    hook = HeldOutEarlyStopping(torch.nn.Identity(), module, held_out=None, patience=patience,
                                stop_on=stop_on)
    script = iter([{"bce": b, "accuracy": a} for b, a in zip(bce, accuracy, strict=True)])
    hook.held_out_metrics = lambda: next(script)
    epochs = 0
    for _ in bce:
        epochs += 1
        if not hook(None):
            break
    return hook, epochs


def test_noisy_bce_stops_early_where_noisy_accuracy_keeps_training():
    # heavy noise: the held-out BCE against noisy labels rises from epoch 3 while the share of
    # samples predicted as their noisy label still grows (the module learns the true classes)
    bce = [1.0, 0.8, 0.85, 0.9, 0.95, 1.0]
    accuracy = [0.10, 0.20, 0.25, 0.30, 0.32, 0.31]
    hook, epochs = _scripted_hook("bce", bce, accuracy)
    assert epochs == 4 and hook.stopped_early and hook.best_metrics == {"bce": 0.8,
                                                                        "accuracy": 0.20}
    assert hook.best == 0.8  # the best epoch's held-out BCE, as before stop_on existed
    hook, epochs = _scripted_hook("accuracy", bce, accuracy)
    assert epochs == 6 and not hook.stopped_early and hook.best_metrics["accuracy"] == 0.32
    # both curves are kept per epoch, whichever criterion stops
    assert hook.history == bce and hook.accuracy_history == accuracy


def test_accuracy_ties_go_to_the_lower_bce():
    hook, _ = _scripted_hook("accuracy", [1.0, 0.7, 0.9], [0.5, 0.5, 0.5], patience=5)
    assert hook.best_metrics == {"bce": 0.7, "accuracy": 0.5}


def test_held_out_metrics_match_a_literal_computation():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(30) % 3
    torch.manual_seed(0)
    module = ConfidenceModule(4, 3, None)
    hook = HeldOutEarlyStopping(torch.nn.Identity(), module,
                                torch.utils.data.TensorDataset(x, y), batch_size=7)
    got = hook.held_out_metrics()
    module.eval()
    logits = module(x)
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, one_hot)  # mean over B*C
    assert got["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert got["bce"] == pytest.approx(bce.item(), rel=1e-5)


def test_stopping_criterion_errors_are_clear():
    with pytest.raises(ValueError, match="stop_on must be one of .*'bce', 'accuracy'.*got 'f1'"):
        HeldOutEarlyStopping(torch.nn.Identity(), ConfidenceModule(2, 2, None), None,
                             stop_on="f1")
    with pytest.raises(ValueError, match="patience"):
        HeldOutEarlyStopping(torch.nn.Identity(), ConfidenceModule(2, 2, None), None,
                             patience=0)


def test_phase1_scores_with_one_module_by_default_and_diagnose_cross_fits():
    # chosen on validation classes (benchmarks/results/spa_v3_select/): the loss trains on one
    # module's confidences; finding mislabelled samples uses K = DETECTION_FOLDS out-of-fold
    import inspect

    from noisy_pml.diagnose import find_label_issues
    from noisy_pml.trainers import DETECTION_FOLDS

    assert inspect.signature(estimate_confidences).parameters["folds"].default == 1
    assert DETECTION_FOLDS == 5
    assert inspect.signature(find_label_issues).parameters["folds"].default == DETECTION_FOLDS
