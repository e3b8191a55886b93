"""PoincareSimilarity's unit maps: cosine units <-> gyro-cosine on the authors' head."""

import pytest
import torch

from noisy_pml.distances import PoincareSimilarity
from noisy_pml.utils import hyperbolic as hyp


@pytest.mark.parametrize("c", [1.0, 0.3, 0.1])
def test_from_cosine_is_the_similarity_of_head_points_at_that_cosine(c):
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(12, 7, generator=g, dtype=torch.float64), dim=1)
    dist = PoincareSimilarity(c=c)
    x = hyp.exp0(u, c)  # the authors' head: exp0 of unit vectors
    torch.testing.assert_close(dist(x), dist.from_cosine(u @ u.T), atol=1e-6, rtol=0)
    torch.testing.assert_close(dist.to_cosine(dist(x)), u @ u.T, atol=1e-5, rtol=0)
    k = torch.sinh(torch.tensor(2 * c**0.5, dtype=torch.float64)) ** 2 / 2
    assert float(dist.kappa()) == pytest.approx(float(k), rel=1e-6)


def test_from_cosine_is_increasing_and_fixes_one():
    cos = torch.linspace(-1, 1, 21, dtype=torch.float64)
    for c in (1.0, 0.1):
        s = PoincareSimilarity(c=c).from_cosine(cos)
        assert (s.diff() > 0).all() and s[-1] == 1
    assert float(PoincareSimilarity(c=1.0).from_cosine(0.5)) == pytest.approx(-0.534, abs=1e-3)
