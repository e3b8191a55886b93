"""`noisy-pml bench` end to end on digits (tiny epochs), resume, and clear errors."""

import json

import pytest
import torch

from noisy_pml.bench.cli import main, selection_edges

QUICK = [
    "bench",
    "--methods",
    "proxy_anchor,prism",
    "--noise",
    "clean",
    "symmetric:0.5",
    "--epochs",
    "1",
    "--seeds",
    "0",
    "--no-plots",
    "--quiet",
]


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_digits_end_to_end_writes_table_json_and_jsonl(tmp_path, capsys):
    assert main([*QUICK, "--out", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| proxy_anchor |" in md and "| prism |" in md and "symmetric:0.5" in md
    assert md == capsys.readouterr().out.strip() + "\n"
    recs = _lines(tmp_path / "results.jsonl")
    assert {(r["method"], r["noise"]) for r in recs} == {
        (m, n) for m in ("proxy_anchor", "prism") for n in ("clean", "symmetric:0.5")
    }
    assert all(set(r["metrics"]) == {"R@1", "R@2", "R@4", "R@8", "MAP@R"} for r in recs)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["prism"]["symmetric:0.5"]["seeds"] == 1


def test_second_invocation_resumes_without_rerunning(tmp_path):
    assert main([*QUICK, "--out", str(tmp_path)]) == 0
    first = _lines(tmp_path / "results.jsonl")
    assert main([*QUICK, "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    second = _lines(tmp_path / "results.jsonl")
    assert second[: len(first)] == first  # finished runs untouched, not repeated
    assert len(second) == 2 * len(first)  # only the new seed ran
    assert len({r["key"] for r in second}) == len(second)


def test_report_only_tables_the_finished_runs_and_runs_nothing(tmp_path, capsys):
    assert main([*QUICK, "--out", str(tmp_path)]) == 0
    finished = (tmp_path / "results.jsonl").read_text()
    capsys.readouterr()
    # a larger grid than the one that ran: its seed-1 runs are reported missing, not run
    assert main([*QUICK, "--seeds", "0", "1", "--report-only", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "results.jsonl").read_text() == finished
    assert "4 of 8 runs of this grid found" in captured.err
    assert "not run yet: prism symmetric:0.5 seed 1" in captured.err
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["num_runs"] == 4
    assert summary["summary"]["proxy_anchor"]["clean"]["seeds"] == 1
    assert "| proxy_anchor |" in (tmp_path / "results.md").read_text()


def test_report_only_without_results_is_a_clear_error(tmp_path, capsys):
    assert main([*QUICK, "--report-only", "--out", str(tmp_path / "empty")]) == 2
    assert "no results file" in capsys.readouterr().err


def test_plots_are_written(tmp_path):
    args = [
        "bench",
        "--methods",
        "prism",
        "--noise",
        "clean",
        "symmetric:0.5",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    assert (tmp_path / "r1_vs_noise.png").stat().st_size > 0
    assert (tmp_path / "noise_detection.png").stat().st_size > 0


def test_unknown_method_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--methods", "proxy_anchr", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'proxy_anchr'" in err and "proxy_anchor" in err


def test_wrong_data_root_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code = main(["bench", "--dataset", "cub", "--data-root", str(missing), "--out", str(tmp_path)])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_hyperparameter_is_a_clear_error(tmp_path, capsys):
    args = [*QUICK, "--out", str(tmp_path)]
    args[args.index("--methods") + 1] = "proxy_anchor"
    assert main([*args, "--set", "epochs=1"]) == 0
    from noisy_pml.bench.registry import get_method

    with pytest.raises(ValueError, match="no hyperparameter 'lrr'"):
        get_method("proxy_anchor").config({"lrr": 1})


def test_list_names_methods_and_backbones(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("proxy_anchor", "multi_similarity", "contrastive", "prism", "efficientnet_lite0"):
        assert name in out


def test_config_file_with_variants(tmp_path):
    cfg = {
        "dataset": "digits",
        "methods": ["proxy_anchor"],
        "noise": ["clean"],
        "seeds": [0],
        "set": {"epochs": 1},
        "variants": [{"name": "pa_linear", "method": "proxy_anchor", "set": {"head": "linear"}}],
    }
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(cfg))
    assert (
        main(
            ["bench", "--config", str(path), "--no-plots", "--quiet", "--out", str(tmp_path / "o")]
        )
        == 0
    )
    recs = _lines(tmp_path / "o" / "results.jsonl")
    assert {r["method"] for r in recs} == {"proxy_anchor", "pa_linear"}
    assert [r["cfg"]["head"] for r in recs if r["method"] == "pa_linear"] == ["linear"]


@pytest.mark.data
@pytest.mark.slow
def test_smoke_on_real_cub(data_root, tmp_path):
    args = [
        "bench",
        "--dataset",
        "cub",
        "--data-root",
        str(data_root),
        "--smoke",
        "--methods",
        "proxy_anchor,prism",
        "--noise",
        "clean",
        "symmetric:0.5",
        "--no-plots",
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    recs = _lines(tmp_path / "o" / "results.jsonl")
    assert len(recs) == 4 and all(0 < r["metrics"]["R@1"] <= 1 for r in recs)


def test_finetune_protocol_end_to_end(tmp_path):
    args = [*QUICK, "--protocol", "finetune", "--backbone", "tiny_cnn", "--image-size", "32"]
    args[args.index("--methods") + 1] = "proxy_anchor"
    assert main([*args, "--set", "backbone_lr=1e-3", "m_per_class=8", "--out", str(tmp_path)]) == 0
    recs = _lines(tmp_path / "results.jsonl")
    assert {(r["protocol"], r["cfg"]["backbone_lr"]) for r in recs} == {("finetune", 1e-3)}
    assert "finetune tiny_cnn" in (tmp_path / "results.md").read_text()


ONE = ["bench", "--methods", "proxy_anchor", "--noise", "clean", "--epochs", "1", "--seeds", "0",
       "--no-plots", "--quiet"]


def test_torn_last_record_is_detected_and_every_finished_run_survives(tmp_path):
    """Issue 13.1: a record cut mid-write must not swallow the next one."""
    assert main([*ONE, "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # seed 1 torn
    with pytest.warns(RuntimeWarning, match="cut off"):
        assert main([*ONE, "--seeds", "0", "1", "2", "--out", str(tmp_path)]) == 0
    recs = _lines(path)  # every line parses: nothing glued onto the torn one
    assert sorted(r["seed"] for r in recs) == [0, 1, 2]
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["proxy_anchor"]["clean"]["seeds"] == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "-1"], "--epochs: expected an integer >= 0, got -1"),
        (["--seeds", "x"], "--seeds: expected an integer, got 'x'"),
        (["--image-size", "8"], "--image-size: expected an integer >= 32, got 8"),
        (["--threads", "0"], "--threads: expected an integer >= 1, got 0"),
    ],
)
def test_bad_numeric_flags_are_argparse_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        main([*ONE, *flags, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "item, message",
    [
        ("lr=abc", "lr must be int or float (like its default 0.0001), got 'abc'"),
        ("epochs=-1", "epochs must be >= 0, got -1"),
        ("epochs=1.5", "epochs must be int"),
        ("lrr=1", "no method of this grid (proxy_anchor) has a hyperparameter 'lrr'"),
    ],
)
def test_bad_set_values_are_clear_errors_before_anything_runs(tmp_path, capsys, item, message):
    assert main([*ONE, "--set", item, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # no empty output folder left behind


def test_set_changes_the_run(tmp_path):
    """A library hyperparameter given with --set reaches the loss the run trains."""
    assert main([*ONE, "--out", str(tmp_path / "a")]) == 0
    assert main([*ONE, "--set", "alpha=4", "--out", str(tmp_path / "b")]) == 0
    (a,), (b,) = _lines(tmp_path / "a" / "results.jsonl"), _lines(tmp_path / "b" / "results.jsonl")
    assert b["cfg"]["alpha"] == 4 and a["cfg"]["alpha"] != 4
    assert a["loss_per_epoch"] != b["loss_per_epoch"]
    assert a["key"] != b["key"]


def test_missing_data_root_names_it_and_suggests_no_nonexistent_flag(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    out = tmp_path / "o"
    code = main(["bench", "--dataset", "cub", "--data-root", str(missing), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err
    assert "download" not in err
    assert not out.exists()


def test_list_shows_each_methods_effective_library_defaults(capsys):
    import inspect

    from noisy_pml.losses import SmoothProxyAnchorLoss

    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    mu = inspect.signature(SmoothProxyAnchorLoss).parameters["smoothing_position"].default
    assert f"smoothing_position={mu!r}" in out
    assert "epochs=" in out and "curvature=" in out


def _image_folder(root, classes=6, per_class=6):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for k in range(classes):
        d = root / f"class_{k:02d}"
        d.mkdir(parents=True)
        base = torch.rand(3, generator=g) * 255
        for i in range(per_class):
            pixel = (base + 30 * torch.rand(3, generator=g)).clamp(0, 255).round().int().tolist()
            Image.new("RGB", (36, 30), tuple(pixel)).save(d / f"{i}.png")
    return root


FOLDER_ARGS = ["--backbone", "tiny_cnn", "--image-size", "32", "--aug-views", "1",
               "--noise", "clean", "symmetric:0.5", "--epochs", "1", "--seeds", "0",
               "--set", "m_per_class=2", "--no-plots", "--quiet"]


def test_folder_dataset_runs_end_to_end(tmp_path, capsys):
    images = _image_folder(tmp_path / "images")
    args = ["bench", "--dataset", f"folder:{images}", "--methods", "proxy_anchor,ahsml_ms",
            *FOLDER_ARGS, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    recs = _lines(tmp_path / "o" / "results.jsonl")
    assert {(r["method"], r["noise"]) for r in recs} == {
        (m, n) for m in ("proxy_anchor", "ahsml_ms") for n in ("clean", "symmetric:0.5")
    }
    assert all(0 < r["metrics"]["R@1"] <= 1 for r in recs)
    assert f"folder:{images}" in capsys.readouterr().out  # the table names the dataset


def test_csv_dataset_runs_end_to_end(tmp_path):
    images = _image_folder(tmp_path / "images", classes=4)
    rows = ["path,label"] + [
        f"{p.relative_to(images)},{p.parent.name}" for p in sorted(images.glob("*/*.png"))
    ]
    (images / "list.csv").write_text("\n".join(rows) + "\n")
    args = ["bench", "--dataset", f"csv:{images / 'list.csv'}", "--methods", "proxy_anchor",
            *FOLDER_ARGS, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert len(_lines(tmp_path / "o" / "results.jsonl")) == 2


def test_unreadable_image_in_a_folder_dataset_names_the_file(tmp_path, capsys):
    images = _image_folder(tmp_path / "images", classes=2, per_class=3)
    bad = images / "class_00" / "1.png"
    bad.write_bytes(bad.read_bytes()[:20])
    args = ["bench", "--dataset", f"folder:{images}", "--methods", "proxy_anchor",
            *FOLDER_ARGS, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "class_00/1.png" in capsys.readouterr().err


def test_unknown_dataset_name_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "--dataset", "imagenet", "--out", str(tmp_path / "o")]) == 2
    assert "folder:PATH or csv:FILE, got 'imagenet'" in capsys.readouterr().err


def test_epochs_for_the_grid_leave_the_untrained_floor_untrained(tmp_path):
    args = ["bench", "--methods", "frozen_features,proxy_anchor", "--noise", "clean",
            "--epochs", "1", "--no-plots", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    recs = {r["method"]: r for r in _lines(tmp_path / "results.jsonl")}
    assert recs["frozen_features"]["loss_per_epoch"] == []
    assert len(recs["proxy_anchor"]["loss_per_epoch"]) == 1


def test_table_says_when_finished_runs_were_reused(tmp_path, capsys):
    assert main([*ONE, "--out", str(tmp_path)]) == 0
    assert "read back" not in (tmp_path / "results.md").read_text()
    capsys.readouterr()
    assert main([*ONE, "--out", str(tmp_path)]) == 0
    note = "1 of 1 runs were finished earlier and read back"
    assert note in capsys.readouterr().err  # printed even with --quiet
    assert note in (tmp_path / "results.md").read_text()
    assert "Hyperparameters: the defaults of noisy-pml" in (tmp_path / "results.md").read_text()


def _selection_grid(tmp_path):
    grid = {
        "dataset": "digits", "methods": ["proxy_anchor", "contrastive"], "noise": ["clean"],
        "seeds": [0], "set": {"epochs": 1},
        "select": {"noise": ["clean"], "seed": 0, "metric": "MAP@R",
                   "grid": {"proxy_anchor": {"lr": [1e-3, 1e-2]},
                            "contrastive": {"lr": [1e-3, 1e-2]}}},
    }  # fmt: skip
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return ["bench", "--config", str(path), "--no-plots", "--quiet", "--out", str(tmp_path)]


def test_report_only_replays_a_finished_selection_without_training(tmp_path, capsys, monkeypatch):
    from noisy_pml.bench import run as bench_run

    cmd = _selection_grid(tmp_path)
    assert main(cmd) == 0
    full = json.loads((tmp_path / "results.json").read_text())
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(bench_run, "run_one", boom)
    assert main([*cmd, "--report-only"]) == 0
    replay = json.loads((tmp_path / "results.json").read_text())
    assert replay["chosen_hyperparameters"] == full["chosen_hyperparameters"]
    assert replay["summary"] == full["summary"]
    assert "2 of 2 runs of this grid found" in capsys.readouterr().err


def test_report_only_leaves_out_a_method_whose_selection_is_unfinished(tmp_path, capsys):
    cmd = _selection_grid(tmp_path)
    assert main(cmd) == 0
    path = tmp_path / "results.jsonl"
    recs = _lines(path)
    # forget one contrastive validation run: its selection is now 1 of 2 candidates
    dropped = next(r for r in recs if r["method"] == "contrastive" and r["mode"] == "val")
    path.write_text("".join(json.dumps(r) + "\n" for r in recs if r is not dropped))
    capsys.readouterr()
    assert main([*cmd, "--report-only"]) == 0
    err = capsys.readouterr().err
    assert "selection for contrastive is not finished (1 of 2 candidates)" in err
    assert "1 of 1 runs of this grid found" in err
    assert len(_lines(path)) == len(recs) - 1  # nothing ran
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert "proxy_anchor" in summary and "contrastive" not in summary
    # the lone finished candidate is named by the searched lr, not an empty {}
    lone = [row for row in (tmp_path / "results.md").read_text().splitlines() if "pending" in row]
    assert len(lone) == 1 and '{"lr": 0.01}' in lone[0]


@pytest.mark.parametrize(
    ("views", "aug_size", "phrase"),
    [
        (0, 160, "centre crop 96 px, no augmented views)"),
        (2, 160, "centre crop 96 px, 2 augmented view(s) at 160 px)"),
        (1, None, "centre crop 96 px, 1 augmented view(s) at 96 px)"),
    ],
)
def test_frozen_title_names_the_cached_views_or_says_there_are_none(views, aug_size, phrase):
    from noisy_pml.bench.cli import _views_phrase

    plan = {"aug_views": views, "aug_image_size": aug_size, "image_size": 96}
    assert f"centre crop 96 px, {_views_phrase(plan)})" == phrase


@pytest.mark.parametrize(
    ("best", "edges"),
    [
        ({"lr": 1e-4}, {"lr": "lowest"}),
        ({"lr": 3e-4}, {}),
        ({"lr": 1e-3}, {"lr": "highest"}),
    ],
)
def test_selection_edges_name_a_choice_at_the_end_of_the_values_tried(best, edges):
    candidates = [{"lr": 1e-4}, {"lr": 3e-4}, {"lr": 1e-3}]
    assert selection_edges(candidates, best) == edges


def test_selection_edges_ignore_values_that_are_not_searched_numbers():
    candidates = [{"lr": 1e-4, "loss": "a", "flag": True}, {"lr": 1e-4, "loss": "b", "flag": False}]
    assert selection_edges(candidates, candidates[0]) == {}  # one lr, a string, a bool


def test_a_choice_at_the_edge_of_the_grid_is_reported(tmp_path, capsys):
    assert main(_selection_grid(tmp_path)) == 0  # two lrs: whichever wins is an edge
    assert "choice is at the edge of its grid (lr: the" in capsys.readouterr().err
    chosen = json.loads((tmp_path / "results.json").read_text())["chosen_hyperparameters"]
    assert set(chosen["proxy_anchor"]["edges"]) == {"lr"}
    assert "lr tried) |" in (tmp_path / "results.md").read_text()
