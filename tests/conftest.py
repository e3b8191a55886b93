"""Shared fixtures. Tests needing the real datasets skip cleanly where NOISY_PML_DATA is unset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def data_root() -> Path:
    """Folder holding ``cub/`` and ``cars196/`` in PML's dataset layouts (env NOISY_PML_DATA)."""
    root = os.environ.get("NOISY_PML_DATA")
    if not root:
        pytest.skip("NOISY_PML_DATA is not set: real-data tests need CUB / Cars196 folders")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"NOISY_PML_DATA={root} is not a folder")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
