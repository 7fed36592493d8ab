"""Log-likelihoods on manifolds: analytic change of variables, normalisation, volume-preserving fields."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.manifolds import (SO3, FlatTorus, Product, Sphere, hat, integrate_manifold,
                                    manifold_log_likelihood)

POLE = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def push_to_pole(x, t):
    """The gradient of <x, pole>: it carries the height z = <x, pole> as dz/dt = 1 - z^2, z(t) = tanh(t + atanh z0)."""
    return torch.zeros_like(x) + POLE.to(x.dtype)


def sphere_points(n, seed=0):
    return Sphere().random_base(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_likelihood_matches_the_analytic_change_of_variables_on_the_sphere():
    y = sphere_points(400)
    logp = manifold_log_likelihood(push_to_pole, y, manifold=Sphere(), steps=10)
    # Archimedes: uniform on S^2 <=> uniform height z, so p_1(x) = dz0 / dz1 / 4 pi = (1 - z0^2) / (1 - z1^2) / 4 pi.
    z1 = y[:, 2]
    z0 = torch.tanh(torch.atanh(z1) - 1.0)
    exact = -math.log(4 * math.pi) + torch.log1p(-z0 ** 2) - torch.log1p(-z1 ** 2)
    assert float((logp - exact).abs().max()) < 5e-3
    assert float((logp - exact).abs().mean()) < 2e-4


def test_the_density_integrates_to_one_on_the_sphere():
    y = sphere_points(3000, seed=1)
    half = lambda x, t: 0.5 * push_to_pole(x, t) + torch.sin(3 * x)          # not volume preserving
    density_ratio = manifold_log_likelihood(half, y, manifold=Sphere(), steps=8).exp() * 4 * math.pi
    standard_error = float(density_ratio.std()) / math.sqrt(3000)
    assert float(density_ratio.mean()) == pytest.approx(1.0, abs=max(3 * standard_error, 0.02))
    assert float(density_ratio.std()) > 0.2                                  # the field does change the density


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_volume_preserving_fields_keep_the_base_density(method):
    omega = torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64)
    y = sphere_points(16)
    logp = manifold_log_likelihood(lambda x, t: x @ hat(omega).T, y, manifold=Sphere(), steps=3, method=method)
    assert torch.allclose(logp, torch.full((16,), -math.log(4 * math.pi), dtype=torch.float64), atol=1e-10)
    so3 = SO3()
    r = so3.random_base(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp = manifold_log_likelihood(lambda r, t: r @ hat(omega) * (1 + t[:, None, None]), r, manifold=so3, steps=3,
                                   method=method)
    assert torch.allclose(logp, so3.base_log_prob(r), atol=1e-10)
    torus = FlatTorus(2)
    shear = lambda x, t: torch.stack([torch.sin(x[:, 1]), torch.cos(x[:, 0])], dim=1)   # divergence-free
    logp = manifold_log_likelihood(shear, torus.random_base(8, dtype=torch.float64), manifold=torus, steps=3,
                                   method=method)
    assert torch.allclose(logp, torch.full((8,), -2 * math.log(2 * math.pi), dtype=torch.float64), atol=1e-10)


def test_the_torus_divergence_is_the_flat_one_and_products_add_up():
    torus = FlatTorus(1)
    x = torch.tensor([[1.0], [4.0]], dtype=torch.float64)
    # v = sin(x): the flow is exact, x(t) = 2 atan(tan(x0 / 2) e^t), so log p1 = log p0 - log(dx1/dx0).
    logp = manifold_log_likelihood(lambda x, t: torch.sin(x), x, manifold=torus, steps=200)
    x0 = 2 * torch.atan(torch.tan(x / 2) * math.exp(-1.0))
    jacobian = torch.sin(x) / torch.sin(x0)                                  # dx1/dx0 = sin(x1) / sin(x0)
    assert torch.allclose(logp, -math.log(2 * math.pi) - torch.log(jacobian[:, 0]), atol=1e-6)
    space = Product(FlatTorus(1), Sphere(2))
    points = torch.cat([x, sphere_points(2)], dim=1)
    field = lambda p, t: torch.cat([torch.sin(p[:, :1]), push_to_pole(p[:, 1:], t)], dim=1)
    joint = manifold_log_likelihood(field, points, manifold=space, steps=20)
    parts = (manifold_log_likelihood(lambda x, t: torch.sin(x), x, manifold=torus, steps=20)
             + manifold_log_likelihood(push_to_pole, points[:, 1:], manifold=Sphere(), steps=20))
    assert torch.allclose(joint, parts, atol=1e-10)


def test_hutchinson_is_unbiased_and_the_likelihood_inverts_sampling():
    y = sphere_points(64)
    exact = manifold_log_likelihood(push_to_pole, y, manifold=Sphere(), steps=6)
    for probe in ("rademacher", "gaussian"):
        errors = torch.stack([manifold_log_likelihood(push_to_pole, y, manifold=Sphere(), steps=6,
                                                      estimator="hutchinson", probe=probe, n_probes=2,
                                                      generator=torch.Generator().manual_seed(s)) - exact
                              for s in range(20)])
        assert float(errors.std()) > 1e-3                                  # a real estimate, not the exact trace
        assert abs(float(errors.mean())) < 3 * float(errors.std()) / math.sqrt(errors.numel()) + 1e-3
    # Sampling then evaluating: the base point comes back, so log p1(x1) = log p0(x0) - the log volume change.
    x0 = sphere_points(8, seed=3)
    x1 = integrate_manifold(push_to_pole, x0, manifold=Sphere(), method="rk4", steps=40).x
    z0, z1 = x0[:, 2], x1[:, 2]
    logp = manifold_log_likelihood(push_to_pole, x1, manifold=Sphere(), steps=40)
    assert torch.allclose(logp, -math.log(4 * math.pi) + torch.log1p(-z0 ** 2) - torch.log1p(-z1 ** 2), atol=1e-4)
