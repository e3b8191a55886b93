"""The embedded default (`noisy-pml bench` with no arguments): digit pairs; `--dataset digits`
keeps its own configuration; the default grid shows the noise damage it is there to show."""

import json

import pytest
import torch

from noisy_pml.bench.cli import DEFAULT_DATASET, DEFAULTS, _plan, build_parser, main
from noisy_pml.bench.data import DataSpec, _digits_views, _load_split_features
from noisy_pml.datasets import DigitPairs


def _plan_of(*argv):
    return _plan(build_parser().parse_args(["bench", *argv]))


def test_no_arguments_plan_the_digit_pairs_defaults():
    plan = _plan_of()
    assert plan["dataset"] == DEFAULT_DATASET == "digit_pairs"
    base = DEFAULTS["digit_pairs"]
    assert plan["methods"] == base["methods"] and plan["noise"] == base["noise"]
    assert plan["seeds"] == base["seeds"] and len(plan["seeds"]) >= 2
    assert plan["set"] == base["set"]


def test_dataset_digits_keeps_its_own_configuration():
    plan = _plan_of("--dataset", "digits")
    assert plan["dataset"] == "digits"
    assert plan["noise"] == DEFAULTS["digits"]["noise"] != DEFAULTS["digit_pairs"]["noise"]
    assert plan["set"] == DEFAULTS["digits"]["set"]


def test_digit_pairs_features_are_the_pixels_plus_shifted_views():
    views, labels, test_x, test_y, seconds = _load_split_features(
        DataSpec("digit_pairs", aug_views=2), None, None, progress=False
    )
    train, test = DigitPairs("train"), DigitPairs("test")
    assert views.shape == (len(train), 3, 128) and seconds == 0.0
    assert torch.equal(views[:, 0], torch.from_numpy(train.data))
    assert not torch.equal(views[:, 1], views[:, 0])
    assert torch.equal(labels, train.targets) and int(labels.max()) == 49
    assert torch.equal(test_x, torch.from_numpy(test.data)) and torch.equal(test_y, test.targets)


def test_views_shift_the_whole_8x16_image():
    x = torch.zeros(1, 8, 16)
    x[0, 4, 15] = 1.0  # right edge: a shift to the right wraps it to column 0
    views = _digits_views(x.reshape(1, 128), 40, seed=0, shape=(8, 16))
    cols = {int(v.reshape(8, 16).amax(0).argmax()) for v in views[0, 1:]}
    assert cols <= {14, 15, 0} and len(cols) == 3  # one-pixel shifts along the 16 columns


@pytest.mark.slow
def test_default_grid_shows_proxy_anchor_damage_and_a_recovery(tmp_path):
    """The bar the default was chosen for: Proxy-Anchor loses >= 3 R@1 points from clean to
    the noisiest setting (mean over the default seeds) and the best other trained method
    recovers at least half of that loss."""
    assert main(["bench", "--threads", "1", "--no-plots", "--quiet", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "results.json").read_text())
    summary, noisiest = out["summary"], DEFAULTS["digit_pairs"]["noise"][-1]
    pa_clean = summary["proxy_anchor"]["clean"]["R@1"][0]
    pa_noisy = summary["proxy_anchor"][noisiest]["R@1"][0]
    assert summary["proxy_anchor"][noisiest]["seeds"] >= 2
    assert pa_clean - pa_noisy >= 3.0
    best = max(
        summary[m][noisiest]["R@1"][0]
        for m in DEFAULTS["digit_pairs"]["methods"]
        if m not in ("proxy_anchor", "frozen_features")
    )
    assert best - pa_noisy >= (pa_clean - pa_noisy) / 2


def test_embedded_datasets_default_to_one_thread(tmp_path):
    import os

    from noisy_pml.bench.cli import default_threads

    parse = build_parser().parse_args
    assert default_threads(parse(["bench"])) == 1
    assert default_threads(parse(["bench", "--dataset", "digits"])) == 1
    assert default_threads(parse(["bench", "--threads", "2"])) == 2
    assert default_threads(parse(["bench", "--dataset", "cub"])) == (os.cpu_count() or 1)
    cfg = tmp_path / "grid.json"
    cfg.write_text(json.dumps({"dataset": "cars196"}))
    assert default_threads(parse(["bench", "--config", str(cfg)])) == (os.cpu_count() or 1)
