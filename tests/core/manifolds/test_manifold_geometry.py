"""Geometry of every manifold: exp/log inverses, distances, projections, closed-form geodesics, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.manifolds import SO3, Euclidean, FlatTorus, Product, Sphere, hat, vee

MANIFOLDS = {
    "euclidean": Euclidean(3),
    "sphere2": Sphere(2),
    "sphere5": Sphere(5),
    "torus": FlatTorus(3),
    "so3": SO3(),
    "product": Product(FlatTorus(2), Sphere(2), SO3()),
}


def points(manifold, n=64, seed=0, dtype=torch.float64):
    return manifold.random_base(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def tangent(manifold, x, scale, seed=1):
    u = manifold.proju(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype))
    norm = manifold.norm(x, u).reshape(-1, *([1] * manifold.point_ndim))
    return scale * u / norm


@pytest.mark.parametrize("name", MANIFOLDS)
def test_exp_of_log_returns_the_point_and_dist_is_symmetric(name):
    m = MANIFOLDS[name]
    x, y = points(m, seed=0), points(m, seed=1)
    u = m.logmap(x, y)
    assert torch.allclose(m.expmap(x, u), y, atol=1e-9)
    assert torch.allclose(m.dist(x, y), m.dist(y, x), atol=1e-9)
    assert torch.allclose(m.dist(x, y), m.norm(x, u), atol=1e-9)
    assert torch.allclose(m.dist(x, x), torch.zeros(x.shape[0], dtype=x.dtype), atol=1e-6)


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("scale", [1e-7, 1e-3, 0.5, 2.0])
def test_log_of_exp_returns_the_tangent_within_the_injectivity_radius(name, scale):
    m = MANIFOLDS[name]
    x = points(m)
    # Product: every factor gets at most `scale`, below its injectivity radius (pi, or pi * sqrt 2 on SO(3)).
    u = tangent(m, x, scale)
    assert torch.allclose(m.logmap(x, m.expmap(x, u)), u, atol=1e-9 + 1e-7 * scale)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_projections_are_idempotent_and_orthogonal(name):
    m = MANIFOLDS[name]
    x = points(m)
    assert torch.allclose(m.projx(x), x, atol=1e-12)
    off = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    assert torch.allclose(m.projx(m.projx(off)), m.projx(off), atol=1e-12)
    assert float(m.distance_off(m.projx(off)).max()) < 1e-12
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    u = m.proju(x, w)
    assert torch.allclose(m.proju(x, u), u, atol=1e-12)
    assert float(m.inner(x, w - u, u).abs().max()) < 1e-10           # the residual is normal to the tangent space


def test_tangent_spaces_have_the_textbook_form():
    s, so3 = Sphere(2), SO3()
    x = points(s)
    assert float((x * s.proju(x, torch.randn_like(x))).sum(-1).abs().max()) < 1e-12      # <x, u> = 0
    r = points(so3)
    u = so3.proju(r, torch.randn_like(r))
    omega = r.transpose(1, 2) @ u
    assert torch.allclose(omega, -omega.transpose(1, 2), atol=1e-12)                        # R^T U skew


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_exp_curve_matches_expmap_and_a_finite_difference(name, t):
    m = MANIFOLDS[name]
    x, y = points(m, seed=0), points(m, seed=1)
    u = m.logmap(x, y)
    shape = (x.shape[0], *([1] * m.point_ndim))
    point, velocity = m.exp_curve(x, u, torch.full(shape, t, dtype=x.dtype))
    assert torch.allclose(point, m.expmap(x, t * u), atol=1e-9)
    h = 1e-6
    ahead, _ = m.exp_curve(x, u, torch.full(shape, t + h, dtype=x.dtype))
    behind, _ = m.exp_curve(x, u, torch.full(shape, t - h, dtype=x.dtype))
    # On the torus a point may wrap during the difference: differentiate through the logarithm instead.
    fd = (m.logmap(point, ahead) - m.logmap(point, behind)) / (2 * h)
    assert torch.allclose(velocity, fd, atol=1e-5)


def test_sphere_is_stable_at_antipodes_and_tiny_angles():
    s = Sphere(2)
    x = points(s, dtype=torch.float32)
    u = s.logmap(x, -x)
    assert torch.isfinite(u).all()
    assert torch.allclose(u.norm(dim=-1), torch.full((x.shape[0],), math.pi), atol=1e-5)
    assert float((u * x).sum(-1).abs().max()) < 1e-5
    assert torch.allclose(s.expmap(x, u), -x, atol=1e-5)
    assert torch.allclose(s.dist(x, -x), torch.full((x.shape[0],), math.pi), atol=1e-6)
    xd = s.projx(x.double())
    tiny = tangent(s, xd, 1e-9)
    assert float((s.logmap(xd, s.expmap(xd, tiny)) - tiny).norm(dim=-1).max()) < 1e-9 * 1e-6   # relative 1e-6
    grad_input = x.clone().requires_grad_(True)
    s.logmap(grad_input, x).sum().backward()                                      # log_x(x): no NaN in the gradient
    assert torch.isfinite(grad_input.grad).all()


def test_so3_log_is_accurate_up_to_pi_and_matches_rodrigues():
    so3 = SO3()
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(200, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    for angle in (1e-8, 0.5, 2.0, math.pi - 1e-7):
        w = angle * axis
        assert torch.allclose(so3.log_algebra(so3.exp_algebra(w)), w, atol=1e-7)
    assert torch.allclose(so3.exp_algebra(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64)),
                          torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(vee(hat(axis)), axis)
    r = points(so3)
    expected = torch.full((64,), 0.7 * math.sqrt(2), dtype=torch.float64)
    assert torch.allclose(so3.dist(r, r @ so3.exp_algebra(0.7 * axis[:64])), expected)


def test_torus_wraps_the_short_way_and_product_splits_its_factors():
    torus = FlatTorus(1)
    step = torus.logmap(torch.tensor([[0.1]]), torch.tensor([[2 * math.pi - 0.1]]))
    assert step.item() == pytest.approx(-0.2, abs=1e-6)
    assert torus.dist(torch.tensor([[0.1]]), torch.tensor([[6.2]])).item() == pytest.approx(2 * math.pi - 6.1, abs=1e-6)
    space = MANIFOLDS["product"]
    x, y = points(space, seed=0), points(space, seed=1)
    squares = [f.dist(a, b) ** 2 for f, a, b in zip(space.factors, space.split(x), space.split(y))]
    assert torch.allclose(space.dist(x, y) ** 2, sum(squares))
    assert torch.equal(space.join(space.split(x)), x)
    assert space.point_shape == (2 + 3 + 9,) and space.dim == 2 + 2 + 3


@pytest.mark.parametrize("name", MANIFOLDS)
def test_base_samples_lie_on_the_manifold_and_the_base_density_is_its_inverse_volume(name):
    m = MANIFOLDS[name]
    x = points(m, n=256, dtype=torch.float32)
    assert float(m.distance_off(x).max()) < 1e-6
    assert m.check_on(x) is x
    logp = m.base_log_prob(x)
    assert logp.shape == (256,)
    if name == "sphere2":
        assert torch.allclose(logp, torch.full((256,), -math.log(4 * math.pi)))
    if name == "so3":          # Frobenius metric: the volume of SO(3) is 8 pi^2 (angle metric) times 2 sqrt 2
        assert torch.allclose(logp, torch.full((256,), -math.log(16 * math.sqrt(2) * math.pi ** 2)))
    if name == "sphere5":      # area of S^5 is pi^3
        assert torch.allclose(logp, torch.full((256,), -3 * math.log(math.pi)))


def test_haar_samples_have_the_haar_angle_distribution():
    angles = SO3().angle(torch.eye(3, dtype=torch.float64)[None], points(SO3(), n=20000, dtype=torch.float64))
    # Under Haar the rotation angle has density (1 - cos a) / pi on [0, pi]: mean pi/2 + 2/pi.
    assert float(angles.mean()) == pytest.approx(math.pi / 2 + 2 / math.pi, abs=0.02)
