"""The grid: protocols chosen by name, run keys, and the resumable results file (JSONL, one
line per run, torn tails moved aside before appending)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..noise import NoiseRecipe
from . import distributed
from .data import BenchData, DataSpec, prepare_features, resolve_root
from .finetune import prepare_images, run_one_finetune
from .frozen import run_frozen
from .registry import get_method
from .training import RunSpec

__all__ = [
    "PROTOCOL_RUNNERS",
    "RECORD_FIELDS",
    "RESULTS_NAME",
    "prepare_data",
    "read_results",
    "repair_results",
    "run_grid",
    "run_key",
    "run_one",
    "parse_overrides",
]


RESULTS_NAME = "results.jsonl"


@dataclass(frozen=True)
class Protocol:
    """How a protocol prepares its data and runs one training run."""

    prepare: Callable[..., Any]
    run: Callable[..., dict[str, Any]]


PROTOCOL_RUNNERS: dict[str, Protocol] = {
    "frozen": Protocol(prepare_features, run_frozen),
    "finetune": Protocol(prepare_images, lambda *a, **k: run_one_finetune(*a, **k)[0]),
}


def run_key(data: DataSpec, run: RunSpec, cfg: dict[str, Any]) -> str:
    """Hash of everything that determines a run's result."""
    payload = {
        "data": data.as_dict(),
        "method": run.method,
        "name": run.name,
        "noise": str(NoiseRecipe.parse(run.noise)),
        "seed": run.seed,
        "mode": run.mode,
        "cfg": cfg,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_data(
    spec: DataSpec,
    mode: str = "test",
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_classes: int = 20,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> BenchData:
    """Features for one evaluation mode.

    With ``spec.protocol == "finetune"`` the result is a
    `ImageData` (images, plus frozen backbone features of the
    training images for the head's initialisation and Smooth PA's phase 1).

    ``mode="test"``: train on every training class, evaluate on the test classes.
    ``mode="val"``: carve ``val_classes`` of the training classes (a fixed, seeded choice),
    train on the others and evaluate on the carved ones: hyperparameters are chosen here,
    never on the test classes.
    """
    if mode not in ("test", "val"):
        raise ValueError(f"mode must be 'test' or 'val', got {mode!r}")
    key = (spec, mode, str(data_root), str(cache_dir), val_classes)
    if key not in _PREPARED:
        root = resolve_root(spec.dataset, data_root)
        prepare = PROTOCOL_RUNNERS[spec.protocol].prepare
        _PREPARED[key] = prepare(spec, mode, root, cache_dir, val_classes, progress, device)
    return _PREPARED[key]


_PREPARED: dict[tuple, BenchData] = {}


def run_one(
    data: Any,
    run: RunSpec,
    cfg: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Train one method on one noisy copy of the training labels and evaluate retrieval, with
    the protocol ``data`` was prepared for (``data.protocol``)."""
    return PROTOCOL_RUNNERS[data.protocol].run(data, run, cfg, device)


# what the tables need of a record; a line without them was written by an older format
RECORD_FIELDS = ("key", "method", "noise", "seed", "metrics", "train_seconds")


def read_results(path: str | os.PathLike, warn: bool = True) -> list[dict[str, Any]]:
    """Records of a results JSONL file, skipping lines that are not run records.

    A torn last line (an interrupted write, see `repair_results`) is skipped silently. A line
    elsewhere that is not valid JSON (corrupt), or a record that lacks a field of
    ``RECORD_FIELDS`` (written by an older format), is skipped with a `RuntimeWarning` naming
    the file and line (unless ``warn=False``). Skipped lines stay in the file; a grid counts
    their runs as not finished and runs them again.
    """
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    torn = len(lines) - 1  # index of a last line without its newline (empty when complete)
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if warn and i != torn:
                _warn_skipped(p, i, "it is not valid JSON (a corrupt line)")
            continue
        missing = (
            [f for f in RECORD_FIELDS if f not in rec] if isinstance(rec, dict) else RECORD_FIELDS
        )
        if missing:
            if warn:
                _warn_skipped(
                    p,
                    i,
                    f"it is not a run record of this format (an older format?): it "
                    f"lacks {', '.join(missing)}",
                )
            continue
        out.append(rec)
    return out


def _warn_skipped(path: Path, index: int, why: str) -> None:
    warnings.warn(
        f"{path}: line {index + 1} skipped: {why}. The line stays in the file; its run, if "
        "part of this grid, counts as not finished and runs again.",
        RuntimeWarning,
        stacklevel=3,
    )


def repair_results(path: str | os.PathLike) -> Path | None:
    """Move a torn last line of a results JSONL file aside; return where it went (or None).

    A process killed while writing leaves a last line without its newline. Appending to such a
    file would glue the next record onto the torn line and lose both, so before any append the
    torn tail is cut off (the file is truncated after its last newline) and saved next to it as
    ``<name>.torn-<unix time>`` with a warning. Every complete line (every finished run) stays.
    """
    p = Path(path)
    if not p.exists():
        return None
    data = p.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
    try:  # killed between a complete record and its newline: the run finished, keep it
        complete = isinstance(json.loads(data[cut:]), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        complete = False
    if complete:
        with open(p, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        warnings.warn(
            f"{p}: its last record was complete but lacked its newline (an interrupted "
            "write); added the newline and kept the record.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    aside = p.with_name(f"{p.name}.torn-{int(time.time())}-{os.getpid()}")
    aside.write_bytes(data[cut:])
    with open(p, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(
        f"{p}: its last line was cut off mid-write ({len(data) - cut} bytes, no newline; an "
        f"interrupted run). Moved it to {aside.name}; that run will be repeated.",
        RuntimeWarning,
        stacklevel=2,
    )
    return aside


def _append(path: Path, record: dict[str, Any]) -> None:
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:  # another process sharing the file was killed mid-write
            repair_results(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_grid(
    data_spec: DataSpec,
    runs: Iterable[RunSpec],
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cfg_for: Any = None,
    val_classes: int = 20,
    device: str | torch.device = "auto",
) -> list[dict[str, Any]]:
    """Run every `RunSpec` not finished yet; append each result to ``results.jsonl``.

    A run is identified by `run_key` (data spec, method, resolved hyperparameters, noise,
    seed, mode): an interrupted grid started again skips the runs already in the file.
    ``cfg_for(run) -> dict`` may supply resolved hyperparameters (e.g. those chosen on the
    validation classes); by default the method's defaults updated by ``run.overrides``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_NAME
    main = distributed.is_main()  # under torchrun: rank 0 owns the results file
    if main:
        repair_results(path)
    done = {r.get("key") for r in read_results(path)} if main else None
    done = distributed.broadcast_object(done)
    runs = list(runs)
    todo = []
    for run in runs:
        cfg = (
            cfg_for(run)
            if cfg_for is not None
            else get_method(run.method).config(run.overrides_dict(), data_spec.protocol)
        )
        key = run_key(data_spec, run, cfg)
        if key not in done:
            todo.append((run, cfg, key))
            done.add(key)
    bar = tqdm(todo, desc=f"runs {data_spec.dataset}", disable=not progress or not todo or not main)
    for run, cfg, key in bar:
        finished = key in {r.get("key") for r in read_results(path, warn=False)} if main else None
        if distributed.broadcast_object(finished):
            continue  # finished meanwhile by another process sharing this results file
        bar.set_postfix_str(f"{run.name} {run.noise} s{run.seed} {run.mode}")
        data = prepare_data(
            data_spec, run.mode, data_root, cache_dir, val_classes, progress, device
        )
        rec = run_one(data, run, cfg, device)
        if rec is None:
            continue  # a rank other than 0 under torchrun: rank 0 writes the record
        rec.update(
            {
                "key": key,
                "protocol": data_spec.protocol,
                "data": data_spec.as_dict(),
                "eval_set": data.description,
            }
        )
        _append(path, rec)
    return distributed.broadcast_object(read_results(path) if main else None)


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """``["lr=1e-3", "head=linear"]`` -> (("head", "linear"), ("lr", 0.001)) (JSON values)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return tuple(sorted(out.items()))
