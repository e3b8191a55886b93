"""python -m noisy_pml.diagnose: suspects.csv, suspects.png and summary.json."""

from __future__ import annotations

import csv
import json

from noisy_pml.diagnose.cli import main


def test_cli_on_digits_with_injected_noise_writes_the_ranking(tmp_path, capsys):
    code = main(["--dataset", "digits", "--noise", "symmetric:0.2", "--out", str(tmp_path),
                 "--folds", "2", "--epochs", "5", "--top", "50", "--sheet", "12",
                 "--device", "cpu"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "suspects.csv").open()))
    assert len(rows) == 50 and rows[0]["rank"] == "1"
    assert {"path", "given_label", "suggested_label", "score"} <= set(rows[0])
    assert (tmp_path / "suspects.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_mislabelled"] == 180
    assert summary["precision@10"] >= 0.5  # chance is the noise rate, 0.2 (5 epochs only)


def test_cli_reports_unknown_datasets_clearly(tmp_path, capsys):
    assert main(["--dataset", "imagenet", "--out", str(tmp_path)]) == 2
    assert "dataset name must be one of" in capsys.readouterr().err


def test_class_names_come_from_the_image_folders_by_clean_label():
    from types import SimpleNamespace

    import torch

    from noisy_pml.diagnose.cli import class_names

    ds = SimpleNamespace(
        img_paths=["r/001.Albatross/a.jpg", "r/001.Albatross/b.jpg", "r/002.Wren/c.jpg"],
        clean_targets=torch.tensor([0, 0, 1]), targets=torch.tensor([1, 0, 1]), num_classes=2,
    )
    assert class_names(ds) == ["001.Albatross", "002.Wren"]
    ds.img_paths = ["x/a.jpg", "x/b.jpg", "x/c.jpg"]  # one folder: no distinct names
    assert class_names(ds) is None
