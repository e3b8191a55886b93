"""The benchmark's run API in one place (re-exports of the layers: `.data`,
`.training`, `.frozen`, `.finetune`, `.grid`)."""

from .data import BenchData, DataSpec, carve_validation, prepare_features, resolve_root
from .frozen import run_frozen
from .grid import (
    RESULTS_NAME,
    _append,
    parse_overrides,
    prepare_data,
    read_results,
    repair_results,
    run_grid,
    run_key,
    run_one,
)
from .training import RunSpec, balanced_sampler, build_method, make_record

__all__ = [
    "RESULTS_NAME",
    "BenchData",
    "DataSpec",
    "RunSpec",
    "_append",
    "balanced_sampler",
    "build_method",
    "carve_validation",
    "make_record",
    "parse_overrides",
    "prepare_data",
    "prepare_features",
    "read_results",
    "repair_results",
    "resolve_root",
    "run_frozen",
    "run_grid",
    "run_key",
    "run_one",
]
