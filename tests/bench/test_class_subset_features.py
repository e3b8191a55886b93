"""`class_subset_features`: the first classes of a dataset, read from the benchmark's whole-split
feature cache when it exists, else extracted for those classes only."""

import pytest
import torch

from noisy_pml.bench.data import DataSpec, class_subset_features, split_features_cached
from noisy_pml.datasets import get_dataset
from noisy_pml.utils import feature_cache
from noisy_pml.utils.feature_cache import ViewSpec, extract_view


def test_embedded_digits_give_their_pixels_and_shifted_views():
    data = class_subset_features(DataSpec("digits", aug_views=2), None, 3, 2)
    train = get_dataset("digits", split="train")
    keep = train.clean_targets < 3
    assert data.train_views.shape == (int(keep.sum()), 3, 64)
    assert torch.equal(data.train_views[:, 0], torch.from_numpy(train.data)[keep])
    assert not torch.equal(data.train_views[:, 1], data.train_views[:, 0])  # augmented
    assert data.train_labels.unique().tolist() == [0, 1, 2] and data.num_classes == 3
    assert data.test_labels.unique().tolist() == [0, 1]
    assert len(data.train_paths) == len(data.train_labels)
    assert len(data.test_paths) == len(data.test_feats) == len(data.test_labels)


@pytest.mark.parametrize("counts", [(0, 2), (6, 2), (2, 0)])
def test_a_class_count_outside_the_split_is_an_error_naming_it(counts):
    with pytest.raises(ValueError, match="_classes=.*the digits split has 5 classes"):
        class_subset_features(DataSpec("digits", aug_views=0), None, *counts)


class _MeanColour(torch.nn.Module):
    """Stands in for a backbone: the mean of each channel, times ``scale`` (3-d features)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return self.scale * x.mean(dim=(2, 3))


@pytest.fixture
def four_class_folder(tmp_path):
    """Classes a, b (train split) and c, d (test split), two plain-colour images each."""
    from PIL import Image

    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255), "d": (255, 255, 0)}
    for name, colour in colours.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), colour).save(tmp_path / "imgs" / name / f"{name}{i}.png")
    return f"folder:{tmp_path / 'imgs'}"


def _no_backbone(*args, **kwargs):
    raise AssertionError("extracted features that the cache holds")


def test_without_the_whole_split_cache_only_the_chosen_classes_are_extracted(
    four_class_folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(feature_cache, "build_backbone", lambda *a: (_MeanColour(), None))
    spec = DataSpec(four_class_folder, image_size=32, aug_views=1)
    assert not split_features_cached(spec, None, tmp_path / "cache")
    data = class_subset_features(spec, None, 1, 1, cache_dir=tmp_path / "cache")
    assert data.train_views.shape == (2, 2, 3) and data.test_feats.shape == (2, 3)
    assert data.train_labels.tolist() == [0, 0] and data.test_labels.tolist() == [0, 0]
    assert torch.argmax(data.train_views[:, 0], dim=1).tolist() == [0, 0]  # red: class a
    assert torch.argmax(data.test_feats, dim=1).tolist() == [2, 2]  # blue: class c
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2
    assert any("-subset-train+test-" in f for f in files)  # centre crops of the chosen classes
    assert any("-subset-train-" in f for f in files)  # their augmented view
    assert not split_features_cached(spec, None, tmp_path / "cache")


def test_with_the_whole_split_cache_its_rows_are_read_and_nothing_is_extracted(
    four_class_folder, tmp_path, monkeypatch
):
    spec = DataSpec(four_class_folder, image_size=32, aug_views=1)
    train = get_dataset(four_class_folder, split="train").img_paths
    test = get_dataset(four_class_folder, split="test").img_paths
    common = dict(dataset=four_class_folder, backbone=spec.backbone, image_size=32)
    whole = [
        (ViewSpec(**common, split="train+test"), train + test),  # what `noisy-pml bench` caches
        (ViewSpec(**common, split="train", recipe="aug", view=0), train),
    ]
    for view, paths in whole:  # scale 10 tells cached rows from freshly extracted ones
        extract_view(view, paths, tmp_path / "c", model=_MeanColour(10.0), progress=False)
    monkeypatch.setattr(feature_cache, "build_backbone", _no_backbone)
    assert split_features_cached(spec, None, tmp_path / "c")
    data = class_subset_features(spec, None, 1, 2, cache_dir=tmp_path / "c")
    assert data.train_views.shape == (2, 2, 3) and data.test_feats.shape == (4, 3)
    whole_rows = feature_cache.load_views([whole[0][0]], train + test, tmp_path / "c")[0][:, 0]
    assert torch.equal(data.train_views[:, 0], whole_rows[:2])  # class a: the first two rows
    assert torch.equal(data.test_feats, whole_rows[4:])  # classes c and d
    assert data.test_labels.tolist() == [0, 0, 1, 1]
    assert data.train_views[:, 1].abs().max() > 5  # the cached augmented view, scale 10
