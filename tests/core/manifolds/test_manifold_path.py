"""The geodesic path (endpoints, velocity), the Riemannian FM loss (hand-computed values) and the geodesic OT
coupling."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.manifolds import (SO3, Euclidean, FlatTorus, GeodesicOTCoupling, GeodesicPath, Product,
                                    RiemannianFlowMatchingLoss, Sphere)
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import CosineScheduler, PathSample

MANIFOLDS = {"sphere": Sphere(2), "torus": FlatTorus(2), "so3": SO3(), "euclidean": Euclidean(2),
             "product": Product(FlatTorus(1), Sphere(2))}


def pair(m, n=32):
    g = torch.Generator().manual_seed(0)
    return m.random_base(n, generator=g, dtype=torch.float64), m.random_base(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_the_path_hits_its_endpoints_and_its_velocity_is_the_time_derivative(name):
    m = MANIFOLDS[name]
    path = GeodesicPath(m)
    x0, x1 = pair(m)
    n = x0.shape[0]
    assert torch.allclose(path.sample(x0, x1, torch.zeros(n, dtype=x0.dtype)).x_t, x0, atol=1e-10)
    assert torch.allclose(path.sample(x0, x1, torch.ones(n, dtype=x0.dtype)).x_t, x1, atol=1e-10)
    t, h = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=x0.dtype) * 0.9 + 0.05, 1e-6
    s = path.sample(x0, x1, t)
    assert isinstance(s, PathSample) and s.t is not None
    fd = (m.logmap(s.x_t, path.sample(x0, x1, t + h).x_t) - m.logmap(s.x_t, path.sample(x0, x1, t - h).x_t)) / (2 * h)
    assert torch.allclose(s.dx_t, fd, atol=1e-6)
    # The speed of a geodesic is constant: the distance between the endpoints.
    assert torch.allclose(m.norm(s.x_t, s.dx_t), m.dist(x0, x1), atol=1e-8)


def test_the_sphere_path_is_slerp_and_a_scheduler_reparameterises_it():
    x0, x1 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    s = GeodesicPath(Sphere()).sample(x0, x1, torch.tensor([1 / 3]))
    assert torch.allclose(s.x_t, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]]))
    assert torch.allclose(s.dx_t, math.pi / 2 * torch.tensor([[-math.sin(math.pi / 6), math.cos(math.pi / 6), 0.0]]))
    t = torch.tensor([0.4])
    cos = GeodesicPath(Sphere(), CosineScheduler()).sample(x0, x1, t)
    kappa = math.sin(math.pi * 0.4 / 2)
    assert torch.allclose(cos.x_t, torch.tensor([[math.cos(kappa * math.pi / 2), math.sin(kappa * math.pi / 2), 0.0]]))
    speed = math.pi / 2 * math.cos(math.pi * 0.4 / 2) * math.pi / 2
    assert cos.dx_t.norm().item() == pytest.approx(speed, rel=1e-5)


def test_the_loss_is_the_mean_squared_tangent_error_by_hand():
    torus = FlatTorus(2)
    x0 = torch.tensor([[0.1, 3.0], [6.0, 1.0]])
    x1 = torch.tensor([[6.2, 2.0], [0.5, 1.5]])
    # zero model: the loss is the mean over coordinates of log_{x0}(x1)^2 (the geodesic speed), whatever t is.
    u = torch.tensor([[6.2 - 0.1 - 2 * math.pi, -1.0], [0.5 + 2 * math.pi - 6.0, 0.5]])
    loss, metrics = RiemannianFlowMatchingLoss(torus)(lambda x, t: torch.zeros_like(x), {"x1": x1, "x0": x0})
    assert loss.item() == pytest.approx(float((u ** 2).mean()), rel=1e-5)
    weighted, wm = RiemannianFlowMatchingLoss(torus)(lambda x, t: torch.zeros_like(x),
                                                     {"x1": x1, "x0": x0, "weight": torch.tensor([2.0, 0.0])})
    assert weighted.item() == pytest.approx(float((u[0] ** 2).mean()), rel=1e-5)
    assert set(wm) == {"loss", "mse", "weight_mean"}


def test_the_loss_projects_the_prediction_and_matches_flow_matching_on_euclidean_space():
    sphere = Sphere()
    x1 = sphere.random_base(16, generator=torch.Generator().manual_seed(0))
    normal = lambda x, t: 5.0 * x                                       # purely normal: projects to zero
    zero = lambda x, t: torch.zeros_like(x)
    objective = RiemannianFlowMatchingLoss(sphere)
    a, _ = objective(normal, {"x1": x1}, generator=torch.Generator().manual_seed(1))
    b, _ = objective(zero, {"x1": x1}, generator=torch.Generator().manual_seed(1))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    space = Euclidean(3)
    x0, x1 = torch.randn(8, 3), torch.randn(8, 3)
    model = lambda x, t: x * t[:, None]
    ours, _ = RiemannianFlowMatchingLoss(space)(model, {"x1": x1, "x0": x0}, generator=torch.Generator().manual_seed(2))
    theirs, _ = FlowMatchingLoss()(model, {"x1": x1, "x0": x0}, generator=torch.Generator().manual_seed(2))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_the_source_defaults_to_the_base_distribution_and_conditioning_reaches_the_model():
    seen = {}

    def model(x, t, y):
        seen["x"], seen["y"] = x, y
        return torch.zeros_like(x)

    so3 = SO3()
    x1 = so3.random_base(8, generator=torch.Generator().manual_seed(0))
    RiemannianFlowMatchingLoss(so3)(model, {"x1": x1, "y": torch.arange(8)})
    assert float(so3.distance_off(seen["x"]).max()) < 1e-5 and seen["y"].tolist() == list(range(8))


def test_geodesic_ot_pairs_minimise_the_total_squared_geodesic_distance():
    torus = FlatTorus(1)
    x0 = torch.tensor([[0.1], [3.0], [5.0]])
    x1 = torch.tensor([[6.2], [2.9], [4.9]])
    pairing = GeodesicOTCoupling(torus)(x0, x1)
    assert pairing.x0.flatten().tolist() == pytest.approx([0.1, 3.0, 5.0])
    assert torch.equal(pairing.x1, x1) and pairing.index1.tolist() == [0, 1, 2]
    sphere = Sphere()
    x0, x1 = pair(sphere, 64)
    paired = GeodesicOTCoupling(sphere)(x0, x1)
    assert sorted(paired.index0.tolist()) == list(range(64))
    assert float((sphere.dist(paired.x0, x1) ** 2).mean()) < 0.5 * float((sphere.dist(x0, x1) ** 2).mean())
    loss, _ = RiemannianFlowMatchingLoss(sphere, coupling=GeodesicOTCoupling(sphere))(
        lambda x, t: torch.zeros_like(x), {"x1": x1, "x0": x0})
    independent, _ = RiemannianFlowMatchingLoss(sphere)(lambda x, t: torch.zeros_like(x), {"x1": x1, "x0": x0})
    assert loss.item() < independent.item()
