"""Method registry: hyperparameters come from the library constructors' signatures."""

import inspect
import sys
import types

import pytest

from noisy_pml.bench.registry import BENCH_DEFAULTS, METHODS, Component, MethodSpec, get_method

_COSINE = object()  # a default object (a distance), not a hyperparameter


def _fake_library(monkeypatch, margin=0.25):
    mod = types.ModuleType("fake_lib")

    def loss(num_classes, margin=margin, name="x", distance=_COSINE, **kwargs):
        return None

    mod.Loss = loss
    monkeypatch.setitem(sys.modules, "fake_lib", mod)


def test_defaults_are_read_from_the_constructor_signature(monkeypatch):
    _fake_library(monkeypatch, margin=0.25)
    spec = MethodSpec("m", "x:y", (Component("loss", "fake_lib:Loss", ("num_classes",)),))
    cfg = spec.config()
    assert cfg["margin"] == 0.25 and cfg["name"] == "x"
    assert "num_classes" not in cfg and "distance" not in cfg  # data and objects are not knobs
    assert {k: cfg[k] for k in BENCH_DEFAULTS} == BENCH_DEFAULTS
    _fake_library(monkeypatch, margin=0.5)  # the library changes its default ...
    assert spec.config()["margin"] == 0.5  # ... and the benchmark follows


def test_kwargs_map_renamed_keys_back_to_the_library_arguments(monkeypatch):
    _fake_library(monkeypatch)
    comp = Component("loss", "fake_lib:Loss", ("num_classes",), rename={"margin": "m"})
    spec = MethodSpec("m", "x:y", (comp,))
    cfg = spec.config({"m": 0.7})
    assert comp.kwargs(cfg) == {"margin": 0.7, "name": "x"}


@pytest.mark.parametrize(
    "method, key, target, arg",
    [
        ("smooth_proxy_anchor", "smoothing_position", "noisy_pml.losses:SmoothProxyAnchorLoss",
         "smoothing_position"),
        ("ahsml_ms", "mining_epsilon", "noisy_pml.losses:MultiSimilarityStarLoss",
         "mining_epsilon"),
        ("ahsml_ms", "curvature", "noisy_pml.models:PoincareHead", "c"),
        ("prism", "warmup", "noisy_pml.miners:PRISMMiner", "warmup"),
        ("proxy_anchor", "margin", "pytorch_metric_learning.losses:ProxyAnchorLoss", "margin"),
    ],
)
def test_registered_methods_use_the_library_default(method, key, target, arg):
    import importlib

    module, _, name = target.partition(":")
    ctor = getattr(importlib.import_module(module), name)
    assert get_method(method).config()[key] == inspect.signature(ctor).parameters[arg].default


def test_registry_module_imports_no_method_code():
    import subprocess

    code = (
        "import sys; import noisy_pml.bench.registry; "
        "print('noisy_pml.bench.methods' in sys.modules, 'noisy_pml.losses' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_registered_method_resolves_its_configuration():
    for name in METHODS:
        cfg = get_method(name).config(protocol="finetune")
        assert cfg["epochs"] >= 0
