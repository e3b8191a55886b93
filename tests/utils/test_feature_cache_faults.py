"""Fault injection on the feature cache: a truncated, empty, garbled, wrong-shaped or tampered
cache file is moved aside with a warning and rebuilt; a temporary file left by a killed writer is
never read and is removed with a warning; a writer killed mid-write leaves nothing under the
final name."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from noisy_pml.utils.feature_cache import ViewSpec, cache_path, extract_view, load_views

ROOT = Path(__file__).resolve().parents[2]


def _images(folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        d = folder / f"{i:03d}.cls"
        d.mkdir(parents=True)
        p = d / f"img{i}.png"
        Image.new("RGB", (40, 50), colour).save(p)
        paths.append(str(p))
    return paths


SPEC = ViewSpec(dataset="cub", split="train", backbone="tiny_cnn", image_size=32)


@pytest.fixture
def cached(tmp_path):
    paths = _images(tmp_path / "img")
    cache = tmp_path / "cache"
    first, _ = load_views([SPEC], paths, cache, progress=False, num_workers=0)
    return paths, cache, first


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _resave(path: Path, **change) -> None:
    blob = torch.load(path, weights_only=False)
    blob.update(change)
    blob = {k: v for k, v in blob.items() if v is not None}
    torch.save(blob, path)


CORRUPTIONS = {
    "truncated": _truncate,
    "zero_length": _empty,
    "not_a_torch_file": _garbage,
    "rows_and_paths_disagree": lambda p: _resave(p, features=torch.zeros(2, 16).half()),
    "one_dimensional": lambda p: _resave(p, features=torch.zeros(48).half()),
    "features_missing": lambda p: _resave(p, features=None),
    "checksum_mismatch": lambda p: _resave(
        p, features=torch.load(p, weights_only=False)["features"] + 1
    ),
    "lacks_a_requested_image": lambda p: _resave(p, paths=["a/x.png", "b/y.png", "c/z.png"]),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_cache_file_is_moved_aside_with_a_warning_and_rebuilt(cached, corrupt):
    paths, cache, first = cached
    path = cache_path(SPEC, paths, cache)
    corrupt(path)
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        again, _ = load_views([SPEC], paths, cache, progress=False, num_workers=0)
    assert torch.equal(again, first)
    assert len(list(cache.glob(f"{path.name}.corrupt-*"))) == 1  # kept for inspection
    reloaded, _ = load_views([SPEC], paths, cache, progress=False, num_workers=0)
    assert torch.equal(reloaded, first)  # the rebuilt file is used as is


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_of_a_killed_writer_is_never_read_and_is_removed(tmp_path):
    paths = _images(tmp_path / "img")
    cache = tmp_path / "cache"
    cache.mkdir()
    final = cache_path(SPEC, paths, cache)
    stale = final.with_name(f".{final.name}.{_dead_pid()}.tmp")
    stale.write_bytes(b"PK\x03\x04 half a torch file")
    with pytest.warns(RuntimeWarning, match="partial feature cache file"):
        feats, _ = load_views([SPEC], paths, cache, progress=False, num_workers=0)
    assert feats.shape == (3, 1, 16) and torch.isfinite(feats).all()
    assert sorted(p.name for p in cache.iterdir()) == [final.name]


def test_temp_file_of_a_live_writer_is_left_alone(tmp_path):
    paths = _images(tmp_path / "img")
    cache = tmp_path / "cache"
    cache.mkdir()
    final = cache_path(SPEC, paths, cache)
    live = final.with_name(f".{final.name}.{os.getppid()}.tmp")  # our parent: alive
    live.write_bytes(b"being written")
    load_views([SPEC], paths, cache, progress=False, num_workers=0)
    assert live.read_bytes() == b"being written"


# A child writing a large cache file (3 x 15M float16 features, ~90 MB through torch.save).
_BIG_WRITER = """
import sys, torch
from noisy_pml.utils.feature_cache import ViewSpec, extract_view

class Big(torch.nn.Module):
    def forward(self, x):
        return torch.ones(len(x), 15_000_000)

spec = ViewSpec(dataset="cub", split="train", backbone="tiny_cnn", image_size=32)
extract_view(spec, sys.argv[2:], sys.argv[1], model=Big(), progress=False, num_workers=0)
"""


def test_writer_killed_mid_write_leaves_no_file_under_the_final_name(tmp_path):
    paths = _images(tmp_path / "img")
    cache = tmp_path / "cache"
    final = cache_path(SPEC, paths, cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _BIG_WRITER, str(cache), *paths], env=env)
    deadline = time.monotonic() + 120
    tmp = None
    while proc.poll() is None and time.monotonic() < deadline:
        tmp = next(iter(cache.glob(f".{final.name}.*.tmp")), None) if cache.exists() else None
        if tmp is not None and tmp.stat().st_size > 0:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the writer finished before it could be killed mid-write")
    assert tmp is not None, "killed before the temporary file appeared"
    assert not final.exists()  # nothing partial under the name readers use
    with pytest.warns(RuntimeWarning, match="partial feature cache file"):
        feats, _ = load_views([SPEC], paths, cache, progress=False, num_workers=0)
    assert feats.shape == (3, 1, 16)
    assert sorted(p.name for p in cache.iterdir()) == [final.name]


def test_extract_view_returns_an_existing_file_without_rewriting_it(cached):
    paths, cache, _ = cached
    path = cache_path(SPEC, paths, cache)
    stamp = path.stat().st_mtime_ns
    assert extract_view(SPEC, paths, cache, progress=False, num_workers=0) == path
    assert path.stat().st_mtime_ns == stamp
