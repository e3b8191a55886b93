"""Benchmark methods as data (timm style): a name, a method class and the library constructors
whose hyperparameters it exposes.

One source of truth for defaults: a method's hyperparameters are read from the signatures of
the library constructors it calls (``inspect.signature`` defaults of, e.g.,
`SmoothProxyAnchorLoss`), so whatever the library's defaults are is
what the benchmark runs. The benchmark itself adds only its own knobs
(`BENCH_DEFAULTS`: epochs, batches, head, learning rates) and, per protocol,
`PROTOCOL_DEFAULTS`. Constructors are named by ``"module:attribute"`` strings and
imported only when a method's defaults are asked for: this module imports no method code.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BENCH_DEFAULTS",
    "Component",
    "MethodSpec",
    "METHODS",
    "PROTOCOLS",
    "PROTOCOL_DEFAULTS",
    "check_protocol",
    "get_method",
    "list_methods",
    "register_method",
]

PROTOCOLS = ("frozen", "finetune")
# Hyperparameters a protocol adds to every method's defaults. The frozen protocol adds none, so
# its resolved configurations (and run keys) do not depend on the finetune code path.
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "frozen": {},
    "finetune": {
        "backbone_lr": 1e-4,  # AdamW lr of the backbone (head / proxies keep the method's lrs)
        "freeze_bn": True,  # BatchNorm layers in eval mode: running statistics stay fixed
        # two-view methods: a weak and a strong (SimCLR-style) view per image; "weak": two weak
        "second_view": "strong",
    },
}

# The benchmark's own knobs, shared by every trained method (not library hyperparameters).
BENCH_DEFAULTS: dict[str, Any] = {
    "epochs": 6,
    "batch_size": 120,
    "m_per_class": 4,  # class-balanced batches: batch_size // m_per_class classes, m each
    "embedding_size": 512,
    "head": "residual",  # noisy_pml.models.EmbeddingHead kind
    "head_hidden": 512,
    "head_init": "pca",
    "lr": 1e-4,  # AdamW lr of the head
    "weight_decay": 1e-4,
    "train_views": "all",  # "all": any cached view per sample; "center": the centre crop only
}
PROXY_DEFAULTS: dict[str, Any] = {"loss_lr_mult": 100.0}  # proxies at lr x 100 (Proxy-Anchor)

_SIMPLE = (bool, int, float, str, type(None))


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of `PROTOCOLS`, else a clear error."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Component:
    """A library constructor a method calls, and which of its arguments are hyperparameters.

    Args:
        role: what the method uses it for (``"loss"``, ``"miner"``, ``"head"``, ``"phase1"``).
        target: ``"module:attribute"`` of the constructor (or function).
        from_data: arguments the method fills in from the data (``num_classes``, ...), not
            hyperparameters.
        rename: library argument -> configuration key (e.g. ``c`` -> ``curvature``).
        override: arguments whose value is part of the method's definition rather than the
            library default (e.g. Contrastive margins on cosine *similarity*), with that value.
    """

    role: str
    target: str
    from_data: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)

    def library_defaults(self) -> dict[str, Any]:
        """Configuration key -> value: the constructor's signature defaults (+ ``override``)."""
        sig = inspect.signature(_resolve(self.target))
        out: dict[str, Any] = {}
        for name, p in sig.parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in self.from_data:
                continue
            value = self.override.get(name, p.default)
            if value is inspect.Parameter.empty or not isinstance(value, _SIMPLE):
                continue  # required arguments and objects (distances, reducers) are not knobs
            out[self.rename.get(name, name)] = value
        return out

    def kwargs(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The constructor's keyword arguments taken from a resolved configuration."""
        keys = {self.rename.get(k, k): k for k in self._arg_names()}
        return {arg: cfg[key] for key, arg in keys.items() if key in cfg}

    def _arg_names(self) -> list[str]:
        sig = inspect.signature(_resolve(self.target))
        return [n for n in sig.parameters if n not in self.from_data]


@dataclass(frozen=True)
class MethodSpec:
    """A benchmark method: its class, the library components it exposes, its own knobs.

    Args:
        name: the name used on the command line.
        build: ``"module:Class"`` of the method (constructed as ``Class(train, cfg, spec)``).
        components: library constructors whose signature defaults are its hyperparameters.
        knobs: method-level settings that are not library arguments (e.g. AHSML's
            ``consistency``: train on two views), on top of `BENCH_DEFAULTS`.
        description: one line for ``--list`` and the docs.
        two_view: whether a batch holds two views of each image.
        trained: False for the untrained floor (no benchmark knobs).
    """

    name: str
    build: str
    components: tuple[Component, ...] = ()
    knobs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    two_view: bool = False
    trained: bool = True

    def component(self, role: str) -> Component:
        """The component playing ``role`` (clear error when the method has none)."""
        for c in self.components:
            if c.role == role:
                return c
        roles = [c.role for c in self.components]
        raise ValueError(f"method {self.name!r} has no component {role!r}; it has {roles}")

    def library_defaults(self) -> dict[str, Any]:
        """Hyperparameters read from the library constructors (the one source of truth)."""
        out: dict[str, Any] = {}
        for comp in self.components:
            for key, value in comp.library_defaults().items():
                if key in out and out[key] != value:
                    raise ValueError(
                        f"method {self.name!r}: hyperparameter {key!r} has default {out[key]!r} "
                        f"in one component and {value!r} in {comp.target}; rename one of them"
                    )
                out[key] = value
        return out

    def defaults_for(self, protocol: str = "frozen") -> dict[str, Any]:
        """Benchmark knobs + library defaults + the ``protocol``'s additions."""
        check_protocol(protocol)
        if not self.trained:
            return {"epochs": 0, **self.knobs}
        return {
            **BENCH_DEFAULTS,
            **self.knobs,
            **self.library_defaults(),
            **PROTOCOL_DEFAULTS[protocol],
        }

    def config(
        self, overrides: dict[str, Any] | None = None, protocol: str = "frozen"
    ) -> dict[str, Any]:
        """Defaults (of ``protocol``) updated by ``overrides``; unknown keys and values of the
        wrong type raise a ValueError naming the key, the value and what was expected."""
        cfg = self.defaults_for(protocol)
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise ValueError(
                    f"method {self.name!r} has no hyperparameter {key!r}; "
                    f"expected one of {sorted(cfg)}"
                )
            cfg[key] = check_value(key, value, cfg[key])
        return cfg

    def load(self) -> type:
        """The method class."""
        return _resolve(self.build)


def check_value(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of ``default`` (ints pass for floats), else a ValueError.

    A default of None accepts anything (the library checks it). Counts and sizes of the
    benchmark (epochs, batch_size, ...) must be non-negative, learning rates positive.
    """
    expected: tuple[type, ...] | None = None
    if isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, int):  # PML writes float defaults as ints (alpha=32)
        expected = (int,) if key in _INTEGER else (int, float)
    elif isinstance(default, float):
        expected = (int, float)
    elif isinstance(default, str):
        expected = (str,)
    if expected is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)
    ):
        names = " or ".join(t.__name__ for t in expected)
        raise ValueError(f"{key} must be {names} (like its default {default!r}), got {value!r}")
    if isinstance(default, float):
        value = float(value)
    if key in _NON_NEGATIVE and value < 0:
        raise ValueError(f"{key} must be >= 0, got {value!r}")
    if key in _POSITIVE and value <= 0:
        raise ValueError(f"{key} must be > 0, got {value!r}")
    return value


_INTEGER = {
    "epochs",
    "batch_size",
    "m_per_class",
    "embedding_size",
    "head_hidden",
    "conf_epochs",
}
_NON_NEGATIVE = {"epochs", "weight_decay"}
_POSITIVE = {
    "batch_size",
    "m_per_class",
    "embedding_size",
    "head_hidden",
    "lr",
    "backbone_lr",
    "loss_lr_mult",
    "conf_lr",
    "conf_batch_size",
}


class _Registry:
    def __init__(self) -> None:
        self._items: dict[str, MethodSpec] = {}

    def register(self, spec: MethodSpec) -> MethodSpec:
        if spec.name in self._items:
            raise ValueError(f"method {spec.name!r} is already registered")
        self._items[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> MethodSpec:
        if name not in self._items:
            raise ValueError(f"unknown method {name!r}; expected one of {sorted(self._items)}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


METHODS = _Registry()


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to `METHODS` (a user's own method is registered the same way)."""
    return METHODS.register(spec)


def get_method(name: str) -> MethodSpec:
    """The registered `MethodSpec` called ``name`` (clear error listing the choices)."""
    return METHODS[name]


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(METHODS)


# ---------------------------------------------------------------------------------------------
# the methods of the benchmark

_M = "noisy_pml.bench.methods"
_PML_L, _PML_M = "pytorch_metric_learning.losses", "pytorch_metric_learning.miners"
# Contrastive loss on cosine *similarity* (XBM's form): positives pulled above 1 - 0 = 1,
# negatives pushed below 0.5. PML's own defaults (0, 1) are margins of a *distance*.
_COSINE_CONTRASTIVE = {"pos_margin": 1.0, "neg_margin": 0.5}
_PRISM = Component(
    "miner", "noisy_pml.miners:PRISMMiner", from_data=("num_samples", "num_classes", "inner_miner")
)
_MS_MINER = Component(
    "inner_miner", f"{_PML_M}:MultiSimilarityMiner", rename={"epsilon": "epsilon"}
)
# AHSML: the Poincare map of the head (curvature c) and the per-sample threshold memory
_POINCARE = Component(
    "poincare",
    "noisy_pml.models:PoincareHead",
    from_data=("in_features", "out_features", "learnable_c"),
    rename={"c": "curvature"},
)
_THRESHOLD_DATA = ("num_samples", "views", "thresholds", "loss")
# phase 1 of Smooth PA: what the benchmark supplies to estimate_confidences (not knobs)
_PHASE1_DATA = ("trunk", "dataset", "num_classes", "seed", "device", "progress", "eval_dataset",
                "fold_log")
_AHSML_KNOBS = {"hyperbolic": True, "consistency": True}  # Poincare head; two views per image

for _spec in (
    MethodSpec(
        "frozen_features",
        f"{_M}:FrozenFeatures",
        description="No training: cosine kNN on the frozen backbone features (the floor)",
        trained=False,
    ),
    MethodSpec(
        "proxy_anchor",
        f"{_M}:ProxyAnchorMethod",
        (Component("loss", f"{_PML_L}:ProxyAnchorLoss", ("num_classes", "embedding_size")),),
        PROXY_DEFAULTS,
        "Proxy-Anchor (Kim et al., CVPR 2020), PML's ProxyAnchorLoss",
    ),
    MethodSpec(
        "multi_similarity",
        f"{_M}:MultiSimilarityMethod",
        (Component("loss", f"{_PML_L}:MultiSimilarityLoss"), _MS_MINER),
        description="Multi-Similarity loss + MS miner (Wang et al., CVPR 2019)",
    ),
    MethodSpec(
        "contrastive",
        f"{_M}:ContrastiveMethod",
        (Component("loss", f"{_PML_L}:ContrastiveLoss", override=_COSINE_CONTRASTIVE),),
        description="Contrastive loss on cosine similarity (Hadsell et al. 2006; XBM's form)",
    ),
    MethodSpec(
        "prism",
        f"{_M}:PRISMMethod",
        (Component("loss", f"{_PML_L}:ContrastiveLoss", override=_COSINE_CONTRASTIVE), _PRISM),
        description="PRISM (Liu et al., CVPR 2021): contrastive loss + noisy_pml PRISMMiner",
    ),
    MethodSpec(
        "prism_ms",
        f"{_M}:PRISMMSMethod",
        (Component("loss", f"{_PML_L}:MultiSimilarityLoss"), _PRISM, _MS_MINER),
        description="PRISM filter + MS miner + Multi-Similarity loss",
    ),
    MethodSpec(
        "smooth_proxy_anchor",
        f"{_M}:SmoothProxyAnchorMethod",
        (
            Component(
                "loss",
                "noisy_pml.losses:SmoothProxyAnchorLoss",
                ("num_classes", "embedding_size", "confidence_source"),
            ),
            Component(
                "phase1",
                "noisy_pml.trainers:estimate_confidences",
                _PHASE1_DATA,
                rename={
                    "folds": "conf_folds",
                    "held_out_fraction": "conf_held_out",
                    "epochs": "conf_epochs",
                    "batch_size": "conf_batch_size",
                    "lr": "conf_lr",
                    "patience": "conf_patience",
                    "stop_on": "conf_stop_on",
                    "hidden_size": "conf_hidden",
                    "dropout": "conf_dropout",
                },
            ),
        ),
        PROXY_DEFAULTS,
        "Smooth Proxy-Anchor (Roig et al. 2020): BCE confidence module, then "
        "confidence-weighted Proxy-Anchor (noisy_pml.losses.SmoothProxyAnchorLoss)",
    ),
    MethodSpec(
        "ahsml_ms",
        f"{_M}:AHSMLMSMethod",
        (
            Component(
                "loss", "noisy_pml.losses:MultiSimilarityStarLoss", from_data=_THRESHOLD_DATA
            ),
            _POINCARE,
        ),
        _AHSML_KNOBS,
        "AHSML with MS* (noisy_pml.losses.MultiSimilarityStarLoss), hyperbolic head, two views",
        two_view=True,
    ),
    MethodSpec(
        "ahsml_contrastive",
        f"{_M}:AHSMLContrastiveMethod",
        (
            Component("loss", "noisy_pml.losses:AdaptiveThresholdLoss", from_data=_THRESHOLD_DATA),
            Component("inner_loss", f"{_PML_L}:ContrastiveLoss", override=_COSINE_CONTRASTIVE),
            _POINCARE,
        ),
        _AHSML_KNOBS,
        "AHSML thresholds on PML's ContrastiveLoss (noisy_pml.losses.AdaptiveThresholdLoss), "
        "hyperbolic head, two views",
        two_view=True,
    ),
):
    register_method(_spec)
