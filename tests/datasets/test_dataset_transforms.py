"""Default weak / strong / eval image transforms; the datasets package imports without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noisy_pml.datasets.transforms import (
    LITE_MEAN,
    LITE_STD,
    eval_transform,
    strong_transform,
    two_view_transforms,
    weak_transform,
)

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("torchvision")


def rgb_image(w: int = 300, h: int = 200):
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return PIL.fromarray(arr, mode="RGB")


@pytest.mark.parametrize("factory", [weak_transform, strong_transform, eval_transform])
def test_transforms_give_normalised_3x_size_tensors(factory):
    out = factory(image_size=96)(rgb_image())
    assert out.shape == (3, 96, 96) and out.dtype == torch.float32
    assert out.min() < 0  # normalised, not in [0, 1]


def test_lite_normalisation_maps_pixels_by_x_minus_127_over_128():
    img = PIL.new("RGB", (64, 64), (255, 127, 0))
    out = eval_transform(64, 64, mean=LITE_MEAN, std=LITE_STD)(img)
    assert torch.allclose(out[:, 0, 0], torch.tensor([128 / 128, 0.0, -127 / 128]), atol=1e-5)


def test_weak_and_strong_views_differ_and_are_random():
    weak, strong = two_view_transforms(64)
    img = rgb_image()
    torch.manual_seed(0)
    a, b = weak(img), weak(img)
    assert not torch.equal(a, b)
    assert strong(img).shape == a.shape


def test_datasets_import_without_torchvision_and_pillow():
    code = (
        "import sys; sys.modules['torchvision'] = None; sys.modules['PIL'] = None\n"
        "import noisy_pml.datasets as d\n"
        "ds = d.Digits('train', noise='symmetric:0.1'); print(len(ds))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert int(out.stdout) > 0
