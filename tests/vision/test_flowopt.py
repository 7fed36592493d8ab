"""FlowOpt: the zero-order inversion converges below its step-size bound and not above it, beats naive reversal."""

import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.core.fewstep import GaussianOracle
from flowzoo.vision.flowopt import (backprop_invert, estimate_step_bound, flowopt_edit, flowopt_invert, reverse_ode,
                                    sample_ode)


@pytest.fixture(scope="module")
def oracle_velocity():
    oracle = GaussianOracle(mean=0.5, std=0.4)
    return lambda x, t: oracle.velocity(x.double(), t.double()).float()


def _images(n=4, seed=0):
    return 0.5 + 0.4 * torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_flowopt_beats_naive_reversal_at_equal_steps(oracle_velocity):
    images = _images()
    naive = reverse_ode(oracle_velocity, images, steps=4)
    naive_error = (sample_ode(oracle_velocity, naive, steps=4) - images).flatten(1).norm(dim=1)
    out = flowopt_invert(oracle_velocity, images, steps=4, iterations=30, step_size=1.0)
    assert torch.allclose(out.extras["errors"][0], naive_error, atol=1e-5)
    assert (out.extras["errors"][-1] < 0.01 * naive_error).all()
    assert out.nfe == 4 * 31 + 4


def test_convergence_below_the_estimated_bound_and_divergence_above(oracle_velocity):
    images = _images()
    z = reverse_ode(oracle_velocity, images, steps=4)
    lam, bound = estimate_step_bound(oracle_velocity, z, steps=4)
    # f is affine here, J_f = c·I: c = S(1)/S(0) = 0.4 for the exact flow, about 0.26 with 4 Euler steps
    assert 0.2 < lam < 0.45
    below = flowopt_invert(oracle_velocity, images, steps=4, iterations=10, step_size=0.8 * bound, init=z)
    above = flowopt_invert(oracle_velocity, images, steps=4, iterations=10, step_size=1.3 * bound, init=z)
    e_below, e_above = below.extras["errors"].mean(1), above.extras["errors"].mean(1)
    assert (e_below[1:] <= e_below[:-1] + 1e-6).all() and e_below[-1] < 0.1 * e_below[0]
    assert e_above[-1] > e_above[0]


def test_backprop_baseline_converges_too(oracle_velocity):
    images = _images()
    out = backprop_invert(oracle_velocity, images, steps=4, iterations=10, lr=10.0)   # below 2/c² for J = c·I
    assert out.extras["errors"][-1].mean() < 0.1 * out.extras["errors"][0].mean()


def test_edit_moves_towards_the_target_condition_while_keeping_the_source():
    means = torch.tensor([-0.6, 0.6])
    oracles = [GaussianOracle(mean=float(m), std=0.3) for m in means]

    def model(x, t, y):
        v = torch.stack([o.velocity(x.double(), t.double()).float() for o in oracles])
        return v[y, torch.arange(x.shape[0])]
    image = -0.6 + 0.3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    src, tgt = {"y": torch.zeros(2, dtype=torch.long)}, {"y": torch.ones(2, dtype=torch.long)}
    plain = sample_ode(model, reverse_ode(model, image, steps=4, cond=src), steps=4, cond=tgt)
    edited = flowopt_edit(model, image, source_cond=src, target_cond=tgt, steps=4, iterations=3, step_size=0.3)
    assert (edited.x - image).norm() < (plain - image).norm()


def test_a_sampler_without_a_positive_jacobian_is_refused():
    with pytest.raises(ConfigError, match="positive leading eigenvalue"):
        estimate_step_bound(lambda x, t: -2.0 * x, torch.ones(1, 1, 2, 2), steps=2)
