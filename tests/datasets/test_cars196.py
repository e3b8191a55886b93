"""Cars196 through PML's reader (Kaggle car_data layout): class split, 0-based labels, RGB."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisy_pml.datasets import Cars196, DatasetNotFoundError

Image = pytest.importorskip("PIL.Image")


def fake_cars(root: Path) -> Path:
    """Classes 1, 2 (train split) and 99 (test split) with 2 images each, one half per csv."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"Car {i} Model/{i}" for i in range(1, 197)]  # '/' is replaced by '-' on disk
    (root / "names.csv").write_text("\n".join(names) + "\n")
    rows = {
        "train": [("a.png", 1), ("b.png", 2), ("c.png", 99)],
        "test": [("d.png", 1), ("e.png", 2), ("f.png", 99)],
    }
    for split, items in rows.items():
        lines = []
        for name, c in items:
            folder = root / "car_data" / "car_data" / split / names[c - 1].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 6), color=c).save(folder / name)
            lines.append(f"{name},0,0,0,0,{c}\n")
        (root / f"anno_{split}.csv").write_text("".join(lines))
    return root


def test_fake_layout_pools_both_halves_then_splits_by_class(tmp_path):
    root = fake_cars(tmp_path)
    train, test = Cars196(root, "train"), Cars196(root, "test")
    assert sorted(train.targets.tolist()) == [0, 0, 1, 1] and train.num_classes == 98
    assert test.targets.tolist() == [0, 0]  # class 99 -> 0
    img, _ = test[0]
    assert img.mode == "RGB" and img.size == (8, 6)


def test_missing_files_say_what_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"names\.csv not found.*car_data"):
        Cars196(tmp_path)
    root = fake_cars(tmp_path / "c")
    (root / "anno_test.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"anno_test\.csv not found"):
        Cars196(root)


@pytest.mark.data
def test_real_cars_class_split_counts_and_labels(data_root):
    train = Cars196(data_root / "cars196", "train")
    test = Cars196(data_root / "cars196", "test")
    assert len(train) == 4052 and len(test) == 4092
    for ds in (train, test):
        assert ds.num_classes == 98 and set(ds.targets.tolist()) == set(range(98))
    img, _ = test[len(test) - 1]
    assert img.mode == "RGB"


@pytest.mark.data
def test_real_cars_noise_on_train_only(data_root):
    noisy = Cars196(data_root / "cars196", "train", noise="symmetric:0.5", noise_seed=2)
    assert int(noisy.noise_mask.sum()) == round(0.5 * 4052)
    assert torch.equal(noisy.noise_mask, noisy.targets != noisy.clean_targets)
    with pytest.raises(ValueError, match="train split only"):
        Cars196(data_root / "cars196", "test", noise="symmetric:0.5")
