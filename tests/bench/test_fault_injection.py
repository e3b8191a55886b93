"""Fault injection on the benchmark's records: a grid killed at any moment and started again
loses no finished run, repeats none, and ends with the tables of an uninterrupted run; torn,
corrupt, empty and older-format results files are detected with a warning and keep every
finished run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisy_pml.bench import grid
from noisy_pml.bench.cli import main
from noisy_pml.bench.grid import read_results, repair_results
from noisy_pml.bench.report import METRICS

ROOT = Path(__file__).resolve().parents[2]
# 2 methods x 2 noise recipes x 2 seeds on the embedded digits data: 8 runs
GRID = [
    "--methods",
    "proxy_anchor,multi_similarity",
    "--noise",
    "clean",
    "symmetric:0.5",
    "--seeds",
    "0",
    "1",
    "--no-plots",
    "--quiet",
    "--threads",
    "1",
]
N_RUNS = 8
TIMING = ("train_seconds", "eval_seconds", "feature_seconds")

# Runs the bench CLI in a child process that SIGKILLs itself inside the results-file writer:
# KILL_MODE=torn writes the first half of the KILL_AT-th record (no newline) and dies;
# KILL_MODE=after dies right after the KILL_AT-th record is on disk.
_KILLER = """
import json, os, signal, sys
from noisy_pml.bench import grid
from noisy_pml.bench.cli import main

mode, at, count = os.environ["KILL_MODE"], int(os.environ["KILL_AT"]), [0]
append = grid._append

