"""Flows learn mixtures on the sphere, the torus and SO(3) in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.manifolds import (SO3, FlatTorus, GeodesicOTCoupling, ManifoldMLP, RiemannianFlowMatchingLoss,
                                    Sphere, earth_like_mixture, geodesic_mmd, integrate_manifold,
                                    manifold_log_likelihood, ramachandran_like_mixture, symmetric_so3_mixture)

CASES = {
    "sphere": (Sphere(2), earth_like_mixture, 400),
    "torus": (FlatTorus(2), ramachandran_like_mixture, 300),
    "so3": (SO3(), lambda: symmetric_so3_mixture(0.2), 400),
}


def train(manifold, data, steps, coupling=None, batch=256):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = ManifoldMLP(manifold, hidden=64, depth=3)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    objective = RiemannianFlowMatchingLoss(manifold, coupling=coupling)
    for _ in range(steps):
        loss, _ = objective(net, {"x1": data.sample(batch, generator=generator)}, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net


@pytest.mark.parametrize("name", CASES)
def test_a_short_training_learns_the_mixture(name):
    torch.set_num_threads(1)
    manifold, make_data, steps = CASES[name]
    data = make_data()
    net = train(manifold, data, steps)
    generator = torch.Generator().manual_seed(1)
    held_out = data.sample(400, generator=generator)
    with torch.no_grad():
        samples = integrate_manifold(net, manifold.random_base(400, generator=generator), manifold=manifold,
                                     method="midpoint", steps=16).x
    base_mmd = geodesic_mmd(manifold.random_base(400, generator=generator), held_out, manifold)
    model_mmd = geodesic_mmd(samples, held_out, manifold)
    assert model_mmd < 0.2 * base_mmd
    nll = -manifold_log_likelihood(net, held_out[:100], manifold=manifold, steps=8).mean().item()
    base_nll = -manifold.base_log_prob(held_out[:1]).item()
    data_nll = -data.log_prob(held_out[:100]).mean().item()
    # At least half of the way from the base's NLL to the data's own (the best any model can do in expectation).
    assert nll < data_nll + 0.5 * (base_nll - data_nll)


def test_geodesic_ot_training_learns_too():
    torch.set_num_threads(1)
    sphere, data = Sphere(2), earth_like_mixture()
    net = train(sphere, data, 300, coupling=GeodesicOTCoupling(sphere), batch=128)
    generator = torch.Generator().manual_seed(1)
    held_out = data.sample(400, generator=generator)
    with torch.no_grad():
        samples = integrate_manifold(net, sphere.random_base(400, generator=generator), manifold=sphere, steps=8).x
    assert geodesic_mmd(samples, held_out, sphere) < 0.2 * geodesic_mmd(sphere.random_base(400, generator=generator),
                                                                        held_out, sphere)
