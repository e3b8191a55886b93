"""benchmarks/paired.py: paired differences by seed, and runs of an earlier default left out;
benchmarks/claims.py, which pairs the papers' claims through it."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paired():
    return _script("paired")


@pytest.fixture(scope="module")
def claims():
    return _script("claims")


def _run(method, seed, r1, key, noisy_labels="labels"):
    return {
        "method": method,
        "noise": "symmetric:0.3",
        "seed": seed,
        "mode": "test",
        "key": key,
        "noisy_labels_sha1": f"{noisy_labels}-{seed}",
        "metrics": {"R@1": r1, "MAP@R": r1 / 10},
        "train_seconds": 1.0,
        "eval_seconds": 1.0,
    }


def _folder(tmp_path, runs, report_keys):
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in runs) + "\n")
    (tmp_path / "results.json").write_text(json.dumps({"runs": [{"key": k} for k in report_keys]}))
    return tmp_path


def _folder_with_a_stale_run(tmp_path):
    """Cell (a, seed 0) run under an earlier default and again under the current one; the last
    report lists the current run only."""
    runs = [
        _run("a", 0, 0.5, "old-default"),
        _run("a", 0, 0.6, "new-default"),
        _run("b", 0, 0.4, "b0"),
    ]
    return _folder(tmp_path, runs, ["new-default", "b0"])


def test_differences_are_paired_by_seed(paired, tmp_path):
    runs = [_run("a", 0, 0.5, "a0"), _run("b", 0, 0.4, "b0"), _run("a", 1, 0.3, "a1")]
    seeds, deltas = paired.paired_deltas(
        paired.load(_folder(tmp_path, runs, [])), "a", "b", "symmetric:0.3"
    )
    assert seeds == [0]  # seed 1 has no b run
    assert deltas["R@1"] == pytest.approx([10.0])


def test_two_runs_of_one_cell_are_an_error_unless_the_last_report_picks_one(paired, tmp_path):
    folder = _folder_with_a_stale_run(tmp_path)
    with pytest.raises(ValueError, match="two different runs"):
        paired.load(folder)
    current = paired.load(folder, last_grid_only=True)
    assert current[("a", "symmetric:0.3", 0)]["key"] == "new-default"


def test_the_command_line_reads_only_the_last_report_when_asked(paired, tmp_path, capsys):
    folder = _folder_with_a_stale_run(tmp_path)
    paired.main([str(folder), "a=b", "--last-grid-only"])
    assert "| a − b | symmetric:0.3 | s0 +20.0 |" in capsys.readouterr().out


def test_last_grid_only_without_a_report_is_a_clear_error(paired, tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text(json.dumps(_run("a", 0, 0.5, "a0")) + "\n")
    with pytest.raises(SystemExit):
        paired.main([str(tmp_path), "a=b", "--last-grid-only"])
    assert "results.json" in capsys.readouterr().err


def test_claims_pair_only_the_last_report(claims, tmp_path, capsys):
    runs = [
        _run("smooth_proxy_anchor", 0, 0.5, "old-default"),
        _run("smooth_proxy_anchor", 0, 0.6, "new-default"),
        _run("proxy_anchor", 0, 0.4, "pa"),
    ]
    claims.main([str(_folder(tmp_path, runs, ["new-default", "pa"]))])
    assert "| Smooth PA vs Proxy-Anchor (claimed +3.29) | +20.00 (n=1) |" in capsys.readouterr().out


def test_claims_refuse_a_pair_trained_on_different_noisy_labels(claims, tmp_path):
    runs = [
        _run("smooth_proxy_anchor", 0, 0.6, "spa"),
        _run("proxy_anchor", 0, 0.4, "pa", noisy_labels="other"),
    ]
    with pytest.raises(ValueError, match="noisy labels differ"):
        claims.main([str(_folder(tmp_path, runs, ["spa", "pa"]))])