def killing_append(path, record):
    count[0] += 1
    if count[0] == at and mode == "torn":
        line = json.dumps(record, default=str) + "\\n"
        with open(path, "a") as f:
            f.write(line[: len(line) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    append(path, record)
    if count[0] == at and mode == "after":
        os.kill(os.getpid(), signal.SIGKILL)

grid._append = killing_append
sys.exit(main(["bench", *sys.argv[1:]]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _bench_process(args: list[str], **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "noisy_pml.bench", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), **popen)


def _killed_run(args: list[str], mode: str, at: int) -> subprocess.CompletedProcess:
    env = {**_env(), "KILL_MODE": mode, "KILL_AT": str(at)}
    cmd = [sys.executable, "-c", _KILLER, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def _tables(out: Path) -> str:
    """results.md without what legitimately differs between two runs of the same grid: the
    wall-time column and the notes under the tables (e.g. "N runs were read back")."""
    md = (out / "results.md").read_text().split("\nHyperparameters:")[0]
    md = "\n".join(x for x in md.splitlines() if "were finished earlier" not in x)
    rows = []
    for line in md.splitlines():
        cells = line.count("|") - 1
        if line.startswith("| ") and "train s/run" not in line and cells == len(METRICS) + 4:
            line = line.rsplit("|", 2)[0] + "|"  # drop the "train s/run" cell
        rows.append(line)
    return "\n".join(rows)


def _summary_metrics(out: Path) -> dict:
    summary = json.loads((out / "results.json").read_text())["summary"]
    return {
        (m, n): {k: cell[k] for k in (*METRICS, "seeds", "detection_auroc") if k in cell}
        for m, cells in summary.items()
        for n, cell in cells.items()
    }


def _assert_same_results_as(out: Path, reference: Path) -> None:
    """One record per run key, every cell of the reference present with equal values, and the
    same tables (metric values equal, timing aside)."""
    recs = read_results(out / "results.jsonl")
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)), "a run was recorded twice"
    ref = {r["key"]: r for r in read_results(reference / "results.jsonl")}
    assert set(keys) == set(ref), "a finished run was lost (or an unexpected one appeared)"
    for r in recs:
        assert _without_timing(r) == _without_timing(ref[r["key"]]), r["key"]
    assert _summary_metrics(out) == _summary_metrics(reference)
    assert _tables(out) == _tables(reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The grid run once, uninterrupted, in a fresh process."""
    out = tmp_path_factory.mktemp("reference")
    proc = _bench_process([*GRID, "--epochs", "1", "--out", str(out)], stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=300) == 0
    return out


def test_runs_are_deterministic_per_seed_whatever_ran_before(reference, tmp_path):
    """What resuming relies on: a run's record does not depend on the runs before it in the
    process (here: seed 1 alone, in this process, after other tests)."""
    assert main(["bench", *GRID[:5], "--seeds", "1", *GRID[8:], "--epochs", "1",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    mine = read_results(tmp_path / "results.jsonl")
    ref = {r["key"]: r for r in read_results(reference / "results.jsonl")}
    assert len(mine) == N_RUNS // 2
    for r in mine:
        assert _without_timing(r) == _without_timing(ref[r["key"]])


def test_grid_killed_mid_write_and_between_runs_resumes_to_the_same_tables(reference, tmp_path):
    args = [*GRID, "--epochs", "1", "--out", str(tmp_path)]
    path = tmp_path / "results.jsonl"
    # 1. killed while writing its third record: two complete lines and a torn one
    first = _killed_run(args, "torn", 3)
    assert first.returncode == -signal.SIGKILL, first.stderr
    lines = path.read_bytes().split(b"\n")
    assert len(lines) == 3 and lines[2]
    with pytest.raises(json.JSONDecodeError):  # torn: half a record, not a complete one
        json.loads(lines[2])
    # 2. started again: the torn tail is moved aside with a warning, then killed right after
    #    its second record is on disk
    second = _killed_run(args, "after", 2)
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert "cut off mid-write" in second.stderr
    assert len(list(tmp_path.glob("results.jsonl.torn-*"))) == 1
    assert len(read_results(path)) == 4
    # 3. started again: finishes the other four runs, repeats none
    assert main(["bench", *args]) == 0
    assert len(read_results(path)) == N_RUNS
    _assert_same_results_as(tmp_path, reference)


@pytest.mark.slow
def test_grid_killed_at_random_moments_resumes_to_the_same_tables(tmp_path):
    """SIGKILL at seeded random moments (during start-up, training, evaluation or the append),
    then the same command again, until it completes."""
    epochs = ["--epochs", "6"]  # about a second per run
    reference = tmp_path / "reference"
    assert _bench_process([*GRID, *epochs, "--out", str(reference)]).wait(timeout=600) == 0
    out = tmp_path / "killed"
    path = out / "results.jsonl"
    rng = random.Random(13)
    kills, attempts = 0, 0
    while True:
        attempts += 1
        assert attempts <= 20, "the grid never completed"
        before = len(read_results(path))
        proc = _bench_process([*GRID, *epochs, "--out", str(out)], stderr=subprocess.PIPE)
        if kills < 6:
            if rng.random() < 0.3:  # anywhere in start-up
                time.sleep(rng.uniform(0.0, 4.0))
            else:  # somewhere in the run after the next record
                deadline = time.monotonic() + 300
                while proc.poll() is None and len(read_results(path)) == before:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=60)
                kills += 1
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        break
    assert kills >= 3
    _assert_same_results_as(out, reference)


# --- torn, corrupt, empty and older-format results files --------------------------------------


def _rec(key: str, seed: int = 0) -> dict:
    return {
        "key": key,
        "method": "proxy_anchor",
        "noise": "clean",
        "seed": seed,
        "mode": "test",
        "metrics": {m: 0.5 for m in METRICS},
        "train_seconds": 1.0,
    }


def _write_lines(path: Path, *lines: str, newline_at_end: bool = True) -> None:
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""))


def test_torn_last_line_is_cut_off_and_kept_aside_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    full = json.dumps(_rec("b"))
    _write_lines(path, json.dumps(_rec("a")), full[:40], newline_at_end=False)
    with pytest.warns(RuntimeWarning, match="cut off mid-write"):
        aside = repair_results(path)
    assert path.read_text() == json.dumps(_rec("a")) + "\n"
    assert aside.read_text() == full[:40]
    grid._append(path, _rec("c"))
    assert [r["key"] for r in read_results(path)] == ["a", "c"]


def test_only_line_torn_leaves_an_empty_file_to_append_to(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_rec("a"))[:30])
    with pytest.warns(RuntimeWarning, match="cut off"):
        repair_results(path)
    assert path.read_bytes() == b""
    grid._append(path, _rec("b"))
    assert [r["key"] for r in read_results(path)] == ["b"]


def test_complete_record_missing_only_its_newline_is_kept_not_moved_aside(tmp_path):
    """A kill between the record's closing brace and its newline: the run finished, so its
    record stays (the newline is added) instead of being repeated."""
    path = tmp_path / "results.jsonl"
    _write_lines(path, json.dumps(_rec("a")), json.dumps(_rec("b")), newline_at_end=False)
    with pytest.warns(RuntimeWarning, match="newline"):
        assert repair_results(path) is None
    assert list(tmp_path.iterdir()) == [path]  # nothing moved aside
    grid._append(path, _rec("c"))
    assert [r["key"] for r in read_results(path)] == ["a", "b", "c"]


def test_corrupt_line_in_the_middle_is_skipped_with_a_warning_naming_it(tmp_path):
    path = tmp_path / "results.jsonl"
    _write_lines(path, json.dumps(_rec("a")), '{"key": "x", "met\x00\x00', json.dumps(_rec("b")))
    with pytest.warns(RuntimeWarning, match=r"line 2 .*not valid JSON"):
        recs = read_results(path)
    assert [r["key"] for r in recs] == ["a", "b"]  # the finished runs around it survive
    assert repair_results(path) is None  # nothing torn at the end: the file is left alone


def test_empty_results_file_resumes_as_a_fresh_grid(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"")
    assert read_results(path) == [] and repair_results(path) is None
    grid._append(path, _rec("a"))
    assert path.read_text() == json.dumps(_rec("a")) + "\n"


def test_record_of_an_older_format_is_skipped_with_a_warning_and_stays_in_the_file(tmp_path):
    path = tmp_path / "results.jsonl"
    old = {"method": "proxy_anchor", "noise": "clean", "seed": 0, "R@1": 0.5}  # no key, metrics
    _write_lines(path, json.dumps(_rec("a")), json.dumps(old), "[1, 2]", json.dumps(_rec("b")))
    with pytest.warns(RuntimeWarning, match=r"line 2 .*older format.*key.*metrics"):
        recs = read_results(path)
    assert [r["key"] for r in recs] == ["a", "b"]
    assert json.dumps(old) in path.read_text()  # not deleted: only left out of the tables


def test_cli_resumes_over_a_corrupt_middle_line_and_an_older_record(tmp_path):
    args = ["bench", "--methods", "proxy_anchor", "--noise", "clean", "--epochs", "1",
            "--no-plots", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main([*args, "--seeds", "0", "1"]) == 0
    path = tmp_path / "results.jsonl"
    seed0, seed1 = path.read_text().splitlines()
    older = json.loads(seed1)
    del older["metrics"]
    _write_lines(path, seed0, "not json at all", json.dumps(older))
    with pytest.warns(RuntimeWarning, match="older format|not valid JSON"):
        assert main([*args, "--seeds", "0", "1"]) == 0
    recs = read_results(path)
    assert sorted(r["seed"] for r in recs) == [0, 1]  # seed 0 kept, seed 1 run again
    assert recs[0] == json.loads(seed0)
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["proxy_anchor"]["clean"]["seeds"] == 2
