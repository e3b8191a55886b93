"""run_benchmark: the CLI's arguments and defaults from Python; load_results as a DataFrame."""

import inspect
import json

import pytest

from noisy_pml.bench import load_results, run_benchmark
from noisy_pml.bench.cli import build_parser, main


def _bench_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["bench"]


def test_same_arguments_and_defaults_as_the_command_line():
    flags = {
        a.dest: a.default
        for a in _bench_parser()._actions
        if a.dest not in ("help", "list")
    }
    flags["set"] = ()  # the flag's [] (a mutable default) is () in Python
    params = {n: p.default for n, p in inspect.signature(run_benchmark).parameters.items()}
    assert params == flags


def test_returns_the_records_the_cli_writes(tmp_path):
    kw = dict(methods="proxy_anchor", noise="clean", epochs=1, no_plots=True, quiet=True)
    records = run_benchmark(**kw, set={"alpha": 16}, out=tmp_path / "py")
    args = ["bench", "--methods", "proxy_anchor", "--noise", "clean", "--epochs", "1",
            "--no-plots", "--quiet", "--set", "alpha=16", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    cli = [json.loads(x) for x in (tmp_path / "cli" / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == [r["key"] for r in cli]
    assert records[0]["metrics"] == cli[0]["metrics"]  # same run, same number
    assert records[0]["cfg"]["alpha"] == 16


def test_invalid_arguments_raise_like_the_cli(tmp_path):
    with pytest.raises(ValueError, match="invalid argument"):
        run_benchmark(epochs=-1, out=tmp_path / "o")
    with pytest.raises(ValueError, match="lr must be int or float"):
        run_benchmark(set={"lr": "abc"}, methods="proxy_anchor", out=tmp_path / "o")


def test_load_results_one_row_per_run(tmp_path):
    pytest.importorskip("pandas")
    run_benchmark(methods=["proxy_anchor"], noise=["clean", "symmetric:0.5"], epochs=1, seeds=[0],
                  no_plots=True, quiet=True, out=tmp_path)
    df = load_results(tmp_path)
    assert len(df) == 2 and set(df["noise"]) == {"clean", "symmetric:0.5"}
    for col in ("method", "seed", "R@1", "MAP@R", "train_seconds", "eval_seconds"):
        assert col in df.columns
    with pytest.raises(FileNotFoundError, match="no results file"):
        load_results(tmp_path / "nowhere")


def test_version_flag(capsys):
    from noisy_pml import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


def test_device_auto_resolves_and_unavailable_cuda_is_refused():
    import torch

    from noisy_pml.bench.training import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
