"""EmbeddingHead: starts at the features' PCA projection; the residual branch starts at zero."""

import pytest
import torch

from noisy_pml.models import EmbeddingHead
from noisy_pml.models.embedding_head import principal_directions


def _features(n=200, d=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g) * torch.linspace(3, 0.1, d) + 5


def test_residual_head_starts_as_the_pca_projection():
    x = _features()
    head = EmbeddingHead.from_features(x, 4, kind="residual", hidden=8)
    z = head(x)
    expected = (x - x.mean(0)) @ principal_directions(x)[:4].T
    assert torch.allclose(z, expected, atol=1e-4)
    assert torch.allclose(z.var(0), z.var(0).sort(descending=True).values)  # by variance


def test_principal_directions_are_orthonormal_by_decreasing_variance():
    x = _features()
    v = principal_directions(x)
    assert torch.allclose(v @ v.T, torch.eye(12), atol=1e-5)
    var = ((x - x.mean(0)) @ v.T).var(0)
    assert (var[:-1] >= var[1:] - 1e-4).all()


def test_pca_caps_the_size_and_random_init_does_not():
    x = _features(d=6)
    assert EmbeddingHead.from_features(x, 32).out_features == 6
    assert EmbeddingHead.from_features(x, 32, init="random").out_features == 32


def test_kinds_and_errors():
    assert EmbeddingHead(5, 3, kind="linear").branch is None
    assert EmbeddingHead(5, 3, kind="mlp").linear is None
    with pytest.raises(ValueError, match="kind must be one of"):
        EmbeddingHead(5, 3, kind="deep")
    with pytest.raises(ValueError, match="out_features must be >= 1, got 0"):
        EmbeddingHead(5, 0)
    with pytest.raises(ValueError, match="init must be one of"):
        EmbeddingHead.from_features(_features(), 3, init="zeros")
    with pytest.raises(ValueError, match=r"features must be \(N >= 2, D\)"):
        principal_directions(torch.zeros(1, 3))
