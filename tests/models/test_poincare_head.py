"""PoincareHead: the authors' normalise-then-exp0 and the Hyp-ViT clip-then-exp0 heads."""

import math

import geoopt
import pytest
import torch

from noisy_pml.distances import PoincareDistance
from noisy_pml.models import PoincareHead
from noisy_pml.utils import hyperbolic as hyp


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_normalize_mode_puts_every_point_on_one_sphere(c):
    head = PoincareHead(10, 6, c=c, mode="normalize")
    z = head(torch.randn(20, 10))
    expected = math.tanh(math.sqrt(c)) / math.sqrt(c)
    torch.testing.assert_close(z.norm(dim=1), torch.full((20,), expected))


def test_authors_head_distance_is_monotone_function_of_cosine():
    head = PoincareHead(10, 6, mode="normalize").double()
    feats = torch.randn(15, 10, dtype=torch.float64)
    u = torch.nn.functional.normalize(head.linear(feats), dim=1)
    d = PoincareDistance()(head(feats))
    f = hyp.dist_from_cosine(u @ u.T, hyp.sphere_radius(1.0), 1.0).fill_diagonal_(0)
    torch.testing.assert_close(d, f)
    # same ranking as the cosine
    assert torch.equal(d.argsort(1)[:, 1:], (-(u @ u.T)).argsort(1)[:, 1:])


def test_clip_mode_bounds_the_tangent_norm():
    head = PoincareHead(4, None, c=0.1, mode="clip", clip_radius=2.3)
    x = torch.tensor([[0.1, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    z = head(x)
    torch.testing.assert_close(hyp.log0(z, 0.1).norm(dim=1), torch.tensor([0.1, 2.3]))


def test_outputs_stay_inside_the_ball_in_float32_for_huge_inputs():
    head = PoincareHead(4, None, c=1.0, mode="clip", clip_radius=50.0)
    z = head(torch.full((3, 4), 1e6))
    assert (z.norm(dim=1) < 1).all()
    assert torch.isfinite(PoincareDistance()(z)).all()


def test_learnable_and_shared_curvature():
    head = PoincareHead(5, 3, learnable_c=True)
    assert head.ball.isp_c.requires_grad
    dist = PoincareDistance(c=head.ball)
    dist(head(torch.randn(6, 5))).sum().backward()
    assert head.ball.isp_c.grad is not None
    shared = geoopt.PoincareBall(0.5)
    assert PoincareHead(5, 3, c=shared).ball is shared


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode"):
        PoincareHead(3, 3, mode="tanh")
    with pytest.raises(ValueError, match="curvature"):
        PoincareHead(3, 3, c=-1.0)
    with pytest.raises(ValueError, match="clip_radius"):
        PoincareHead(3, 3, mode="clip", clip_radius=0)


@pytest.mark.parametrize("mode", ["normalize", "clip"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_are_rejected_not_mapped_to_nan_points(mode, bad):
    x = torch.randn(4, 10)
    x[2, 5] = bad
    with pytest.raises(ValueError, match="features contains 1 NaN or infinite"):
        PoincareHead(10, 6, mode=mode)(x)


def test_wrong_width_dtype_and_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="10 columns"):
        PoincareHead(10, 6)(torch.randn(3, 9))
    with pytest.raises(TypeError, match="floating-point"):
        PoincareHead(10, 6)(torch.ones(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="clip_radius must be finite and > 0, got nan"):
        PoincareHead(10, 6, mode="clip", clip_radius=float("nan"))
    head = PoincareHead(10, 6)
    with torch.no_grad():
        head.linear.weight[0, 0] = float("nan")  # diverged weights
    with pytest.raises(ValueError, match="diverged"):
        head(torch.randn(3, 10))


@pytest.mark.parametrize("fn", [hyp.exp0, hyp.log0, hyp.project])
def test_public_ball_maps_reject_non_finite_input(fn):
    u = torch.tensor([[0.1, float("nan")], [0.2, 0.3]])
    with pytest.raises(ValueError, match="contains 1 NaN or infinite"):
        fn(u, 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.ones(2, 2, dtype=torch.long), 1.0)
