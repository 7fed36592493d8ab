"""Closed-form tests of flowzoo.core.paths.affine: every scheduler and gamma, over several data shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jvp

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.paths import (
    AffinePath,
    BrownianGamma,
    BSquaredGamma,
    CondOTPath,
    ConstantGamma,
    CosineScheduler,
    LinearScheduler,
    PathSample,
    PolynomialScheduler,
    SchedulerOutput,
    SineSquaredGamma,
    StochasticInterpolant,
    VPScheduler,
)

SHAPES = [(8, 2), (4, 3, 5, 5), (16, 64)]


def _vp_reference(t, beta_min=0.1, beta_max=20.0):
    s = 1 - t
    data = torch.exp(-0.5 * (beta_min * s + 0.5 * (beta_max - beta_min) * s ** 2))
    return torch.sqrt(1 - data ** 2), data


# Each entry: scheduler and an independent reference (alpha, beta) written from the definitions.
SCHEDULERS = {
    "linear": (LinearScheduler(), lambda t: (1 - t, t)),
    "cosine": (CosineScheduler(), lambda t: (torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2))),
    "vp": (VPScheduler(), _vp_reference),
    "vp_custom": (VPScheduler(0.5, 5.0), lambda t: _vp_reference(t, 0.5, 5.0)),
    "poly2": (PolynomialScheduler(2), lambda t: (1 - t ** 2, t ** 2)),
    "poly3.5": (PolynomialScheduler(3.5), lambda t: (1 - t ** 3.5, t ** 3.5)),
    "poly0.5": (PolynomialScheduler(0.5), lambda t: (1 - t ** 0.5, t ** 0.5)),
}
GAMMAS = {
    "brownian": (BrownianGamma(), lambda t: torch.sqrt(t * (1 - t))),
    "brownian_scaled": (BrownianGamma(0.3), lambda t: torch.sqrt(0.3 * t * (1 - t))),
    "bsquared": (BSquaredGamma(), lambda t: t * (1 - t)),
    "sinesquared": (SineSquaredGamma(), lambda t: torch.sin(math.pi * t) ** 2),
    "constant": (ConstantGamma(0.2), lambda t: torch.full_like(t, 0.2)),
}


def _data(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(shape[0], generator=g, dtype=torch.float64)  # interior: derivatives finite
    return x0, x1, t


def _bc(c, x):
    return c.reshape(-1, *([1] * (x.dim() - 1)))


def _time_derivative(fn, t):
    """d fn(t)/dt per sample: the samples are independent in t, so a JVP with tangent 1 gives each one."""
    return jvp(fn, (t,), (torch.ones_like(t),))[1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_affine_path_matches_formula_and_autograd(name, shape):
    scheduler, reference = SCHEDULERS[name]
    path = AffinePath(scheduler)
    x0, x1, t = _data(shape)
    sample = path.sample(x0, x1, t)
    alpha, beta = reference(t)
    assert isinstance(sample, PathSample) and sample.z is None
    assert sample.x_t.shape == shape and sample.t.shape == (shape[0],)
    torch.testing.assert_close(sample.x_t, _bc(alpha, x0) * x0 + _bc(beta, x1) * x1)
    dx_autograd = _time_derivative(lambda tt: path.sample(x0, x1, tt).x_t, t)
    torch.testing.assert_close(sample.dx_t, dx_autograd)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_derivatives_are_analytic_derivatives(name):
    scheduler, _ = SCHEDULERS[name]
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    out = scheduler(t)
    assert isinstance(out, SchedulerOutput)
    torch.testing.assert_close(out.d_alpha, _time_derivative(lambda tt: scheduler(tt).alpha, t))
    torch.testing.assert_close(out.d_beta, _time_derivative(lambda tt: scheduler(tt).beta, t))


@pytest.mark.parametrize("name", ["linear", "cosine", "poly2", "poly3.5", "poly0.5"])
def test_endpoints_are_source_and_data(name):
    path = AffinePath(SCHEDULERS[name][0])
    x0, x1, _ = _data((6, 3))
    at0 = path.sample(x0, x1, torch.zeros(6, dtype=torch.float64))
    at1 = path.sample(x0, x1, 1.0)
    torch.testing.assert_close(at0.x_t, x0)
    torch.testing.assert_close(at1.x_t, x1)
    assert torch.isfinite(at0.dx_t).all() and torch.isfinite(at1.dx_t).all()


def test_vp_endpoints_and_variance_preservation():
    path = AffinePath(VPScheduler())
    x0, x1, _ = _data((6, 3))
    torch.testing.assert_close(path.sample(x0, x1, 1.0).x_t, x1)
    assert (path.sample(x0, x1, 0.0).x_t - x0).abs().max() < 0.03  # beta(0) = exp(-5.025) ~ 0.0066
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    out = VPScheduler()(t)
    torch.testing.assert_close(out.alpha ** 2 + out.beta ** 2, torch.ones_like(t))
    assert out.beta[0].item() == pytest.approx(math.exp(-(0.1 + 20.0) / 4))
    assert torch.isfinite(out.d_alpha).all()  # clamped at t = 1 where the exact value is -inf
    assert torch.isfinite(VPScheduler()(torch.ones(3)).d_alpha).all()  # float32 too


def test_cond_ot_path_target_is_difference():
    x0, x1, t = _data((5, 4))
    sample = CondOTPath().sample(x0, x1, t)
    torch.testing.assert_close(sample.dx_t, x1 - x0)


def _random_velocity_setup(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    x_t = torch.randn(shape, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(shape[0], generator=g, dtype=torch.float64)
    return v, x_t, t


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_conversions_round_trip_and_are_exact_on_a_pair(name, shape):
    path = AffinePath(SCHEDULERS[name][0])
    v, x_t, t = _random_velocity_setup(shape)
    torch.testing.assert_close(path.x1_to_velocity(path.velocity_to_x1(v, x_t, t), x_t, t), v)
    torch.testing.assert_close(path.x0_to_velocity(path.velocity_to_x0(v, x_t, t), x_t, t), v)
    torch.testing.assert_close(path.score_to_velocity(path.velocity_to_score(v, x_t, t), x_t, t), v)
    x0, x1, t = _data(shape)
    s = path.sample(x0, x1, t)
    torch.testing.assert_close(path.velocity_to_x1(s.dx_t, s.x_t, t), x1)
    torch.testing.assert_close(path.velocity_to_x0(s.dx_t, s.x_t, t), x0)
    torch.testing.assert_close(path.x1_to_velocity(x1, s.x_t, t), s.dx_t)
    torch.testing.assert_close(path.x0_to_velocity(x0, s.x_t, t), s.dx_t)


def _gaussian_oracle(path_or_scheduler, x, t, mean, std, gamma=None):
    """x1 ~ N(mean, std² I), x0 ~ N(0, I) (and z ~ N(0, I)): x_t is Gaussian, so everything is closed form.

    Returns the true velocity E[dx_t | x_t], the true score and E[z | x_t].
    """
    out = path_or_scheduler(t)
    a, b, da, db = (_bc(c, x) for c in (out.alpha, out.beta, out.d_alpha, out.d_beta))
    g = gd = torch.zeros_like(a)
    if gamma is not None:
        go = gamma(t)
        g, gd = _bc(go.gamma, x), _bc(go.gamma_d_gamma, x)
    var = a ** 2 + b ** 2 * std ** 2 + g ** 2
    centred = x - b * mean
    velocity = db * mean + (a * da + b * db * std ** 2 + gd) * centred / var
    return velocity, -centred / var, g * centred / var


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_score_conversion_matches_gaussian_case(name):
    scheduler = SCHEDULERS[name][0]
    path = AffinePath(scheduler)
    g = torch.Generator().manual_seed(3)
    x = 2 * torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64)
    mean, std = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.7
    velocity, score, _ = _gaussian_oracle(scheduler, x, t, mean, std)
    torch.testing.assert_close(path.velocity_to_score(velocity, x, t), score)
    torch.testing.assert_close(path.score_to_velocity(score, x, t), velocity)


def test_gaussian_oracle_velocity_is_the_conditional_mean():
    """Check the oracle itself: regress dx_t on x_t by Monte Carlo at one t (linear and VP)."""
    g = torch.Generator().manual_seed(4)
    for scheduler in (LinearScheduler(), VPScheduler()):
        n, t = 200_000, torch.full((200_000,), 0.4, dtype=torch.float64)
        x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
        x1 = 1.5 + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
        s = AffinePath(scheduler).sample(x0, x1, t)
        design = torch.cat([torch.ones_like(s.x_t), s.x_t], dim=1)
        coef = torch.linalg.lstsq(design, s.dx_t).solution.squeeze()
        probe = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        oracle, _, _ = _gaussian_oracle(scheduler, probe, t[:2], 1.5, 0.5)
        torch.testing.assert_close(coef[0] + coef[1] * probe.squeeze(), oracle.squeeze(), atol=0.02, rtol=0.02)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma_name", sorted(GAMMAS))
@pytest.mark.parametrize("scheduler_name", ["linear", "cosine", "vp"])
def test_interpolant_matches_formula_and_autograd(scheduler_name, gamma_name, shape):
    scheduler, reference = SCHEDULERS[scheduler_name]
    gamma, gamma_ref = GAMMAS[gamma_name]
    si = StochasticInterpolant(scheduler, gamma)
    x0, x1, t = _data(shape)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    sample = si.sample(x0, x1, t, z=z)
    alpha, beta = reference(t)
    expected_xt = _bc(alpha, x0) * x0 + _bc(beta, x1) * x1 + _bc(gamma_ref(t), z) * z
    torch.testing.assert_close(sample.x_t, expected_xt)
    assert sample.z is z
    torch.testing.assert_close(sample.dx_t, _time_derivative(lambda tt: si.sample(x0, x1, tt, z=z).x_t, t))
    anti = si.antithetic(sample)
    torch.testing.assert_close(anti.z, -z)
    torch.testing.assert_close(anti.x_t + sample.x_t, 2 * (_bc(alpha, x0) * x0 + _bc(beta, x1) * x1))
    torch.testing.assert_close(anti.dx_t + sample.dx_t, 2 * AffinePath(scheduler).sample(x0, x1, t).dx_t)


@pytest.mark.parametrize("gamma_name", sorted(GAMMAS))
def test_gamma_derivatives(gamma_name):
    gamma, reference = GAMMAS[gamma_name]
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    out = gamma(t)
    torch.testing.assert_close(out.gamma, reference(t))
    torch.testing.assert_close(out.d_gamma, _time_derivative(lambda tt: gamma(tt).gamma, t))
    torch.testing.assert_close(out.gamma_d_gamma, out.gamma * out.d_gamma)
    ends = gamma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert all(torch.isfinite(c).all() for c in ends)


def test_brownian_gamma_at_the_ends():
    out = BrownianGamma(0.5)(torch.tensor([0.0, 1.0]))
    assert out.gamma.tolist() == [0.0, 0.0]
    assert out.gamma_d_gamma.tolist() == [0.25, -0.25]  # scale (1 - 2t) / 2, finite although d_gamma is not
    assert BrownianGamma.singular_derivative and not BSquaredGamma.singular_derivative
    assert not ConstantGamma.vanishes_at_ends and SineSquaredGamma.vanishes_at_ends
    si = StochasticInterpolant(LinearScheduler(), BrownianGamma())
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(si.sample(x0, x1, 0.0).x_t, x0)
    torch.testing.assert_close(si.sample(x0, x1, 1.0).x_t, x1)
    assert torch.isfinite(si.sample(x0, x1, 1.0).dx_t).all()


def test_interpolant_denoiser_to_score_in_gaussian_case():
    si = StochasticInterpolant(CosineScheduler(), BrownianGamma())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = 0.1 + 0.8 * torch.rand(32, generator=g, dtype=torch.float64)
    _, score, eta = _gaussian_oracle(si.scheduler, x, t, 0.3, 1.2, gamma=si.gamma)
    torch.testing.assert_close(si.denoiser_to_score(eta, t), score)


def test_interpolant_seeded_noise_is_deterministic():
    si = StochasticInterpolant(LinearScheduler(), BSquaredGamma())
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    a = si.sample(x0, x1, 0.5, generator=torch.Generator().manual_seed(0))
    b = si.sample(x0, x1, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.z, b.z) and torch.equal(a.x_t, b.x_t)


def test_bad_inputs_raise_flowzoo_errors():
    path = CondOTPath()
    x = torch.randn(4, 2)
    with pytest.raises(ShapeError, match="same shape"):
        path.sample(x, torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ShapeError, match=r"\(4,\)"):
        path.sample(x, x, torch.rand(5))
    with pytest.raises(ShapeError):
        path.sample(x, x, torch.rand(4, 1))
    with pytest.raises(NonFiniteError):
        path.sample(x.clone().fill_(float("nan")), x, torch.rand(4))
    with pytest.raises(NonFiniteError):
        path.sample(x, x, torch.tensor([0.1, float("inf"), 0.2, 0.3]))
    with pytest.raises(EmptyInputError):
        path.sample(torch.empty(0, 2), torch.empty(0, 2), torch.empty(0))
    with pytest.raises(DTypeError):
        path.sample(torch.ones(4, 2, dtype=torch.long), torch.ones(4, 2, dtype=torch.long), torch.rand(4))
    with pytest.raises(DTypeError):
        path.sample(x.tolist(), x, torch.rand(4))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        path.sample(x, x, torch.full((4,), 500.0))
    with pytest.raises(ShapeError):
        path.velocity_to_x1(torch.randn(4, 3), x, torch.rand(4))
    with pytest.raises(ConfigError):
        StochasticInterpolant(LinearScheduler(), BrownianGamma()).antithetic(path.sample(x, x, 0.5))
    with pytest.raises(ShapeError):
        StochasticInterpolant(LinearScheduler(), BrownianGamma()).sample(x, x, 0.5, z=torch.randn(4, 3))


@pytest.mark.parametrize("make", [
    lambda: PolynomialScheduler(0), lambda: PolynomialScheduler(-1.0), lambda: PolynomialScheduler("2"),
    lambda: VPScheduler(beta_min=5.0, beta_max=1.0), lambda: BrownianGamma(0.0), lambda: ConstantGamma(0.0),
    lambda: ConstantGamma(float("nan")), lambda: AffinePath("linear"),
    lambda: StochasticInterpolant(LinearScheduler(), None),
])
def test_bad_parameters_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_float_time_and_float32_data():
    path = AffinePath(CosineScheduler())
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    s = path.sample(x0, x1, 0.5)
    assert s.t.dtype == torch.float32 and s.t.tolist() == [0.5, 0.5, 0.5]
    torch.testing.assert_close(s.x_t, math.cos(math.pi / 4) * (x0 + x1))
