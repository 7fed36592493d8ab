"""Closed-form tests of flowzoo.core.paths.affine: every scheduler and gamma, over several data shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jvp

from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.paths import (
    AffinePath,
    BrownianGamma,
    BSquaredGamma,
    CondOTPath,
    ConstantGamma,
    CosineScheduler,
    LinearScheduler,
    LinearVPScheduler,
    CoupledPathSample,
    PathSample,
    ScheduleTransformedModel,
    SchrodingerBridgePath,
    SigmaMinOTPath,
    sample_conditional_flow,
    PolynomialScheduler,
    SchedulerOutput,
    SigmaMinScheduler,
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
    "linear_vp": (LinearVPScheduler(), lambda t: (torch.sqrt(1 - t ** 2), t)),
    "sigma_min": (SigmaMinScheduler(0.05), lambda t: (1 - 0.95 * t, t)),
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


# ----------------------------------------------------------------------- peer-parity additions (issue 24)

@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_x0_and_x1_predictions_convert_into_each_other_exactly_on_a_pair(name):
    path = AffinePath(SCHEDULERS[name][0])
    x0, x1, t = _data((8, 3))
    s = path.sample(x0, x1, t)
    torch.testing.assert_close(path.x0_to_x1(x0, s.x_t, t), x1)
    torch.testing.assert_close(path.x1_to_x0(x1, s.x_t, t), x0)


@pytest.mark.parametrize("sigma_min", [0.0, 1e-4, 0.1])
def test_sigma_min_path_target_is_lipman_equation_21(sigma_min):
    x0, x1, t = _data((8, 2))
    s = SigmaMinOTPath(sigma_min).sample(x0, x1, t)
    shrink = 1 - sigma_min
    torch.testing.assert_close(s.x_t, _bc(1 - shrink * t, x0) * x0 + _bc(t, x1) * x1)
    # u_t(x | x1) = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t), evaluated at the sample's own x_t.
    torch.testing.assert_close(s.dx_t, (x1 - shrink * s.x_t) / _bc(1 - shrink * t, x1))
    at_data = SigmaMinOTPath(sigma_min).sample(x0, x1, 1.0)
    torch.testing.assert_close(at_data.x_t - x1, sigma_min * x0)  # width sigma_min around the data at t = 1
    assert repr(SigmaMinOTPath(0.1)) == "SigmaMinOTPath(SigmaMinScheduler(sigma_min=0.1))"


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_schrodinger_bridge_path_is_the_brownian_bridge_with_its_score(sigma):
    x0, x1, t = _data((16, 3))
    path = SchrodingerBridgePath(sigma)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s = path.sample(x0, x1, t, z=z)
    mean, std = _bc(1 - t, x0) * x0 + _bc(t, x1) * x1, _bc(sigma * torch.sqrt(t * (1 - t)), x0)
    torch.testing.assert_close(s.x_t, mean + std * z)
    torch.testing.assert_close(s.dx_t, x1 - x0 + _bc((1 - 2 * t) / (2 * t * (1 - t)), x0) * (s.x_t - mean))
    # The Gaussian N(mean, std^2) has score -(x - mean) / std^2.
    torch.testing.assert_close(path.score_target(s), -(s.x_t - mean) / std ** 2)
    torch.testing.assert_close(path.score_weight(t), 2 * torch.sqrt(t * (1 - t)) / sigma)
    assert isinstance(path, StochasticInterpolant) and repr(path) == f"SchrodingerBridgePath(sigma={sigma})"


def test_schrodinger_bridge_path_bad_inputs():
    with pytest.raises(ConfigError, match="sigma"):
        SchrodingerBridgePath(0.0)
    path = SchrodingerBridgePath()
    with pytest.raises(ConfigError, match="PathSample with z"):
        path.score_target(AffinePath(LinearScheduler()).sample(torch.zeros(2, 1), torch.ones(2, 1), 0.5))
    with pytest.raises(ConfigError, match=r"t in \[0, 1\]"):
        path.score_weight(torch.tensor([1.5]))


def _gaussian_velocity(scheduler, mean, std):
    """Marginal velocity of the affine path of ``scheduler`` from N(0, 1) to N(mean, std^2), independent pairs:
    x_t ~ N(beta m, alpha^2 + beta^2 s^2), so u = d mu + (d sd / sd)(x - mu)."""
    def velocity(x, t):
        out = scheduler(t)
        a, b, da, db = (c[:, None] for c in (out.alpha, out.beta, out.d_alpha, out.d_beta))
        var = a ** 2 + (b * std) ** 2
        return db * mean + (a * da + b * db * std ** 2) / var * (x - b * mean)
    return velocity


@pytest.mark.parametrize("new", [CosineScheduler(), LinearVPScheduler(), PolynomialScheduler(2.0)])
def test_schedule_transform_of_an_exact_velocity_is_the_new_paths_exact_velocity(new):
    original = LinearScheduler()
    transformed = ScheduleTransformedModel(_gaussian_velocity(original, 2.0, 0.5), original, new)
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None]
    for r in (0.1, 0.4, 0.8):
        times = torch.full((13,), r, dtype=torch.float64)
        torch.testing.assert_close(transformed(x, times), _gaussian_velocity(new, 2.0, 0.5)(x, times))


def test_schedule_transform_to_the_same_scheduler_is_the_identity():
    model = lambda x, t: torch.sin(x) * t[:, None]  # noqa: E731
    wrapped = ScheduleTransformedModel(model, CosineScheduler(), CosineScheduler())
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64) * 0.9
    torch.testing.assert_close(wrapped(x, t), model(x, t))
    torch.testing.assert_close(wrapped(x, 0.3), model(x, torch.full((5,), 0.3, dtype=torch.float64)))


def _train_moons(path, steps):
    """I-CFM on 8 Gaussians -> moons along ``path`` (tests/core/toy_training.py), on one thread."""
    from toy_training import train_fm_moons

    from flowzoo.core.objectives import FlowMatchingLoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP trains several times faster on one thread of a busy machine
    try:
        return train_fm_moons(steps=steps, objective=FlowMatchingLoss(path=path))
    finally:
        torch.set_num_threads(threads)


def test_schrodinger_bridge_path_drift_learns_moons():
    from flowzoo.core.analysis import wasserstein2
    from flowzoo.core.data import sample_toy
    from flowzoo.core.sampling import integrate

    model = _train_moons(SchrodingerBridgePath(0.3), steps=500)
    x0, data = sample_toy("8gaussians", 800, seed=5), sample_toy("moons", 800, seed=6)
    with torch.no_grad():
        samples = integrate(model, x0, method="midpoint", steps=10).x
    assert wasserstein2(samples, data) < 1.1 < 2.0 < wasserstein2(x0, data)  # trained: ~0.8; the source: ~2.7


def test_schedule_transformed_trained_model_samples_the_same_data():
    from flowzoo.core.analysis import wasserstein2
    from flowzoo.core.data import sample_toy
    from flowzoo.core.sampling import integrate

    model = _train_moons(SigmaMinOTPath(1e-3), steps=600)
    x0, data = sample_toy("8gaussians", 800, seed=5), sample_toy("moons", 800, seed=6)
    cosine = ScheduleTransformedModel(model, SigmaMinScheduler(1e-3), CosineScheduler())
    with torch.no_grad():
        original = integrate(model, x0, method="midpoint", steps=20).x
        changed = integrate(cosine, x0, method="midpoint", steps=20).x
    assert wasserstein2(original, data) < 0.9 < 2.0 < wasserstein2(x0, data)  # trained: ~0.6; the source: ~2.7
    assert wasserstein2(changed, original) < 0.15  # the same flow along another path (without ds/dt: ~1.9)


@pytest.mark.parametrize("make, match", [
    (lambda: ScheduleTransformedModel("model", LinearScheduler(), CosineScheduler()), "callable velocity model"),
    (lambda: ScheduleTransformedModel(lambda x, t: x, lambda t: None, CosineScheduler()), "snr_inverse"),
    (lambda: ScheduleTransformedModel(lambda x, t: x, LinearScheduler(), "cosine"), "new scheduler"),
])
def test_schedule_transform_bad_inputs(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_sample_conditional_flow_reindexes_conditions_and_keeps_the_pairing():
    x0 = torch.tensor([[0.0], [10.0], [5.0]])
    x1 = torch.tensor([[11.0], [1.0], [6.0]])
    labels = {"y": torch.tensor([7, 8, 9]), "c": torch.tensor([[1.0], [2.0], [3.0]])}
    s = sample_conditional_flow(x0, x1, coupling=ExactOTCoupling(), t=torch.tensor([0.0, 0.5, 1.0]),
                                cond0=torch.tensor([0, 1, 2]), cond1=labels)
    assert isinstance(s, CoupledPathSample) and isinstance(s, PathSample)
    assert s.index0.tolist() == [1, 0, 2] and s.cond0.tolist() == [1, 0, 2]
    assert s.cond1["y"].tolist() == [7, 8, 9] and s.x_t.flatten().tolist() == [10.0, 0.5, 6.0]
    torch.testing.assert_close(s.dx_t, s.x1 - s.x0)


def test_sample_conditional_flow_draws_t_and_z_from_the_generator():
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2) + 2
    path = StochasticInterpolant(LinearScheduler(), ConstantGamma(0.1))
    one = sample_conditional_flow(x0, x1, path=path, generator=torch.Generator().manual_seed(3))
    two = sample_conditional_flow(x0, x1, path=path, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one.t, two.t) and torch.equal(one.z, two.z) and one.z is not None
    assert one.t.dtype == x1.dtype and 0.0 <= one.t.min() and one.t.max() <= 1.0
    torch.testing.assert_close(one.x_t, _bc(1 - one.t, x0) * x0 + _bc(one.t, x1) * x1 + 0.1 * one.z)
    from flowzoo.core.couplings import GibbsWeightedCoupling
    from flowzoo.core.paths import UShapedTime
    weighted = sample_conditional_flow(x0, x1, coupling=GibbsWeightedCoupling(), time_sampler=UShapedTime())
    assert weighted.weight.shape == (64,) and weighted.cond0 is None and weighted.cond1 is None


def test_sample_conditional_flow_with_a_conditional_coupling_pairs_within_labels():
    from flowzoo.core.couplings import ConditionalOTCoupling
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
    y = torch.arange(40) % 4
    s = sample_conditional_flow(x0, x1, coupling=ConditionalOTCoupling(), cond0=y, cond1=y)
    assert torch.equal(s.cond0, s.cond1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"path": "linear"}, ConfigError, "path with .sample"),
    ({"coupling": "exact_ot"}, ConfigError, "coupling"),
    ({"time_sampler": "uniform"}, ConfigError, "TimeSampler"),
    ({"t": 2.0}, ConfigError, r"t in \[0, 1\]"),
    ({"cond1": torch.zeros(3)}, ShapeError, "cond1"),
])
def test_sample_conditional_flow_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        sample_conditional_flow(torch.zeros(4, 2), torch.ones(4, 2), **kwargs)


def test_sample_conditional_flow_refuses_mismatched_batches_without_a_coupling():
    with pytest.raises(ShapeError):
        sample_conditional_flow(torch.zeros(4, 2), torch.ones(4, 3))
    with pytest.raises(NonFiniteError):
        sample_conditional_flow(torch.full((4, 2), float("nan")), torch.ones(4, 2))
