"""ImageFolder: one folder per class, class-disjoint split by sorted name, CUB's interface."""

import pytest
import torch

from noisy_pml.datasets import DatasetNotFoundError, ImageFolder, get_dataset
from noisy_pml.datasets.image_folder import split_classes


def test_classes_sorted_by_name_first_half_trains(image_folder):
    train, test = ImageFolder(image_folder), ImageFolder(image_folder, split="test")
    assert train.class_names == ["apple", "banana"] and test.class_names == ["cherry", "date"]
    assert train.num_classes == 2 and len(train) == 8 and len(test) == 8
    assert train.clean_targets.tolist() == [0] * 4 + [1] * 4
    assert all("/apple/" in p or "/banana/" in p for p in train.img_paths)
    both = ImageFolder(image_folder, split="train+test")
    assert both.num_classes == 4 and len(both) == 16


def test_numbered_classes_sort_by_value():
    assert split_classes(["10", "2", "1", "3"], "train") == ["1", "2"]
    assert split_classes(["a", "b", "c"], "train") == ["a", "b"]  # odd count: train gets more


def test_same_noise_clean_label_and_mask_interface_as_cub(image_folder):
    ds = ImageFolder(image_folder, noise="symmetric:0.5", noise_seed=1, return_index=True)
    assert ds.noise_mask.sum() == 4 and torch.equal(ds.noise_mask, ds.targets != ds.clean_targets)
    image, label, index = ds[3]
    assert image.size == (27, 20) and label == int(ds.targets[3]) and index == 3
    with pytest.raises(ValueError, match="train split only"):
        ImageFolder(image_folder, split="test", noise="symmetric:0.5")


def test_get_dataset_folder_name(image_folder):
    ds = get_dataset(f"folder:{image_folder}", split="test")
    assert isinstance(ds, ImageFolder) and ds.class_names == ["cherry", "date"]
    assert get_dataset("folder", root=image_folder).class_names == ["apple", "banana"]


def test_empty_class_folder_is_named(image_folder):
    (image_folder / "elderberry").mkdir()
    with pytest.raises(ValueError, match="elderberry.*holds no image"):
        ImageFolder(image_folder)


def test_missing_or_flat_root_is_a_clear_error(tmp_path, image_folder):
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="0 class folder"):
        ImageFolder(image_folder / "apple")


def test_unreadable_image_names_the_file(image_folder):
    bad = image_folder / "apple" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    ds = ImageFolder(image_folder)
    with pytest.raises(OSError, match="cannot read image .*apple/1.png"):
        ds.verify()
    with pytest.raises(OSError, match="apple/1.png"):
        ds.load_sample(1)
