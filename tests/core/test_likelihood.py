"""Tests of flowzoo.core.sampling.likelihood: log-densities of flows with closed-form answers.

* The affine flow v = a x + b carries N(0, I) to N(b (e^a - 1)/a, e^{2a} I).
* The exact velocity of the linear interpolant from N(0, I) to N(m, Σ) (independent coupling) carries N(0, I)
  to N(m, Σ); its Jacobian is not diagonal, so Hutchinson's estimate is genuinely noisy.
* For any flow, exp(log p) integrates to 1 over the plane.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError, NonFiniteError, ShapeError
from flowzoo.core.sampling import log_likelihood, standard_normal_log_prob
from flowzoo.core.nets import MLPVelocity

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.6], [0.6, 0.8]], dtype=torch.float64)
TARGET = torch.distributions.MultivariateNormal(MEAN, COV)


def gaussian_velocity(x, t):
    """E[x1 - x0 | x_t = x] for x0 ~ N(0, I), x1 ~ N(MEAN, COV), x_t = (1 - t) x0 + t x1."""
    s = float(t[0])
    eye = torch.eye(2, dtype=x.dtype)
    cov_t = (1 - s) ** 2 * eye + s**2 * COV
    gain = torch.linalg.solve(cov_t, s * COV - (1 - s) * eye).T
    return MEAN + (x - s * MEAN) @ gain.T


def affine_velocity(a: float, b: float):
    return lambda x, t: a * x + b


def affine_log_prob(x, a, b):
    dim = x[0].numel()
    mean = b * (math.exp(a) - 1.0) / a
    z = (x.reshape(x.shape[0], -1) - mean) * math.exp(-a)
    return -0.5 * z.pow(2).sum(1) - dim * a - 0.5 * dim * math.log(2 * math.pi)


@pytest.fixture
def data():
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return MEAN + noise @ torch.linalg.cholesky(COV).T


@pytest.mark.parametrize("method, steps", [("dopri5", None), ("rk4", 40)])
def test_exact_estimator_matches_gaussian_target(data, method, steps):
    logp, nfe = log_likelihood(gaussian_velocity, data, method=method, steps=steps)
    assert logp.shape == (64,)
    assert torch.allclose(logp, TARGET.log_prob(data), atol=1e-3)
    assert nfe > 0 and (method != "rk4" or nfe == 4 * steps)


@pytest.mark.parametrize("a, b", [(0.7, 0.0), (-0.4, 1.5)])
def test_affine_flow_on_image_shaped_data(a, b):
    x1 = torch.randn(8, 1, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    logp, _ = log_likelihood(affine_velocity(a, b), x1, method="rk4", steps=30)
    assert torch.allclose(logp, affine_log_prob(x1, a, b), atol=1e-3)


def test_hutchinson_is_exact_for_diagonal_jacobians_with_rademacher_probes():
    x1 = torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logp, _ = log_likelihood(affine_velocity(0.7, 0.3), x1, method="rk4", steps=30, estimator="hutchinson",
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logp, affine_log_prob(x1, 0.7, 0.3), atol=1e-3)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_within_noise(data, probe):
    exact = TARGET.log_prob(data)
    one, _ = log_likelihood(gaussian_velocity, data, method="rk4", steps=20, estimator="hutchinson",
                            probe=probe, generator=torch.Generator().manual_seed(3))
    many, _ = log_likelihood(gaussian_velocity, data, method="rk4", steps=20, estimator="hutchinson",
                             probe=probe, n_probes=256, generator=torch.Generator().manual_seed(3))
    error_one, error_many = (one - exact).abs(), (many - exact).abs()
    assert error_one.max() > 1e-3  # a single probe really is noisy for a non-diagonal Jacobian
    # One probe errs by ~0.6 nats here; 256 probes shrink that ~16x (observed std ≈ 0.04).
    assert error_many.mean() < error_one.mean() / 4
    assert error_many.mean() < 0.06 and error_many.max() < 0.25
    assert abs(float((many - exact).mean())) < 0.03  # no bias: the 64 errors average out


def test_density_of_a_random_mlp_flow_integrates_to_one():
    torch.manual_seed(0)
    net = MLPVelocity(2, hidden=32, depth=2).double().eval()
    with torch.no_grad():
        net.body[-1].weight.mul_(0.5)
    axis = torch.linspace(-7, 7, 101, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    logp, _ = log_likelihood(net, grid, method="rk4", steps=8)
    cell = float(axis[1] - axis[0]) ** 2
    assert float(logp.exp().sum()) * cell == pytest.approx(1.0, abs=0.01)
    # The MLP's divergence is not zero, so the density differs from the source's.
    assert (logp - standard_normal_log_prob(grid)).abs().max() > 0.05


def test_exact_and_hutchinson_agree_on_an_mlp():
    torch.manual_seed(1)
    net = MLPVelocity(3, hidden=32, depth=2).double().eval()
    x1 = torch.randn(32, 3, dtype=torch.float64)
    exact, _ = log_likelihood(net, x1, method="rk4", steps=10)
    estimate, _ = log_likelihood(net, x1, method="rk4", steps=10, estimator="hutchinson", n_probes=64,
                                 generator=torch.Generator().manual_seed(0))
    assert (estimate - exact).abs().mean() < 0.02


def test_custom_source_and_conditioning():
    source = torch.distributions.Normal(0.0, 2.0)

    def source_log_prob(x0):
        return source.log_prob(x0).sum(1)

    def shifted(x, t, offset):
        return offset.expand_as(x)

    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    offset = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    logp, nfe = log_likelihood(shifted, x1, source_log_prob=source_log_prob, method="euler", steps=3,
                               cond={"offset": offset})
    assert torch.allclose(logp, source_log_prob(x1 - offset), atol=1e-10) and nfe == 3


def test_backpropagates_when_enabled():
    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x1 = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    logp, _ = log_likelihood(lambda x, t: a * x, x1, method="rk4", steps=20, enable_grad=True)
    logp.sum().backward()
    # log p1(x) = log N(x; 0, e^{2a} I): d/da = -D + e^{-2a} |x|².
    expected = (-3 + math.exp(-0.6) * x1.pow(2).sum(1)).sum()
    assert a.grad.item() == pytest.approx(expected.item(), abs=1e-3)
    no_graph, _ = log_likelihood(lambda x, t: a * x, x1, method="rk4", steps=5)
    assert not no_graph.requires_grad


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"estimator": "skilling"}, ConfigError),
        ({"estimator": "hutchinson", "probe": "sphere"}, ConfigError),
        ({"estimator": "hutchinson", "n_probes": 0}, ConfigError),
        ({"method": "rk4"}, ConfigError),
        ({"method": "rk45"}, ConfigError),
        ({"source_log_prob": lambda x0: x0}, ShapeError),
    ],
)
def test_bad_configuration_raises(kwargs, error):
    with pytest.raises(error) as info:
        log_likelihood(affine_velocity(0.1, 0.0), torch.ones(3, 2), **kwargs)
    assert isinstance(info.value, FlowzooError)


def test_bad_inputs_raise():
    with pytest.raises(NonFiniteError):
        log_likelihood(affine_velocity(0.1, 0.0), torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ShapeError):
        log_likelihood(lambda x, t: x[:, :1], torch.ones(3, 2), method="euler", steps=2)
