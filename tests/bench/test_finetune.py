"""--protocol finetune: backbone + head trained end to end on images (tiny CPU settings)."""

import math

import pytest
import torch

from noisy_pml.bench import run as bench_run
from noisy_pml.bench.finetune import run_one_finetune
from noisy_pml.bench.registry import get_method
from noisy_pml.bench.run import DataSpec, RunSpec, prepare_data, read_results, run_grid, run_key
from noisy_pml.models.backbones import build_backbone

SPEC = DataSpec("digits", backbone="tiny_cnn", image_size=32, protocol="finetune")
TINY = (("embedding_size", 16), ("epochs", 1), ("m_per_class", 8))


def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def _finite(rec):
    return all(math.isfinite(v) and 0 <= v <= 1 for v in rec["metrics"].values())


def test_backbone_weights_train_while_batchnorm_statistics_stay():
    start, _ = build_backbone("tiny_cnn", 32)
    rec, trained, _ = run_one_finetune(prepare_data(SPEC), RunSpec("proxy_anchor", overrides=TINY))
    assert _finite(rec) and rec["loss_per_epoch"] and len(rec["epoch_seconds"]) == 1
    before, after = start.state_dict(), trained.cpu().state_dict()
    assert not torch.equal(before["0.weight"], after["0.weight"])  # conv weights fine-tuned
    assert not torch.equal(before["1.weight"], after["1.weight"])  # BN affine trains too
    stats = _bn_stats(start)
    assert all(torch.equal(stats[k], after[k]) for k in stats)  # running stats frozen


def test_unfrozen_batchnorm_statistics_move():
    over = (*TINY, ("freeze_bn", False))
    start, _ = build_backbone("tiny_cnn", 32)
    _, trained, _ = run_one_finetune(prepare_data(SPEC), RunSpec("proxy_anchor", overrides=over))
    stats, after = _bn_stats(start), trained.cpu().state_dict()
    assert not torch.equal(stats["1.running_mean"], after["1.running_mean"])


@pytest.mark.parametrize("method", ["ahsml_ms", "smooth_proxy_anchor", "prism"])
def test_two_view_and_two_phase_methods_finetune(method):
    over = TINY + (("conf_epochs", 2),) if method == "smooth_proxy_anchor" else TINY
    data = prepare_data(SPEC)
    rec, _, trained = run_one_finetune(data, RunSpec(method, "symmetric:0.2", overrides=over))
    assert _finite(rec)
    if method == "ahsml_ms":  # its collapse signals, one value per epoch
        assert len(rec["collapse_per_epoch"]["mean_augmentation_similarity"]) == 1
    if method == "smooth_proxy_anchor":  # phase 1 ran on the frozen features of every image
        assert trained.confidence_table.shape == (len(data.train_labels), data.num_classes)
        assert rec["detection"] is not None


def test_finetune_config_adds_backbone_lr_only_to_finetune():
    spec = get_method("proxy_anchor")
    assert spec.config(protocol="finetune")["backbone_lr"] == 1e-4
    assert "backbone_lr" not in spec.config()  # frozen run keys unchanged
    with pytest.raises(ValueError, match="no hyperparameter 'backbone_lr'"):
        spec.config({"backbone_lr": 1e-3})


def test_grid_records_protocol_and_resumes(tmp_path, monkeypatch):
    runs = [RunSpec("proxy_anchor", "clean", 0, overrides=TINY)]
    recs = run_grid(SPEC, runs, tmp_path, progress=False)
    assert len(recs) == 1 and recs[0]["protocol"] == "finetune" and _finite(recs[0])
    frozen = DataSpec("digits", backbone="tiny_cnn", image_size=32)
    cfg = recs[0]["cfg"]
    assert recs[0]["key"] == run_key(SPEC, runs[0], cfg) != run_key(frozen, runs[0], cfg)

    def boom(*a, **k):
        raise AssertionError("a finished finetune run was run again")

    monkeypatch.setattr(bench_run, "run_one", boom)
    assert len(run_grid(SPEC, runs, tmp_path, progress=False)) == 1
    assert len(read_results(tmp_path / "results.jsonl")) == 1


def test_val_mode_carves_classes_from_training_images():
    val = prepare_data(SPEC, "val", val_classes=1)
    test = prepare_data(SPEC, "test")
    assert val.num_classes == test.num_classes - 1
    assert len(val.train_images) + len(val.eval_images) == len(test.train_images)
    assert set(val.train_images.rows).isdisjoint(val.eval_images.rows)


@pytest.mark.data
@pytest.mark.slow
def test_finetune_lite0_on_real_cub_smoke(data_root, tmp_path):
    """5 + 5 CUB classes, 64 px, EfficientNet-Lite0 from PyPI, one epoch (~45 s on 2 cores)."""
    spec = DataSpec("cub", image_size=64, protocol="finetune", smoke=True)
    data = prepare_data(spec, data_root=data_root, cache_dir=tmp_path, progress=False)
    over = (("batch_size", 20), ("epochs", 1))
    rec, _, _ = run_one_finetune(data, RunSpec("proxy_anchor", overrides=over))
    assert _finite(rec) and rec["metrics"]["R@1"] > 0.2  # 5 test classes: chance is ~0.2


def test_two_view_methods_get_a_weak_and_a_strong_view_by_default():
    from noisy_pml.bench.finetune import _second_view_transform, _transforms

    assert get_method("ahsml_ms").config(protocol="finetune")["second_view"] == "strong"
    assert "second_view" not in get_method("ahsml_ms").config()  # frozen run keys unchanged
    first, _ = _transforms("tiny_cnn", 32)
    strong = repr(_second_view_transform("tiny_cnn", 32, "strong", first).transform)
    weak = repr(_second_view_transform("tiny_cnn", 32, "weak", first).transform)
    assert "ColorJitter" in strong and "GaussianBlur" in strong
    assert "ColorJitter" not in weak and "RandomResizedCrop" in weak
    with pytest.raises(ValueError, match="second_view must be one of"):
        _second_view_transform("tiny_cnn", 32, "blurry", first)
    with pytest.raises(ValueError, match="second_view must be one of"):
        over = (*TINY, ("second_view", "blurry"))  # one-view methods check it too
        run_one_finetune(prepare_data(SPEC), RunSpec("proxy_anchor", overrides=over))
