"""Parity with facebookresearch/flow_matching's Riemannian API (skipped when it is not installed)."""

from __future__ import annotations

import pytest
import torch

fm_manifolds = pytest.importorskip("flow_matching.utils.manifolds")
fm_path = pytest.importorskip("flow_matching.path")
fm_scheduler = pytest.importorskip("flow_matching.path.scheduler")
fm_solver = pytest.importorskip("flow_matching.solver")

from flowzoo.core.manifolds import FlatTorus, GeodesicPath, Sphere, integrate_manifold  # noqa: E402

PAIRS = {"sphere": (Sphere(2), fm_manifolds.Sphere()), "torus": (FlatTorus(3), fm_manifolds.FlatTorus())}


def inputs(ours, n=128):
    g = torch.Generator().manual_seed(0)
    x, y = ours.random_base(n, generator=g, dtype=torch.float64), ours.random_base(n, generator=g, dtype=torch.float64)
    w = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x, y, w


@pytest.mark.parametrize("name", PAIRS)
def test_the_geometry_matches(name):
    ours, theirs = PAIRS[name]
    x, y, w = inputs(ours)
    u = ours.proju(x, w)
    assert torch.allclose(ours.proju(x, w), theirs.proju(x, w), atol=1e-12)
    assert torch.allclose(ours.projx(2.5 * x + 0.1), theirs.projx(2.5 * x + 0.1), atol=1e-12)
    assert torch.allclose(ours.expmap(x, u), theirs.expmap(x, u), atol=1e-10)
    assert torch.allclose(ours.logmap(x, y), theirs.logmap(x, y), atol=1e-8)
    if name == "sphere":
        assert torch.allclose(ours.dist(x, y), theirs.dist(x, y), atol=1e-7)


@pytest.mark.parametrize("name", PAIRS)
def test_the_geodesic_path_matches(name):
    ours, theirs = PAIRS[name]
    x0, x1, _ = inputs(ours)
    t = torch.rand(x0.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = fm_path.GeodesicProbPath(fm_scheduler.CondOTScheduler(), theirs).sample(x_0=x0, x_1=x1, t=t)
    mine = GeodesicPath(ours).sample(x0, x1, t)
    assert torch.allclose(mine.x_t, reference.x_t, atol=1e-8)
    assert torch.allclose(mine.dx_t, reference.dx_t, atol=1e-7)


class Field(torch.nn.Module):
    """A fixed, time-dependent, non-tangent field: both solvers must project it."""

    def forward(self, x, t):
        t = t.reshape(-1, 1) if t.dim() else t
        return torch.sin(3.0 * x.roll(1, dims=-1)) * (1.0 + t) + 0.5


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_the_solver_matches(name, method):
    ours, theirs = PAIRS[name]
    x, _, _ = inputs(ours, n=64)
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    reference = fm_solver.RiemannianODESolver(theirs, Field()).sample(x, step_size=None, method=method,
                                                                      time_grid=grid)
    field = Field()
    mine = integrate_manifold(lambda x, t: field(x, t), x, manifold=ours, method=method, time_grid=grid)
    assert torch.allclose(mine.x, reference, atol=1e-10)
    # Geodesic moves are another discretisation: exact on the torus, as accurate as flow_matching's on the sphere.
    geodesic = integrate_manifold(lambda x, t: field(x, t), x, manifold=ours, method=method, time_grid=grid,
                                  update="expmap")
    if name == "torus":
        assert torch.allclose(geodesic.x, reference, atol=1e-10)
        return
    if method == "rk4":
        return  # projected stage vectors limit geodesic RK4 to second order (see flowzoo.core.manifolds.solver)
    fine = integrate_manifold(lambda x, t: field(x, t), x, manifold=ours, method="rk4", steps=400).x
    assert float(ours.dist(geodesic.x, fine).max()) < 3 * float(ours.dist(reference, fine).max()) + 1e-8
