"""Tests of flowzoo.core.analysis.diagnostics: Jacobian asymmetry and loop integrals (Vuong et al., arXiv 2509.00336)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowzoo.core.analysis import jacobian_asymmetry, loop_integral, random_planes
from flowzoo.core.errors import ConfigError, FlowzooError, ShapeError
from flowzoo.core.nets import MLPVelocity


def _energy_field(dim: int, seed: int = 0, functional: bool = False):
    """f = -grad E for a small MLP energy E(x, t); with autograd.grad or torch.func.grad."""
    torch.manual_seed(seed)
    energy = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))
    energy = energy.double()

    def e(x, t):
        return energy(torch.cat([x, t[:, None]], dim=1)).sum()

    def field(x, t):
        if functional:
            return -torch.func.grad(e)(x, t)
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            return -torch.autograd.grad(e(x, t), x, create_graph=True)[0]

    return field


def _linear_field(matrix):
    return lambda x, t: x @ matrix.T


def _sym_antisym(dim, seed):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    return 0.5 * (m + m.T), 0.5 * (m - m.T)


@pytest.mark.parametrize("functional", [False, True])
def test_gradient_field_is_symmetric_and_circulation_free(functional):
    field = _energy_field(3, functional=functional)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    asym = jacobian_asymmetry(field, x, 0.3)
    assert asym.shape == (16,) and asym.max().item() < 1e-6
    loops = loop_integral(field, x, 0.3, radius=0.2, n_points=128, planes=3, generator=torch.Generator().manual_seed(2))
    assert loops.ratio.shape == (16, 3) and loops.ratio.abs().max().item() < 1e-6
    assert (loops.normaliser > 0).all()


def test_rotational_field_exact_values():
    sym, anti = _sym_antisym(4, 0)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pure = jacobian_asymmetry(_linear_field(anti), x, 0.0)
    assert torch.allclose(pure, torch.full((5,), 2.0, dtype=torch.float64), atol=1e-12)
    mixed = jacobian_asymmetry(_linear_field(sym + anti), x, 0.0)
    expected = 2 * anti.norm() / (sym.norm() ** 2 + anti.norm() ** 2).sqrt()
    assert torch.allclose(mixed, expected.expand(5), atol=1e-12)


def test_loop_integral_equals_stokes_circulation():
    sym, anti = _sym_antisym(4, 5)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    planes = random_planes(5, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    radius = 0.3
    out = loop_integral(_linear_field(sym + anti), x, 0.5, radius, n_points=64, planes=planes)
    e1, e2 = planes[:, 0], planes[:, 1]
    stokes = 2 * math.pi * radius ** 2 * torch.einsum("pi,ij,pj->p", e2, anti, e1)
    assert torch.allclose(out.circulation, stokes.expand(3, 5), atol=1e-12)
    # 2-D rotation about the centre: |f| = r on the circle, so the ratio is exactly +1 (counter-clockwise)
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    out = loop_integral(_linear_field(rotation), torch.zeros(2, 2, dtype=torch.float64), 0.0, 0.7,
                        planes=torch.eye(2, dtype=torch.float64)[None])
    assert torch.allclose(out.ratio, torch.ones(2, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.circulation, torch.full((2, 1), 2 * math.pi * 0.49, dtype=torch.float64))


def test_hutchinson_agrees_with_exact_on_an_mlp():
    torch.manual_seed(0)
    net = MLPVelocity(6, hidden=32, depth=2).double()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    t = torch.full((4,), 0.4, dtype=torch.float64)
    exact = jacobian_asymmetry(net, x, t)
    estimate = jacobian_asymmetry(net, x, t, exact=False, n_probes=4000, generator=torch.Generator().manual_seed(9))
    assert exact.min().item() > 0.1          # an unconstrained MLP is not conservative
    assert torch.allclose(estimate, exact, rtol=0.1), (estimate, exact)
    # the estimator is exactly 0 on a gradient field and ~2 on a rotation
    grad_est = jacobian_asymmetry(_energy_field(6), x, t, exact=False, n_probes=64,
                                  generator=torch.Generator().manual_seed(10))
    assert grad_est.max().item() < 1e-6
    _, anti = _sym_antisym(6, 11)
    rot_est = jacobian_asymmetry(_linear_field(anti), x, t, exact=False, n_probes=4000,
                                 generator=torch.Generator().manual_seed(12))
    assert torch.allclose(rot_est, torch.full((4,), 2.0, dtype=torch.float64), rtol=0.1)


def test_image_shaped_input_and_conditioning():
    net = MLPVelocity(12, hidden=16, depth=1, num_classes=3)
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    asym = jacobian_asymmetry(net, x, 0.5, cond={"y": y})
    est = jacobian_asymmetry(net, x, 0.5, exact=False, n_probes=8, cond={"y": y})
    loops = loop_integral(net, x, 0.5, 0.1, planes=2, cond={"y": y})
    assert asym.shape == est.shape == (2,) and loops.ratio.shape == (2, 2)


def test_zero_field_gives_zero_not_nan():
    x = torch.randn(3, 2)
    assert jacobian_asymmetry(lambda x, t: torch.zeros_like(x), x, 0.0).eq(0).all()
    assert loop_integral(lambda x, t: torch.zeros_like(x), x, 0.0, 0.1).ratio.eq(0).all()


def test_bad_inputs():
    field = lambda x, t: x  # noqa: E731
    with pytest.raises(ShapeError):
        jacobian_asymmetry(field, torch.zeros(3), 0.0)                      # no batch dim
    with pytest.raises(FlowzooError):
        jacobian_asymmetry(field, torch.zeros(0, 2), 0.0)
    with pytest.raises(FlowzooError):
        jacobian_asymmetry(field, torch.full((2, 2), float("nan")), 0.0)
    with pytest.raises(ShapeError):
        jacobian_asymmetry(field, torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ConfigError):
        jacobian_asymmetry(field, torch.zeros(2, 2), 0.0, exact=False, n_probes=0)
    with pytest.raises(ShapeError):
        jacobian_asymmetry(lambda x, t: x[:, :1], torch.zeros(2, 2), 0.0)
    with pytest.raises(ConfigError):
        loop_integral(field, torch.zeros(2, 2), 0.0, radius=0.0)
    with pytest.raises(ConfigError):
        loop_integral(field, torch.zeros(2, 2), 0.0, radius=0.1, n_points=4)
    with pytest.raises(ShapeError):
        loop_integral(field, torch.zeros(2, 1), 0.0, radius=0.1)
    with pytest.raises(ShapeError):
        loop_integral(field, torch.zeros(2, 3), 0.0, radius=0.1, planes=torch.eye(2)[None])
    with pytest.raises(ConfigError):
        loop_integral(field, torch.zeros(2, 2), 0.0, radius=0.1, planes=torch.ones(1, 2, 2))
