"""The benchmark under torchrun (noisy_pml.bench.distributed): two gloo processes started with
torchrun's environment variables run ``noisy-pml bench`` and give the metrics of one process with
the same global batch; only rank 0 writes; the finetune protocol completes; the single-process
path needs no process group."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.multiprocessing as mp

from noisy_pml.bench.cli import main
from noisy_pml.bench.distributed import share_bounds, torchrun_world_size

WORLD = 2
FROZEN = [
    "bench", "--methods", "frozen_features,proxy_anchor,smooth_proxy_anchor", "--noise", "clean",
    "symmetric:0.7",
    "--seeds", "0", "--epochs", "1", "--set", "conf_epochs=5", "--threads", "1",
    "--device", "cpu", "--no-plots", "--quiet",
]
FINETUNE = [
    "bench", "--protocol", "finetune", "--backbone", "tiny_cnn", "--image-size", "32",
    "--methods", "proxy_anchor,ahsml_ms", "--noise", "symmetric:0.5", "--seeds", "0",
    "--epochs", "1", "--threads", "1", "--device", "cpu", "--no-plots", "--quiet",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv: list[str]) -> None:
    """One process as torchrun starts it: only the environment says it is distributed."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    assert main(argv) == 0


def _torchrun(argv: list[str]) -> None:
    mp.spawn(_rank, args=(_free_port(), argv), nprocs=WORLD)


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_share_bounds_split_whole_classes_in_rank_order():
    # 5 classes of 8 over 2 ranks: classes 0-1 on rank 0, 2-4 on rank 1
    assert share_bounds(40, 8, 2) == [0, 16, 40]
    assert share_bounds(120, 4, 2) == [0, 60, 120]
    assert share_bounds(120, 4, 8) == [0, 12, 28, 44, 60, 72, 88, 104, 120]
    with pytest.raises(ValueError, match="3 classes of m_per_class=4, fewer than the 4 ranks"):
        share_bounds(12, 4, 4)


def test_torchrun_environment_is_detected(monkeypatch):
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun_world_size() == 1
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert torchrun_world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="WORLD_SIZE='four'"):
        torchrun_world_size()


@pytest.mark.slow
def test_two_processes_give_the_metrics_of_one(tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    _torchrun([*FROZEN, "--out", str(tmp_path / "two")])
    assert main([*FROZEN, "--out", str(tmp_path / "one")]) == 0
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    # rank 0 alone wrote, one line per run, under the single-process run key (resume unchanged)
    assert [r["key"] for r in two] == [r["key"] for r in one]
    methods = ["frozen_features", "proxy_anchor", "smooth_proxy_anchor"]
    assert [r["method"] for r in one] == methods + methods[1:]
    assert all(r["world_size"] == WORLD for r in two) and all("world_size" not in r for r in one)
    for a, b in zip(one, two, strict=True):
        # same global batches, same phase-1 table, same gradients: equal up to the order in
        # which the two ranks' gradients are summed (float32 rounding)
        assert a["noisy_labels_sha1"] == b["noisy_labels_sha1"]
        assert b["loss_per_epoch"] == pytest.approx(a["loss_per_epoch"], abs=2e-5)
        for name, value in a["metrics"].items():
            assert b["metrics"][name] == pytest.approx(value, abs=1e-5), (a["method"], name)
    spa_one, spa_two = one[-1]["detection"], two[-1]["detection"]
    assert spa_two["auroc"] == pytest.approx(spa_one["auroc"], abs=1e-9)  # the broadcast table
    assert (tmp_path / "two" / "results.md").exists()


@pytest.mark.slow
def test_finetune_protocol_completes_under_two_processes(tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    _torchrun([*FINETUNE, "--out", str(tmp_path)])
    recs = _records(tmp_path)
    assert [r["method"] for r in recs] == ["proxy_anchor", "ahsml_ms"]
    for r in recs:
        assert r["world_size"] == WORLD and r["protocol"] == "finetune"
        assert 0.0 < r["metrics"]["R@1"] <= 1.0
        assert len(r["loss_per_epoch"]) == 1
