"""Cars196 through PML's reader (Kaggle car_data layout): class split, 0-based labels, RGB."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisy_pml.datasets import Cars196, CorruptImageError, DatasetCorruptError, DatasetNotFoundError

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


@pytest.mark.parametrize(
    "split,edit,error,match",
    [
        ("train", lambda t: t.replace("b.png,0,0,0,0,2", "b.png,0,0,0,0,200"), DatasetCorruptError,
         r"anno_train\.csv, line 2: class id 200 outside 1\.\.196"),
        ("train", lambda t: t.replace("b.png,0,0,0,0,2", "b.png,0,0,2"), DatasetCorruptError,
         r"anno_train\.csv, line 2: expected 6 fields"),
        ("train", lambda t: t.replace("b.png", "a.png"), DatasetCorruptError,
         r"line 2: a\.png is already listed on line 1"),
        # a truncated last line "c.png,0,0,0,0,99" -> "...,9" relabels c.png as class 9, whose
        # folder does not hold it
        ("train", lambda t: t[:-2], DatasetNotFoundError, r"not on disk: .*Car 9 Model-9/c\.png"),
    ],
    ids=["id-outside-both-splits", "unparsable", "listed-twice", "truncated-last-line"],
)
def test_annotation_defects_raise_naming_file_and_line(tmp_path, split, edit, error, match):
    root = fake_cars(tmp_path)
    path = root / f"anno_{split}.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(error, match=match):
        Cars196(root, "test")


def test_names_file_must_list_196_classes(tmp_path):
    root = fake_cars(tmp_path)
    names = (root / "names.csv").read_text().splitlines()
    (root / "names.csv").write_text("\n".join(names[:150]))
    with pytest.raises(DatasetCorruptError, match=r"names\.csv must list 196 class names.*150"):
        Cars196(root, "train")


def test_corrupt_image_is_named_on_access_and_by_verify(tmp_path):
    root = fake_cars(tmp_path)
    bad = next((root / "car_data" / "car_data" / "test").rglob("f.png"))
    bad.write_bytes(b"not an image")
    test = Cars196(root, "test")
    idx = [i for i, p in enumerate(test.img_paths) if p.endswith("f.png")][0]
    with pytest.raises(CorruptImageError, match=r"f\.png: cannot read image"):
        test[idx]
    assert [name for name, _ in test.verify(raise_on_error=False)] == [str(bad)]
