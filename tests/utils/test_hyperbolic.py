"""Poincare-ball math against geoopt (float64 reference) and at its numerical edges."""

import math

import geoopt
import pytest
import torch

from noisy_pml.utils import hyperbolic as hyp


def ball_points(n, d, max_radius, c=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    r = torch.rand(n, 1, generator=g, dtype=torch.float64) * max_radius / math.sqrt(c)
    return (u / u.norm(dim=1, keepdim=True) * r).to(dtype)


@pytest.mark.parametrize("c", [0.1, 1.0, 2.5])
def test_pairwise_dist_equals_geoopt_float64(c):
    x, y = ball_points(20, 7, 0.999, c), ball_points(15, 7, 0.999, c, seed=1)
    ball = geoopt.PoincareBall(c).double()  # its c is softplus(isp_c): pass the ball itself
    ref = ball.dist(x[:, None], y[None])
    torch.testing.assert_close(hyp.pairwise_dist(x, y, ball), ref, rtol=1e-10, atol=1e-10)


def test_rowwise_dist_equals_geoopt_float64():
    x, y = ball_points(30, 5, 0.999), ball_points(30, 5, 0.999, seed=2)
    ref = geoopt.PoincareBall(1.0).dist(x, y)
    torch.testing.assert_close(hyp.dist(x, y, 1.0), ref, rtol=1e-10, atol=1e-12)


def test_self_distance_matrix_has_exact_zero_diagonal_near_boundary():
    x = ball_points(40, 16, 0.9999, dtype=torch.float32)
    d = hyp.pairwise_dist(x)
    assert torch.equal(d.diagonal(), torch.zeros(40))
    torch.testing.assert_close(d, d.T)


@pytest.mark.parametrize(("max_radius", "rtol"), [(0.99, 1e-5), (0.999, 1e-4)])
def test_float32_error_bounded_up_to_near_boundary(max_radius, rtol):
    x = ball_points(200, 64, max_radius)
    ref = geoopt.PoincareBall(1.0).dist(x[:, None], x[None])
    d32 = hyp.pairwise_dist(x.float()).double()
    off = ~torch.eye(200, dtype=torch.bool)
    assert ((d32 - ref).abs() / ref)[off].max() < rtol


def test_finite_gradients_at_equal_points_and_near_boundary():
    x = ball_points(6, 4, 0.9999, dtype=torch.float32)
    x = torch.cat([x, x[:2]]).requires_grad_()  # duplicated rows: off-diagonal x == y
    hyp.pairwise_dist(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    y = x.detach().clone().requires_grad_()
    hyp.dist(y, y.detach().clone(), 1.0).sum().backward()
    assert torch.isfinite(y.grad).all() and torch.equal(hyp.dist(y, y, 1.0), torch.zeros(8))


def test_exp0_and_log0_match_geoopt_and_invert_each_other():
    ball = geoopt.PoincareBall(0.7)
    u = torch.randn(10, 5, dtype=torch.float64)
    torch.testing.assert_close(hyp.exp0(u, 0.7), ball.expmap0(u))
    torch.testing.assert_close(hyp.log0(hyp.exp0(u, 0.7), 0.7), u)
    x = ball_points(10, 5, 0.9, c=0.7)
    torch.testing.assert_close(hyp.log0(x, 0.7), ball.logmap0(x))


def test_project_keeps_points_strictly_inside():
    x = torch.randn(50, 8) * 100
    z = hyp.project(hyp.exp0(x, 1.0), 1.0)
    assert (z.norm(dim=1) < 1).all()
    inner = ball_points(5, 8, 0.5, dtype=torch.float32)
    assert torch.equal(hyp.project(inner, 1.0), inner)


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan")])
def test_curvature_must_be_positive(c):
    with pytest.raises(ValueError, match="c \\(curvature\\)"):
        hyp.pairwise_dist(torch.zeros(2, 3), None, c)


def test_points_outside_the_ball_raise():
    x = torch.tensor([[0.6, 0.9], [0.0, 0.1]])
    with pytest.raises(ValueError, match="outside the Poincare ball"):
        hyp.pairwise_dist(x)
    with pytest.raises(ValueError, match="outside the Poincare ball"):
        hyp.dist(x, x, 1.0)


@pytest.mark.parametrize("c", [1.0, 0.3])
def test_sphere_identity_distance_is_a_function_of_cosine(c):
    u = torch.nn.functional.normalize(torch.randn(12, 6, dtype=torch.float64), dim=1)
    z = hyp.exp0(u, c)
    cos = u @ u.T
    expected = hyp.dist_from_cosine(cos, hyp.sphere_radius(c), c)
    torch.testing.assert_close(hyp.pairwise_dist(z, None, c), expected.fill_diagonal_(0))


def test_similarity_is_bounded_gyro_cosine_of_the_distance():
    x = ball_points(25, 4, 0.99)
    a, _ = hyp.pairwise_sinh2(x, None, 1.0)
    d = hyp.pairwise_dist(x)
    s = hyp.similarity_from_sinh2(a)
    torch.testing.assert_close(s, hyp.similarity_from_dist(d, 1.0))
    # tanh(sqrt(c) d / 2) is the gyro-norm |(-x) (+) y|
    mob = geoopt.PoincareBall(1.0).mobius_add(-x[:, None], x[None]).norm(dim=-1)
    torch.testing.assert_close(s, 1 - 2 * mob**2)
    assert s.max() <= 1 and s.min() > -1


def test_learnable_curvature_receives_gradient():
    ball = geoopt.PoincareBall(1.0, learnable=True)
    x = ball_points(5, 3, 0.5, dtype=torch.float32)
    hyp.pairwise_dist(x, None, ball).sum().backward()
    assert ball.isp_c.grad is not None and torch.isfinite(ball.isp_c.grad)


def near_pairs(n, d, gap, seed=0):
    """float32 x inside 0.99 of the unit ball and y = x + gap * (random unit vector)."""
    g = torch.Generator().manual_seed(seed)
    x = ball_points(n, d, 0.99, seed=seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = hyp.project(x + gap * v / v.norm(dim=1, keepdim=True), 1.0, eps=0.01)
    return x.float(), y.float()


@pytest.mark.parametrize("d", [1, 8, 64, 512])
@pytest.mark.parametrize("gap", [1e-4, 1e-3, 1e-2])
def test_float32_close_pairs_have_relative_error_below_1e_3(d, gap):
    x, y = near_pairs(100, d, gap, seed=d)
    ref = hyp.pairwise_dist(x.double(), y.double())  # same float32 inputs, float64 arithmetic
    rel = (hyp.pairwise_dist(x, y).double() - ref).abs() / ref
    assert rel.max() < 1e-3


def test_fast_mode_keeps_the_bare_matmul_and_its_cancellation():
    x, y = near_pairs(100, 64, 1e-4)
    ref = hyp.pairwise_dist(x.double(), y.double())
    rel = (hyp.pairwise_dist(x, y, precise=False).double() - ref).abs() / ref
    assert rel.max() > 1e-2  # what precise=True corrects


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_points_as_separate_tensors_are_at_distance_zero(dtype):
    x = ball_points(50, 64, 0.999, dtype=dtype)
    assert torch.equal(hyp.pairwise_dist(x, x.clone()).diagonal(), torch.zeros(50, dtype=dtype))
    a, _ = hyp.pairwise_sinh2(x[:10], x, 1.0)
    assert torch.equal(a[torch.arange(10), torch.arange(10)], torch.zeros(10, dtype=dtype))


def test_near_pair_correction_keeps_gradients_finite_and_correct():
    x, y = near_pairs(6, 5, 1e-3)
    x64 = x.double().requires_grad_()
    hyp.pairwise_dist(x64, y.double()).sum().backward()
    x32 = x.clone().requires_grad_()
    hyp.pairwise_dist(x32, y).sum().backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=2e-3, atol=1e-4)


def test_mixed_dtypes_and_widths_raise_clear_errors():
    x = ball_points(4, 3, 0.9)
    with pytest.raises(TypeError, match="same dtype.*float64.*float32"):
        hyp.pairwise_dist(x, x.float())
    with pytest.raises(ValueError, match="same embedding size, got 3"):
        hyp.pairwise_dist(x, ball_points(4, 5, 0.9))
    with pytest.raises(TypeError, match="same dtype"):
        hyp.dist(x, x.float())
    with pytest.raises(TypeError, match="floating-point"):
        hyp.pairwise_dist(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or infinite"):
        hyp.pairwise_dist(torch.tensor([[0.1, float("nan")]]))
