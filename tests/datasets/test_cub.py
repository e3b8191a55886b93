"""CUB-200-2011 through PML's reader: class split, 0-based labels, RGB images, noise on train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisy_pml.datasets import CUB, DatasetNotFoundError, get_dataset

Image = pytest.importorskip("PIL.Image")


def fake_cub(root: Path, classes=(1, 2, 101, 102), per_class: int = 3) -> Path:
    """A tiny CUB_200_2011 layout with greyscale JPEGs (as some official images are)."""
    base = root / "CUB_200_2011"
    (base / "images").mkdir(parents=True)
    images, labels = [], []
    for c in classes:
        folder = base / "images" / f"{c:03d}.Bird_{c}"
        folder.mkdir()
        for j in range(per_class):
            rel = f"{folder.name}/img_{j}.jpg"
            Image.new("L", (12, 10), color=20 * j).save(base / "images" / rel)
            images.append(rel)
            labels.append(c)
    lines = enumerate(zip(images, labels, strict=True), start=1)
    text_i, text_l = zip(*[(f"{i} {p}\n", f"{i} {c}\n") for i, (p, c) in lines], strict=True)
    (base / "images.txt").write_text("".join(text_i))
    (base / "image_class_labels.txt").write_text("".join(text_l))
    return root


def test_fake_layout_split_remap_and_rgb(tmp_path):
    root = fake_cub(tmp_path)
    train, test = CUB(root, "train"), CUB(root, "test")
    assert len(train) == len(test) == 6
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 1]  # classes 1, 2 -> 0, 1
    assert test.targets.tolist() == [0, 0, 0, 1, 1, 1]  # classes 101, 102 -> 0, 1
    img, label = train[4]
    assert img.mode == "RGB" and img.size == (12, 10) and label == 1
    assert train.img_paths[0].endswith("001.Bird_1/img_0.jpg")
    assert CUB(root, "train+test").num_classes == 200


def test_missing_root_says_what_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="is not a folder.*CUB_200_2011"):
        CUB(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011 not found: expected the official"):
        CUB(tmp_path)


def test_malformed_folder_names_the_missing_file(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"CUB_200_2011/images\.txt not found"):
        CUB(tmp_path)


def test_index_listing_missing_images_is_reported(tmp_path):
    root = fake_cub(tmp_path)
    (root / "CUB_200_2011" / "images" / "001.Bird_1" / "img_0.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="not on disk"):
        CUB(root, "train")


def test_noise_is_refused_on_test_and_applied_on_train(tmp_path):
    root = fake_cub(tmp_path)
    with pytest.raises(ValueError, match="train split only"):
        CUB(root, "test", noise="symmetric:0.2")
    noisy = CUB(root, "train", noise="symmetric:0.5", noise_seed=0)
    assert int(noisy.noise_mask.sum()) == 3 and noisy.clean_targets.tolist() == [0, 0, 0, 1, 1, 1]


# ------------------------------------------------------------------ real data


@pytest.mark.data
def test_real_cub_class_split_counts_and_labels(data_root):
    train = CUB(data_root / "cub", "train")
    test = CUB(data_root / "cub", "test")
    assert len(train) == 5864 and len(test) == 5924
    for ds in (train, test):
        assert ds.num_classes == 100 and set(ds.targets.tolist()) == set(range(100))
    assert not set(train.img_paths) & set(test.img_paths)


@pytest.mark.data
def test_real_cub_images_are_rgb(data_root):
    ds = CUB(data_root / "cub", "test", return_index=True)
    for i in (0, len(ds) - 1):
        img, label, idx = ds[i]
        assert img.mode == "RGB" and min(img.size) > 0 and label == int(ds.targets[i]) and idx == i


@pytest.mark.data
def test_real_cub_noise_on_train_only_with_clean_targets(data_root):
    clean = CUB(data_root / "cub", "train")
    noisy = get_dataset("cub", data_root / "cub", "train", noise="small_cluster:0.25")
    assert torch.equal(noisy.clean_targets, clean.targets)
    assert torch.equal(noisy.noise_mask, noisy.targets != clean.targets)
    assert len(set(clean.targets[noisy.noise_mask].tolist())) == 25
    assert 0.2 < noisy.noise_result.rate < 0.3
