"""CUB-200-2011 through PML's reader: class split, 0-based labels, RGB images, noise on train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from noisy_pml.datasets import (
    CUB,
    CorruptImageError,
    DatasetCorruptError,
    DatasetNotFoundError,
    get_dataset,
)

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


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_image_error_names_the_file_and_verify_lists_it(tmp_path):
    root = fake_cub(tmp_path, per_class=3)
    bad = root / "CUB_200_2011" / "images" / "002.Bird_2" / "img_1.jpg"
    Image.new("RGB", (64, 64), color=(9, 99, 199)).save(bad)
    truncate(bad, 0.3)
    train = CUB(root, "train")  # opening stays cheap: images are decoded on access
    with pytest.raises(CorruptImageError, match=r"002\.Bird_2/img_1\.jpg: cannot read image 4"):
        train[4]
    assert isinstance(train[3][0], Image.Image)  # the other images still load
    with pytest.raises(DatasetCorruptError, match=r"(?s)1 of 6 samples.*002\.Bird_2/img_1\.jpg"):
        train.verify()
    assert [name for name, _ in train.verify(raise_on_error=False)] == [str(bad)]
    with pytest.raises(DatasetCorruptError, match=r"img_1\.jpg"):
        CUB(root, "train", verify=True)
    assert CUB(root, "test", verify=True).verify() == []


def labels_file(root: Path) -> Path:
    return root / "CUB_200_2011" / "image_class_labels.txt"


def test_truncated_last_line_of_the_labels_file_is_detected(tmp_path):
    root = fake_cub(tmp_path)  # last line: "12 102"
    path = labels_file(root)
    path.write_text(path.read_text()[:-2])  # "12 10": would silently relabel image 12
    with pytest.raises(DatasetCorruptError, match=r"line 12: image 12 .* class 10 .*folder of "
                       r"class 102.*looks truncated"):
        CUB(root, "test")


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: t.replace("4 2\n", "4 250\n"), r"line 4: class id 250 outside 1\.\.200"),
        (lambda t: t.replace("4 2\n", ""), r"has 11 rows but .*images\.txt has 12"),
        (lambda t: t.replace("4 2\n", "4 two\n"), r"line 4: expected 2 fields"),
        (lambda t: t.replace("4 2\n", "5 2\n"), r"line 4: image id 5, but line 4 of"),
        (lambda t: t.replace("4 2\n", "4 1\n"), r"labelled class 1 but lies in the folder of "
         r"class 2"),
    ],
    ids=["id-outside-both-splits", "missing-row", "unparsable", "out-of-order", "wrong-class"],
)
def test_label_file_defects_raise_naming_file_and_line(tmp_path, edit, match):
    root = fake_cub(tmp_path)
    path = labels_file(root)
    path.write_text(edit(path.read_text()))
    with pytest.raises(DatasetCorruptError, match=match):
        CUB(root, "train")


def test_image_listed_twice_is_refused(tmp_path):
    root = fake_cub(tmp_path)
    for path in (root / "CUB_200_2011" / "images.txt", labels_file(root)):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1] + lines[:1]))  # image 1 again instead of image 12
    with pytest.raises(DatasetCorruptError, match="line 12: image id 1 repeated"):
        CUB(root, "train")


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
