"""Name -> constructor + defaults registries (timm style) for benchmark methods and backbones.

A method is a name, a constructor and its default hyperparameters; command-line and config-file
choices are looked up here, never dispatched through if/elif chains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backbones import BACKBONES, BackboneSpec, build_backbone

__all__ = [
    "MethodSpec",
    "METHODS",
    "PROTOCOLS",
    "PROTOCOL_DEFAULTS",
    "register_method",
    "get_method",
    "list_methods",
    "BACKBONES",
    "BackboneSpec",
    "build_backbone",
]


PROTOCOLS = ("frozen", "finetune")
# Hyperparameters a protocol adds to every method's defaults. The frozen protocol adds none, so
# its resolved configurations (and run keys) do not depend on the finetune code path.
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "frozen": {},
    "finetune": {
        "backbone_lr": 1e-4,  # AdamW lr of the backbone (head / proxies keep the method's lrs)
        "freeze_bn": True,  # BatchNorm layers in eval mode: running statistics stay fixed
    },
}


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of `PROTOCOLS`, else a clear error."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


@dataclass(frozen=True)
class MethodSpec:
    """A benchmark method: constructor, default hyperparameters and what it needs."""

    name: str
    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    two_view: bool = False
    requires: tuple[str, ...] = ()  # importable names the method needs (e.g. a noisy_pml loss)

    def available(self) -> bool:
        """True when every module attribute in ``requires`` ("module:Name") imports."""
        import importlib

        for req in self.requires:
            module, _, name = req.partition(":")
            try:
                mod = importlib.import_module(module)
            except ImportError:
                return False
            if name and not hasattr(mod, name):
                return False
        return True

    def defaults_for(self, protocol: str = "frozen") -> dict[str, Any]:
        """The method's defaults plus those the ``protocol`` adds (`PROTOCOL_DEFAULTS`)."""
        return {**self.defaults, **PROTOCOL_DEFAULTS[check_protocol(protocol)]}

    def config(
        self, overrides: dict[str, Any] | None = None, protocol: str = "frozen"
    ) -> dict[str, Any]:
        """Defaults (of ``protocol``) updated by ``overrides``; unknown keys raise."""
        cfg = self.defaults_for(protocol)
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise ValueError(
                    f"method {self.name!r} has no hyperparameter {key!r}; "
                    f"expected one of {sorted(cfg)}"
                )
            cfg[key] = value
        return cfg


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


def register_method(
    name: str,
    defaults: dict[str, Any] | None = None,
    description: str = "",
    two_view: bool = False,
    requires: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a method constructor ``build(data, cfg, seed)`` under ``name``."""

    def deco(build: Callable[..., Any]) -> Callable[..., Any]:
        METHODS.register(
            MethodSpec(name, build, dict(defaults or {}), description, two_view, requires)
        )
        return build

    return deco


def get_method(name: str) -> MethodSpec:
    """The registered [`MethodSpec`][] called ``name`` (clear error listing the choices)."""
    _ensure_methods_loaded()
    spec = METHODS[name]
    if not spec.available():
        raise ValueError(
            f"method {name!r} needs {list(spec.requires)}, which is not importable in this "
            "installation"
        )
    return spec


def list_methods(available_only: bool = True) -> list[str]:
    """Registered method names (those whose requirements import, unless told otherwise)."""
    _ensure_methods_loaded()
    return [n for n in METHODS if not available_only or METHODS[n].available()]


def _ensure_methods_loaded() -> None:
    from . import methods  # noqa: F401  (registers the methods on import)
