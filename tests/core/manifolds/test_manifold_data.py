"""Manifold data sets: exact samplers agree with exact, normalised log-densities."""

from __future__ import annotations

import math

import pytest
import scipy.special
import torch

from flowzoo.core.manifolds import (SO3, FlatTorus, IsotropicSO3Mixture, Sphere, VonMisesFisherMixture,
                                    WrappedNormalMixture, earth_like_mixture, ramachandran_like_mixture,
                                    symmetric_so3_mixture)


def uniform_expectation(log_prob, manifold, f, n=100_000, seed=0):
    """E_p[f] by importance sampling from the base, and the normalisation E_base[p / p_base]."""
    x = manifold.random_base(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ratio = (log_prob(x).double() - manifold.base_log_prob(x)).exp()
    return float(ratio.mean()), float((ratio * f(x)).mean() / ratio.mean())


CASES = {
    "vmf": (earth_like_mixture(), Sphere(2), lambda x: x[:, 2]),
    "torus": (ramachandran_like_mixture(), FlatTorus(2), lambda x: torch.cos(x[:, 0]) + torch.sin(x[:, 1])),
    "so3": (symmetric_so3_mixture(0.3), SO3(), lambda x: x[:, 0, 0] + x[:, 1, 2]),
}


@pytest.mark.parametrize("name", CASES)
def test_the_log_density_is_normalised_and_describes_the_sampler(name):
    data, manifold, f = CASES[name]
    total, expectation = uniform_expectation(data.log_prob, manifold, f)
    assert total == pytest.approx(1.0, abs=0.03)
    samples = data.sample(50_000, generator=torch.Generator().manual_seed(1)).double()
    assert float(manifold.distance_off(samples).max()) < 1e-5
    assert float(f(samples).mean()) == pytest.approx(expectation, abs=0.03)


def test_von_mises_fisher_matches_its_closed_forms():
    vmf = VonMisesFisherMixture([[0.0, 0.0, 1.0]], 5.0)
    samples = vmf.sample(40_000, generator=torch.Generator().manual_seed(0))
    assert float(samples[:, 2].mean()) == pytest.approx(1 / math.tanh(5.0) - 1 / 5.0, abs=0.005)  # coth k - 1/k
    assert vmf.log_prob(torch.tensor([[0.0, 0.0, 1.0]])).item() == pytest.approx(
        math.log(5.0 / (4 * math.pi * math.sinh(5.0))) + 5.0, rel=1e-5)
    high = VonMisesFisherMixture([[0.0, 0.0, 0.0, 1.0]], 8.0)                 # S^3: Wood's sampler in general p
    mean_cos = float(high.sample(40_000, generator=torch.Generator().manual_seed(1))[:, 3].mean())
    assert mean_cos == pytest.approx(scipy.special.iv(2, 8.0) / scipy.special.iv(1, 8.0), abs=0.005)


def test_wrapped_normals_and_so3_gaussians_at_their_modes():
    wrapped = WrappedNormalMixture([[0.0, math.pi]], 0.2)
    mode = wrapped.log_prob(torch.tensor([[2 * math.pi - 1e-7, math.pi]])).item()
    assert mode == pytest.approx(-2 * math.log(0.2 * math.sqrt(2 * math.pi)), rel=1e-5)
    so3 = IsotropicSO3Mixture(torch.eye(3)[None], 0.1)
    # At the centre the Haar density is 8 pi^2 N_3(0) (the Haar density in exponential coordinates is 1/(8 pi^2)).
    expected = math.log(8 * math.pi ** 2 * (2 * math.pi * 0.01) ** -1.5) - SO3.log_volume
    assert so3.log_prob(torch.eye(3)[None]).item() == pytest.approx(expected, rel=1e-5)
