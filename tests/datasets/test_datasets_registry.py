"""get_dataset: names to constructors, NOISY_PML_DATA as the default root."""

from __future__ import annotations

import pytest

from noisy_pml.datasets import CUB, Digits, get_dataset, list_datasets


def test_names_and_digits():
    assert list_datasets() == ["cars196", "csv", "cub", "digit_pairs", "digits", "folder"]
    ds = get_dataset("digits", split="test", noise=None)
    assert isinstance(ds, Digits) and ds.split == "test"


def test_unknown_name_and_missing_root(monkeypatch):
    with pytest.raises(ValueError, match="dataset name must be one of"):
        get_dataset("mnist")
    monkeypatch.delenv("NOISY_PML_DATA", raising=False)
    with pytest.raises(ValueError, match="NOISY_PML_DATA"):
        get_dataset("cub")


@pytest.mark.data
def test_root_defaults_to_env_folder(data_root, monkeypatch):
    monkeypatch.setenv("NOISY_PML_DATA", str(data_root))
    ds = get_dataset("cub", split="test")
    assert isinstance(ds, CUB) and len(ds) == 5924


def test_a_root_the_dataset_cannot_use_is_refused_not_dropped(tmp_path):
    with pytest.raises(ValueError, match="digits is embedded and reads no folder"):
        get_dataset("digits", root=tmp_path)
    with pytest.raises(ValueError, match="folder:PATH or csv:FILE"):
        get_dataset("my_images", root=tmp_path)
    with pytest.raises(ValueError, match="give the folder after the colon"):
        get_dataset("folder:")
