"""Default image transforms: weak / strong training views and the evaluation view.

torchvision is imported inside the functions: it ships with the ``bench`` extra, not with the
core package, so ``noisy_pml.datasets`` imports without it.

``mean`` / ``std`` default to the ImageNet statistics of torchvision backbones. EfficientNet-Lite
expects ``(x - 127) / 128`` on 0-255 pixels, i.e. `LITE_MEAN` / `LITE_STD` here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def _tail(mean: Sequence[float] | None, std: Sequence[float] | None) -> list:
    import torchvision.transforms as T

    out = [T.ToTensor()]
    if mean is not None:
        out.append(T.Normalize(mean=mean, std=std if std is not None else (1.0, 1.0, 1.0)))
    return out


def weak_transform(
    image_size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> Callable:
    """RandomResizedCrop(image_size, scale) + horizontal flip, then ToTensor (+ Normalize)."""
    import torchvision.transforms as T

    return T.Compose(
        [T.RandomResizedCrop(image_size, scale=scale), T.RandomHorizontalFlip(), *_tail(mean, std)]
    )


def strong_transform(
    image_size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    jitter: float = 0.4,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> Callable:
    """The weak view plus ColorJitter (p=0.8), RandomGrayscale and GaussianBlur (SimCLR-style)."""
    import torchvision.transforms as T

    kernel = max(3, (image_size // 10) | 1)  # odd, ~10% of the image side as in SimCLR
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=scale),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(jitter, jitter, jitter, jitter / 4)], p=0.8),
            T.RandomGrayscale(p=grayscale_p),
            T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
            *_tail(mean, std),
        ]
    )


def eval_transform(
    image_size: int = 224,
    resize: int = 256,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> Callable:
    """Resize(resize) + CenterCrop(image_size), then ToTensor (+ Normalize)."""
    import torchvision.transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), *_tail(mean, std)])


def two_view_transforms(image_size: int = 224, **kwargs) -> tuple[Callable, Callable]:
    """``(weak_transform(...), strong_transform(...))`` sharing ``image_size``, mean and std."""
    shared = {k: kwargs.pop(k) for k in ("mean", "std", "scale") if k in kwargs}
    return weak_transform(image_size, **shared), strong_transform(image_size, **shared, **kwargs)
