"""Tiny generated image collections (a few solid-colour images per class)."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_image_folder(root: Path, classes=("apple", "banana", "cherry", "date"), per_class=4):
    """root/<class>/<i>.png, each class a distinct colour with a little per-image variation."""
    from PIL import Image

    for k, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            colour = ((60 * k + 7 * i) % 256, (255 - 50 * k) % 256, (30 * i) % 256)
            Image.new("RGB", (24 + i, 20), colour).save(d / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")
