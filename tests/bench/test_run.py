"""Grid runner: resume by run key, truncated JSONL lines, validation classes carved out."""

import json

import pytest
import torch

from noisy_pml.bench import run as bench_run
from noisy_pml.bench.run import DataSpec, RunSpec, prepare_data, read_results, run_grid, run_key

FAST = (("epochs", 1),)


def _rec(key):
    """A minimal run record (the fields `read_results` requires)."""
    metrics = {"R@1": 0.5, "MAP@R": 0.2}
    return {"key": key, "method": "pa", "noise": "clean", "seed": 0, "metrics": metrics,
            "train_seconds": 1.0}  # fmt: skip


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    spec = DataSpec("digits", aug_views=1)
    runs = [RunSpec("proxy_anchor", n, 0, overrides=FAST) for n in ("clean", "symmetric:0.2")]
    run_grid(spec, runs, tmp_path, progress=False)
    assert len(read_results(tmp_path / "results.jsonl")) == 2

    def boom(*a, **k):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(bench_run, "run_one", boom)
    assert len(run_grid(spec, runs, tmp_path, progress=False)) == 2


def test_key_changes_with_hyperparameters_and_data():
    run = RunSpec("proxy_anchor", "clean", 0)
    cfg = {"lr": 1e-4}
    assert run_key(DataSpec("digits"), run, cfg) != run_key(DataSpec("digits"), run, {"lr": 1e-3})
    assert run_key(DataSpec("digits"), run, cfg) != run_key(DataSpec("cub"), run, cfg)
    assert run_key(DataSpec("digits"), run, cfg) != run_key(
        DataSpec("digits"), RunSpec("proxy_anchor", "clean", 1), cfg
    )


def test_truncated_last_line_is_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_rec("a")) + "\n" + '{"key": "b", "met')
    assert read_results(path) == [_rec("a")]


def test_val_mode_trains_and_evaluates_on_disjoint_training_classes():
    spec = DataSpec("digits", aug_views=0)
    test = prepare_data(spec, "test")
    val = prepare_data(spec, "val", val_classes=1)
    assert val.num_classes == test.num_classes - 1
    assert len(val.train_labels) + len(val.eval_labels) == len(test.train_labels)
    assert val.eval_labels.unique().numel() == 1
    assert int(val.train_labels.max()) == val.num_classes - 1


def test_same_noisy_labels_for_every_method_within_a_seed(tmp_path):
    spec = DataSpec("digits", aug_views=0)
    data = prepare_data(spec)
    a = bench_run.run_one(data, RunSpec("proxy_anchor", "symmetric:0.5", 3, overrides=FAST))
    b = bench_run.run_one(data, RunSpec("contrastive", "symmetric:0.5", 3, overrides=FAST))
    c = bench_run.run_one(data, RunSpec("contrastive", "symmetric:0.5", 4, overrides=FAST))
    assert a["noisy_labels_sha1"] == b["noisy_labels_sha1"] != c["noisy_labels_sha1"]
    assert a["achieved_noise_rate"] == pytest.approx(0.5, abs=0.01)


def test_torn_last_line_is_moved_aside_before_appending(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_rec("a")) + "\n" + '{"key": "b", "met')
    with pytest.warns(RuntimeWarning, match="cut off"):
        aside = bench_run.repair_results(path)
    assert path.read_text() == json.dumps(_rec("a")) + "\n"
    assert aside.read_text() == '{"key": "b", "met'
    bench_run._append(path, _rec("c"))
    assert [r["key"] for r in read_results(path)] == ["a", "c"]


def test_smooth_pa_phase1_is_the_library_estimate_confidences():
    """The benchmark's phase 1 and noisy_pml.trainers.estimate_confidences give the same table
    for the same seed and data."""
    from torch import nn

    from noisy_pml.bench.methods import FeatureDataset
    from noisy_pml.trainers import estimate_confidences

    data = prepare_data(DataSpec("digits", aug_views=0))
    over = (("conf_epochs", 2), ("conf_folds", 2), ("epochs", 0))
    run = RunSpec("smooth_proxy_anchor", "symmetric:0.5", 3, overrides=over)
    cfg, noise, train, method, _, _ = bench_run.build_method(data, run, None)
    library = estimate_confidences(
        nn.Identity(),
        FeatureDataset(data.train_views[:, 0], noise.noisy_labels),
        data.num_classes,
        seed=3,
        epochs=2,
        folds=2,
    )
    assert torch.equal(method.confidence_table, library)


def test_smooth_pa_variants_share_one_phase1_table_and_say_so(tmp_path, monkeypatch):
    """Two Smooth PA variants that differ only in the loss reuse the phase-1 table (estimate
    confidences runs once); a different seed or phase-1 argument trains a new one."""
    import functools

    import noisy_pml.trainers as trainers
    from noisy_pml.bench import methods

    calls = []
    real = trainers.estimate_confidences

    @functools.wraps(real)  # keeps the signature the registry reads the knobs from
    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainers, "estimate_confidences", counting)
    monkeypatch.setattr(methods, "_PHASE1_TABLES", type(methods._PHASE1_TABLES)())
    data = prepare_data(DataSpec("digits", aug_views=0))
    base = (("conf_epochs", 2), ("conf_folds", 2), ("epochs", 0))
    tables, infos = [], []
    for seed, extra in ((0, ()), (0, (("smoothing_position", 0.3),)), (1, ()),
                        (0, (("conf_lr", 0.01),))):  # fmt: skip
        run = RunSpec("smooth_proxy_anchor", "symmetric:0.5", seed, overrides=base + extra)
        _, _, _, method, _, _ = bench_run.build_method(data, run, None)
        tables.append(method.confidence_table)
        infos.append(method.phase1_info)
    assert calls == [0, 1, 0]  # the second variant reused seed 0's table
    assert [i["phase1_reused"] for i in infos] == [False, True, False, False]
    assert torch.equal(tables[0], tables[1]) and tables[0] is not tables[1]
    assert not torch.equal(tables[0], tables[2]) and not torch.equal(tables[0], tables[3])


def test_ahsml_records_its_collapse_statistics_per_epoch_and_ms_records_none():
    from noisy_pml.utils.ahsml import COLLAPSE_STATISTICS

    data = prepare_data(DataSpec("digits", aug_views=1))
    two = (("epochs", 2),)
    ahsml = bench_run.run_one(data, RunSpec("ahsml_ms", "symmetric:0.3", 0, overrides=two))
    stats = ahsml["collapse_per_epoch"]
    assert set(stats) == set(COLLAPSE_STATISTICS)
    assert all(len(v) == 2 for v in stats.values())
    spread = stats["embedding_spread"]
    assert all(0 <= s <= 1 for s in spread)  # 1 - |mean direction|^2
    neg, pos = stats["mean_negative_similarity"], stats["mean_positive_similarity"]
    assert all(n < p for n, p in zip(neg, pos, strict=True))  # not collapsed: positives closer
    ms = bench_run.run_one(data, RunSpec("multi_similarity", "symmetric:0.3", 0, overrides=two))
    assert "collapse_per_epoch" not in ms
