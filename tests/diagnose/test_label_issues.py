"""find_label_issues ranks planted label flips first; the ranking, CSV and contact sheet."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from noisy_pml.diagnose import contact_sheet, find_label_issues, rank_label_issues, write_csv

logging.getLogger("PML").setLevel(logging.WARNING)
FAST = {"epochs": 15, "hidden_size": 16, "lr": 1e-2, "device": "cpu", "batch_size": 32}


class Blobs(torch.utils.data.Dataset):
    """4 well-separated Gaussian classes of 30 samples (8-D) with 6 planted label flips."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.clean_targets = torch.arange(4).repeat_interleave(30)
        centres = 4 * torch.eye(4, 8)
        self.x = centres[self.clean_targets] + 0.5 * torch.randn(120, 8, generator=g)
        self.data = self.x
        self.flipped = torch.randperm(120, generator=g)[:6]
        self.targets = self.clean_targets.clone()
        self.targets[self.flipped] = (self.targets[self.flipped] + 1) % 4
        self.num_classes = 4

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i].view(2, 4), int(self.targets[i])


def test_planted_label_flips_rank_first_with_their_true_class_suggested():
    ds = Blobs()
    issues = find_label_issues(ds, folds=3, **FAST)
    assert [i.rank for i in issues] == list(range(1, 121))
    top = issues[:6]
    assert {i.index for i in top} == set(ds.flipped.tolist())
    for i in top:
        assert i.given_label == int(ds.targets[i.index])
        assert i.suggested_label == int(ds.clean_targets[i.index])
    assert all(a.score >= b.score for a, b in zip(issues, issues[1:], strict=False))


def test_samples_are_read_when_the_dataset_has_no_feature_array():
    ds = Blobs()
    del ds.data  # features now come from dataset[i][0], flattened
    issues = find_label_issues(ds, folds=3, top_k=6, **FAST)
    assert {i.index for i in issues} == set(ds.flipped.tolist())


def test_ranking_ties_break_by_index_and_csv_and_sheet_are_written(tmp_path):
    conf = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.6, 0.3]])
    issues = rank_label_issues(conf, torch.tensor([0, 0, 0, 1]), paths=["a", "b", "c", "d"])
    assert [i.index for i in issues] == [1, 2, 3, 0]
    assert (issues[0].path, issues[0].suggested_label) == ("b", 1)
    assert issues[0].score == pytest.approx(0.8)
    path = write_csv(issues, tmp_path / "s.csv", class_names=["cat", "dog"])
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["path"] == "b" and rows[0]["given_name"] == "cat"
    assert rows[0]["suggested_name"] == "dog"
    png = contact_sheet(Blobs(), issues, tmp_path / "s.png", num=4, columns=2)
    assert png.stat().st_size > 1000


def test_bad_input_raises_a_clear_error():
    ds = Blobs()
    with pytest.raises(ValueError, match="features has 3 rows, dataset has 120"):
        find_label_issues(ds, torch.zeros(3, 2), folds=3, **FAST)
    with pytest.raises(ValueError, match="features contains 1 NaN"):
        find_label_issues(ds, ds.x.index_put((torch.tensor([0]), torch.tensor([0])),
                                                torch.tensor(float("nan"))), folds=3, **FAST)
    with pytest.raises(ValueError, match="fewer than folds=40"):
        find_label_issues(ds, folds=40, **FAST)


def test_detection_keeps_its_own_phase1_patience_unless_one_is_given(monkeypatch):
    # the training default (a longer phase 1) memorises more noise; detection keeps the
    # patience its AUROCs were measured with
    import noisy_pml.diagnose.label_issues as label_issues
    from noisy_pml.trainers import DETECTION_PATIENCE

    seen = []

    def fake_estimate(trunk, dataset, num_classes, **kwargs):
        seen.append(kwargs["patience"])
        return torch.full((len(dataset), num_classes), 0.5)

    monkeypatch.setattr(label_issues, "estimate_confidences", fake_estimate)
    find_label_issues(Blobs(), folds=3)
    find_label_issues(Blobs(), folds=3, patience=7)
    assert seen == [DETECTION_PATIENCE, 7]
