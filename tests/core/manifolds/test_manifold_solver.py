"""The on-manifold ODE solver: every state on the manifold, exact on analytic fields, grid and callback handling."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.manifolds import (MANIFOLD_METHODS, SO3, UPDATES, Euclidean, FlatTorus, Product, Sphere, hat,
                                    integrate_manifold)

MANIFOLDS = {"sphere": Sphere(2), "sphere4": Sphere(4), "torus": FlatTorus(2), "so3": SO3(),
             "euclidean": Euclidean(2), "product": Product(FlatTorus(1), Sphere(2), SO3())}


def wild_field(x, t):
    """A smooth, large, non-tangent ambient field: the solver must project it and keep x on the manifold."""
    flat = x.reshape(x.shape[0], -1)
    out = 3.0 * torch.sin(2.0 * flat + t[:, None]) + flat.roll(1, dims=1) * (1 + t[:, None])
    return out.reshape(x.shape)


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("method", MANIFOLD_METHODS)
@pytest.mark.parametrize("update", UPDATES)
def test_every_step_stays_on_the_manifold(name, method, update):
    m = MANIFOLDS[name]
    x = m.random_base(64, generator=torch.Generator().manual_seed(0))
    states = []
    out = integrate_manifold(wild_field, x, manifold=m, method=method, steps=7, update=update,
                             callback=lambda step: states.append(step["x"]), return_trajectory=True)
    assert len(states) == 7 and out.trajectory.shape == (8, *x.shape)
    assert out.nfe == 7 * MANIFOLD_METHODS[method]
    for state in states:
        assert float(m.distance_off(state).max()) < 1e-6


def test_geodesic_euler_follows_geodesic_fields_exactly():
    omega = torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64)
    spin, rotation = hat(omega), SO3().exp_algebra(omega)           # the flow of R' = R Omega over [0, 1]
    r = SO3().random_base(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = integrate_manifold(lambda r, t: r @ spin, r, manifold=SO3(), steps=3, update="expmap")
    assert torch.allclose(out.x, r @ rotation, atol=1e-12)
    # On the sphere, x' = omega x x moves the points of the great circle normal to omega along it.
    axis = omega / omega.norm()
    start = torch.linalg.cross(axis, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    x = (start / start.norm())[None]
    out = integrate_manifold(lambda x, t: x @ spin.T, x, manifold=Sphere(), steps=3, update="expmap")
    assert torch.allclose(out.x, x @ rotation.T, atol=1e-12)


@pytest.mark.parametrize("update, orders", [("retraction", {"euler": 1, "midpoint": 2, "rk4": 4}),
                                            ("expmap", {"euler": 1, "midpoint": 2})])
def test_the_order_of_accuracy_of_each_method(update, orders):
    sphere = Sphere()
    x = sphere.random_base(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spin = hat(torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64))
    pole = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    field = lambda x, t: (1.0 + t[:, None]) * (pole - (x @ pole)[:, None] * x) + x @ spin.T
    reference = integrate_manifold(field, x, manifold=sphere, method="rk4", steps=400).x
    for method, order in orders.items():
        errors = [float(sphere.dist(integrate_manifold(field, x, manifold=sphere, method=method, steps=n,
                                                       update=update).x, reference).max()) for n in (16, 32)]
        assert math.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.3)


def test_a_decreasing_grid_runs_backward_and_returns_the_start():
    torus = FlatTorus(2)
    x = torus.random_base(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    field = lambda x, t: torch.sin(x) + t[:, None]
    forward = integrate_manifold(field, x, manifold=torus, method="rk4", steps=50).x
    back = integrate_manifold(field, forward, manifold=torus, method="rk4", time_grid=torch.linspace(1, 0, 51)).x
    assert float(torus.dist(back, x).max()) < 1e-8


def test_conditioning_reaches_the_model():
    sphere = Sphere()
    x = sphere.random_base(4)
    out = integrate_manifold(lambda x, t, scale: scale[:, None] * torch.ones_like(x), x, manifold=sphere, steps=2,
                             cond={"scale": torch.zeros(4)})
    assert torch.allclose(out.x, x)
