"""Peer parity: the same inputs through flowzoo and through facebookresearch/flow_matching 1.0.10 or torchcfm 1.0.7
give the same values (docs/peers.md maps every peer feature to its flowzoo counterpart).

Each test skips when its peer is not installed. Naming: flow_matching writes x_t = alpha_t x_1 + sigma_t x_0, so its
``alpha_t`` is flowzoo's ``beta`` (data) and its ``sigma_t`` flowzoo's ``alpha`` (source). flow_matching's ODE solver
calls the model with a scalar t and keyword arguments (x=, t=), so the fields below accept both t shapes.
Everything runs in float64 so that agreement is checked to ~1e-10, not to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.core.analysis import wasserstein1, wasserstein2
from flowzoo.core.couplings import ExactOTCoupling, SinkhornCoupling
from flowzoo.core.paths import (AffinePath, CondOTPath, ConstantGamma, CosineScheduler, LinearScheduler,
                                LinearVPScheduler, LogitNormalTime, PolynomialScheduler, ScheduleTransformedModel,
                                SchrodingerBridgePath, SigmaMinOTPath, StochasticInterpolant, VPScheduler,
                                sample_conditional_flow)
from flowzoo.core.sampling import ClassifierFreeGuidance, integrate, log_likelihood, standard_normal_log_prob

F64 = torch.float64


def _fm():
    return pytest.importorskip("flow_matching")


def _cfm():
    return pytest.importorskip("torchcfm.conditional_flow_matching")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


def _times(n, low=0.02, high=0.98, seed=1):
    return low + (high - low) * torch.rand(n, generator=_gen(seed), dtype=F64)


# ------------------------------------------------------------------------------------- schedulers and paths

def _scheduler_pairs():
    """(name, flowzoo scheduler, flow_matching scheduler) for every scheduler both libraries have."""
    from flow_matching.path.scheduler import (CondOTScheduler, CosineScheduler as FMCosine, LinearVPScheduler as FMLVP,
                                              PolynomialConvexScheduler, VPScheduler as FMVP)
    return [("linear", LinearScheduler(), CondOTScheduler()), ("cosine", CosineScheduler(), FMCosine()),
            ("vp", VPScheduler(), FMVP()), ("vp_narrow", VPScheduler(0.5, 5.0), FMVP(0.5, 5.0)),
            ("poly2", PolynomialScheduler(2), PolynomialConvexScheduler(2)),
            ("poly0.5", PolynomialScheduler(0.5), PolynomialConvexScheduler(0.5)),
            ("linear_vp", LinearVPScheduler(), FMLVP())]


SCHEDULER_NAMES = ["linear", "cosine", "vp", "vp_narrow", "poly2", "poly0.5", "linear_vp"]


def _pair(name):
    _fm()
    return next((ours, theirs) for n, ours, theirs in _scheduler_pairs() if n == name)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_coefficients_and_snr_inverse_match_flow_matching(name):
    ours, theirs = _pair(name)
    t = _times(64)
    a, b = ours(t), theirs(t)
    for mine, peer in ((a.alpha, b.sigma_t), (a.beta, b.alpha_t), (a.d_alpha, b.d_sigma_t), (a.d_beta, b.d_alpha_t)):
        torch.testing.assert_close(mine, peer, rtol=1e-10, atol=1e-12)
    snr = a.beta / a.alpha
    torch.testing.assert_close(ours.snr_inverse(snr), theirs.snr_inverse(snr), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("shape", [(32, 2), (8, 3, 4)])
def test_affine_path_sample_matches_flow_matching(name, shape):
    from flow_matching.path import AffineProbPath
    ours, theirs = _pair(name)
    x0, x1, t = _randn(*shape, seed=2), _randn(*shape, seed=3), _times(shape[0])
    mine, peer = AffinePath(ours).sample(x0, x1, t), AffineProbPath(theirs).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(mine.x_t, peer.x_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mine.dx_t, peer.dx_t, rtol=1e-10, atol=1e-12)


def test_cond_ot_path_matches_flow_matching():
    from flow_matching.path import CondOTProbPath
    _fm()
    x0, x1, t = _randn(16, 5, seed=2), _randn(16, 5, seed=3), _times(16)
    mine, peer = CondOTPath().sample(x0, x1, t), CondOTProbPath().sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(mine.x_t, peer.x_t)
    torch.testing.assert_close(mine.dx_t, peer.dx_t)


# flowzoo method -> flow_matching method; x1 is the "target", x0 the "epsilon" of flow_matching.
CONVERSIONS = [("velocity_to_x1", "velocity_to_target"), ("velocity_to_x0", "velocity_to_epsilon"),
               ("x1_to_velocity", "target_to_velocity"), ("x0_to_velocity", "epsilon_to_velocity"),
               ("x0_to_x1", "epsilon_to_target"), ("x1_to_x0", "target_to_epsilon")]


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("ours_name, theirs_name", CONVERSIONS)
def test_parameterisation_conversions_match_flow_matching(name, ours_name, theirs_name):
    from flow_matching.path import AffineProbPath
    ours, theirs = _pair(name)
    pred, x_t, t = _randn(32, 3, seed=4), _randn(32, 3, seed=5), _times(32, 0.1, 0.9)
    mine = getattr(AffinePath(ours), ours_name)(pred, x_t, t)
    # flow_matching's conversions do not broadcast t themselves: give it t shaped (B, 1).
    peer = getattr(AffineProbPath(theirs), theirs_name)(pred, x_t, t[:, None])
    torch.testing.assert_close(mine, peer, rtol=1e-9, atol=1e-10)


def _analytic_linear_velocity(c):
    """The marginal velocity of the linear path from N(0, 1) to a point mass at c: (c − x)/(1 − t)."""
    def velocity(x, t):
        return (c - x) / (1 - t.reshape(-1, *([1] * (x.dim() - 1))))
    return velocity


@pytest.mark.parametrize("original, new", [("linear", "cosine"), ("linear", "linear_vp"), ("cosine", "linear"),
                                           ("poly2", "linear"), ("linear", "poly0.5"), ("vp", "cosine")])
def test_schedule_transformed_model_matches_flow_matching(original, new):
    from flow_matching.path.scheduler import ScheduleTransformedModel as FMTransform
    ours_old, theirs_old = _pair(original)
    ours_new, theirs_new = _pair(new)
    field = _analytic_linear_velocity(1.5)
    model = lambda x, t: field(x, t)  # noqa: E731  (flow_matching calls it with keywords x=, t=)
    x, r = _randn(32, 2, seed=6), _times(32, 0.1, 0.9)
    mine = ScheduleTransformedModel(model, ours_old, ours_new)(x, r)
    peer = FMTransform(model, theirs_old, theirs_new)(x=x, t=r[:, None])  # it does not broadcast t itself
    torch.testing.assert_close(mine, peer, rtol=1e-8, atol=1e-9)


# ------------------------------------------------------------------------------------- torchcfm matchers

SIGMAS = [0.0, 0.1, 0.5]


def _batch(shape=(32, 2)):
    return _randn(*shape, seed=7), _randn(*shape, seed=8) + 3.0, _times(shape[0], 0.0, 1.0)


def _matcher_sample(matcher, x0, x1, t):
    torch.manual_seed(11)
    return matcher.sample_location_and_conditional_flow(x0, x1, t=t, return_noise=True)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape", [(32, 2), (4, 3, 5)])
def test_conditional_flow_matcher_matches_sample_conditional_flow(sigma, shape):
    cfm = _cfm()
    x0, x1, t = _batch(shape)
    _, xt, ut, eps = _matcher_sample(cfm.ConditionalFlowMatcher(sigma), x0, x1, t)
    path = CondOTPath() if sigma == 0 else StochasticInterpolant(LinearScheduler(), ConstantGamma(sigma))
    mine = sample_conditional_flow(x0, x1, path=path, t=t, z=eps if sigma > 0 else None)
    torch.testing.assert_close(mine.x_t, xt)
    torch.testing.assert_close(mine.dx_t, ut)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_variance_preserving_matcher_matches_cosine_path(sigma):
    cfm = _cfm()
    x0, x1, t = _batch()
    _, xt, ut, eps = _matcher_sample(cfm.VariancePreservingConditionalFlowMatcher(sigma), x0, x1, t)
    path = (AffinePath(CosineScheduler()) if sigma == 0
            else StochasticInterpolant(CosineScheduler(), ConstantGamma(sigma)))
    mine = sample_conditional_flow(x0, x1, path=path, t=t, z=eps if sigma > 0 else None)
    torch.testing.assert_close(mine.x_t, xt)
    torch.testing.assert_close(mine.dx_t, ut)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_target_matcher_matches_sigma_min_path_with_its_noise_as_source(sigma):
    cfm = _cfm()
    x0, x1, t = _batch()
    _, xt, ut, eps = _matcher_sample(cfm.TargetConditionalFlowMatcher(sigma), x0, x1, t)
    # torchcfm ignores x0 and uses its own noise (correct only for an N(0, I) source): that noise is our x0.
    mine = SigmaMinOTPath(sigma).sample(eps, x1, t)
    torch.testing.assert_close(mine.x_t, xt)
    torch.testing.assert_close(mine.dx_t, ut, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 2.0])
def test_schrodinger_bridge_path_target_score_and_lambda_match_torchcfm(sigma):
    cfm = _cfm()
    x0, x1, t = _batch()
    t = _times(32, 0.01, 0.99)
    matcher = cfm.SchrodingerBridgeConditionalFlowMatcher(sigma)
    eps = _randn(32, 2, seed=12)
    # The path part of the matcher, on pairs given (its OT resampling is compared in the coupling tests).
    xt = matcher.sample_xt(x0, x1, t, eps)
    ut = matcher.compute_conditional_flow(x0, x1, t, xt)
    path = SchrodingerBridgePath(sigma)
    mine = path.sample(x0, x1, t, z=eps)
    torch.testing.assert_close(mine.x_t, xt)
    torch.testing.assert_close(mine.dx_t, ut, rtol=1e-6, atol=1e-6)  # torchcfm adds 1e-8 to 2t(1 - t)
    lam = matcher.compute_lambda(t)
    torch.testing.assert_close(path.score_weight(t), lam, rtol=1e-6, atol=1e-9)  # and 1e-8 to sigma^2
    # SF2M's score loss ||lambda s + eps||^2 has minimiser s = -eps / lambda = (sigma^2 / 2) * conditional score.
    torch.testing.assert_close(sigma**2 / 2 * path.score_target(mine), -eps / lam[:, None], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------- couplings and metrics

def _permutation_plan(pairing, n0, n1):
    plan = np.zeros((n0, n1))
    plan[pairing.index0.numpy(), pairing.index1.numpy()] = 1.0 / n0
    return plan


@pytest.mark.parametrize("n, dim", [(16, 2), (64, 2), (32, 10)])
def test_exact_ot_plan_matches_torchcfm(n, dim):
    ot = pytest.importorskip("torchcfm.optimal_transport")
    x0, x1 = _randn(n, dim, seed=13), _randn(n, dim, seed=14) + 1.0
    peer = ot.OTPlanSampler(method="exact").get_map(x0, x1)
    np.testing.assert_allclose(_permutation_plan(ExactOTCoupling()(x0, x1), n, n), peer, atol=1e-12)


@pytest.mark.parametrize("reg", [0.5, 2.0])
def test_sinkhorn_plan_matches_torchcfm(reg):
    ot = pytest.importorskip("torchcfm.optimal_transport")
    x0, x1 = _randn(48, 2, seed=15), _randn(48, 2, seed=16) + 2.0
    peer = ot.OTPlanSampler(method="sinkhorn", reg=reg).get_map(x0, x1)
    mine = SinkhornCoupling(reg=reg, relative=False, tol=1e-10, max_iter=10_000).plan(x0, x1).numpy()
    np.testing.assert_allclose(mine, peer, atol=1e-8)


def test_labelled_ot_pairs_are_the_pairs_torchcfm_draws_from_its_plan():
    ot = pytest.importorskip("torchcfm.optimal_transport")
    x0, x1 = _randn(32, 2, seed=17), _randn(32, 2, seed=18) + 1.0
    y0, y1 = torch.arange(32), torch.arange(100, 132)
    np.random.seed(0)
    p0, p1, q0, q1 = ot.OTPlanSampler(method="exact").sample_plan_with_labels(x0, x1, y0, y1)
    mine = sample_conditional_flow(x0, x1, coupling=ExactOTCoupling(), t=0.5, cond0=y0, cond1=y1)
    ours = set(zip(mine.cond0.tolist(), mine.cond1.tolist()))
    assert set(zip(q0.tolist(), q1.tolist())) <= ours  # torchcfm resamples the same plan with replacement
    assert len(ours) == 32 and sorted(mine.cond0.tolist()) == y0.tolist()  # flowzoo keeps every source once
    torch.testing.assert_close(mine.x0, x0[mine.cond0])
    torch.testing.assert_close(mine.x1, x1[mine.cond1 - 100])


@pytest.mark.parametrize("power", [1, 2])
def test_wasserstein_matches_torchcfm(power):
    ot = pytest.importorskip("torchcfm.optimal_transport")
    x, y = _randn(80, 3, seed=19), _randn(60, 3, seed=20) * 1.5 + 0.5
    ours = (wasserstein1 if power == 1 else wasserstein2)(x, y)
    assert ours == pytest.approx(ot.wasserstein(x, y, power=power), rel=1e-7)


# ------------------------------------------------------------------------------------- ODE solver and likelihood

ROTATION = torch.tensor([[-0.3, 1.2], [-1.2, -0.3]], dtype=F64)  # dx/dt = A x: x(t) = exp(tA) x(0)


def _linear_field(x, t):
    return x @ ROTATION.T


def _time_field(x, t):
    t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
    return torch.cos(3.0 * t) * x + t**2


# flowzoo method -> torchdiffeq method used by flow_matching's ODESolver. torchdiffeq's "rk4" is the 3/8-rule
# variant; on an autonomous linear field every 4-stage fourth-order method gives the same Taylor polynomial.
METHODS = [("euler", "euler"), ("midpoint", "midpoint"), ("heun", "heun2"), ("rk4", "rk4")]


@pytest.mark.parametrize("ours, theirs", METHODS)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_fixed_step_solvers_match_flow_matching_on_a_linear_field(ours, theirs, steps):
    from flow_matching.solver import ODESolver
    _fm()
    x = _randn(16, 2, seed=21)
    mine = integrate(_linear_field, x, method=ours, steps=steps).x
    grid = torch.linspace(0, 1, steps + 1, dtype=F64)
    peer = ODESolver(_linear_field).sample(x_init=x, step_size=None, method=theirs, time_grid=grid)
    torch.testing.assert_close(mine, peer, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ours, theirs", METHODS[:3])
def test_fixed_step_solvers_match_flow_matching_on_a_time_dependent_field_with_step_size(ours, theirs):
    from flow_matching.solver import ODESolver
    _fm()
    x = _randn(8, 2, seed=22)
    mine = integrate(_time_field, x, method=ours, steps=20).x
    grid = torch.tensor([0.0, 1.0], dtype=F64)  # a float32 grid would put its steps at float32 times
    peer = ODESolver(_time_field).sample(x_init=x, step_size=0.05, method=theirs, time_grid=grid)
    torch.testing.assert_close(mine, peer, rtol=1e-10, atol=1e-10)


def test_rk4_and_torchdiffeq_rk4_agree_to_fourth_order_on_a_time_dependent_field():
    from flow_matching.solver import ODESolver
    _fm()
    x = _randn(8, 2, seed=22)
    reference = integrate(_time_field, x, method="dopri5", atol=1e-12, rtol=1e-12).x
    mine = integrate(_time_field, x, method="rk4", steps=40).x
    peer = ODESolver(_time_field).sample(x_init=x, step_size=1 / 40, method="rk4",
                                         time_grid=torch.tensor([0.0, 1.0], dtype=F64))
    assert (mine - reference).abs().max() < 1e-6 and (peer - reference).abs().max() < 1e-6


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_adaptive_solver_and_trajectory_match_flow_matching(method):
    from flow_matching.solver import ODESolver
    _fm()
    x, grid = _randn(16, 2, seed=23), torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=F64)
    mine = integrate(_time_field, x, method=method, time_grid=grid, atol=1e-9, rtol=1e-9, return_trajectory=True)
    peer = ODESolver(_time_field).sample(x_init=x, step_size=None, method=method, time_grid=grid, atol=1e-9,
                                         rtol=1e-9, return_intermediates=True)
    torch.testing.assert_close(mine.trajectory, peer, rtol=1e-10, atol=1e-10)


def test_backward_grid_and_model_extras_match_flow_matching():
    from flow_matching.solver import ODESolver
    _fm()

    def shifted(x, t, shift):
        return _linear_field(x, t) + shift

    x, shift = _randn(8, 2, seed=24), _randn(8, 2, seed=25)
    grid = torch.linspace(1, 0, 11, dtype=F64)
    mine = integrate(shifted, x, method="midpoint", time_grid=grid, cond={"shift": shift}).x
    peer = ODESolver(shifted).sample(x_init=x, step_size=None, method="midpoint", time_grid=grid, shift=shift)
    torch.testing.assert_close(mine, peer, rtol=1e-12, atol=1e-12)


def _analytic_log_likelihood(x1, matrix):
    """log p1(x1) for x1 = exp(A) x0, x0 ~ N(0, I): log N(exp(-A) x1) - tr(A)."""
    x0 = x1 @ torch.linalg.matrix_exp(-matrix).T
    return standard_normal_log_prob(x0) - torch.trace(matrix)


@pytest.mark.parametrize("method, steps", [("dopri5", None), ("rk4", 40)])
def test_exact_log_likelihood_matches_flow_matching_and_the_analytic_value(method, steps):
    from flow_matching.solver import ODESolver
    _fm()
    x1 = _randn(16, 2, seed=26) * 2.0
    mine, _ = log_likelihood(_linear_field, x1, method=method, steps=steps, atol=1e-10, rtol=1e-10)
    _, peer = ODESolver(_linear_field).compute_likelihood(
        x_1=x1, log_p0=standard_normal_log_prob, step_size=None if steps is None else 1 / steps, method=method,
        atol=1e-10, rtol=1e-10, time_grid=torch.tensor([1.0, 0.0], dtype=F64), exact_divergence=True)
    torch.testing.assert_close(mine, peer, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mine, _analytic_log_likelihood(x1, ROTATION), rtol=1e-6, atol=1e-6)


def test_hutchinson_log_likelihood_matches_flow_matching_where_it_is_exact():
    from flow_matching.solver import ODESolver
    _fm()
    # float32: flow_matching draws its Hutchinson probes in the default dtype and fails on float64 data.
    diagonal = torch.diag(torch.tensor([0.4, -0.7, 0.2]))  # Rademacher probes: z^T A z = tr(A) exactly
    field = lambda x, t: x @ diagonal  # noqa: E731
    x1 = _randn(16, 3, seed=27).float()
    mine, _ = log_likelihood(field, x1, method="dopri5", estimator="hutchinson", generator=_gen(1))
    _, peer = ODESolver(field).compute_likelihood(x_1=x1, log_p0=standard_normal_log_prob, step_size=None,
                                                  method="dopri5", time_grid=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(mine, peer, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine, _analytic_log_likelihood(x1.double(), diagonal.double()).float(),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- features of the examples

def test_skewed_time_sampling_of_flow_matching_examples_is_logit_normal_time():
    # The image example draws EDM's log-normal sigma, log sigma ~ N(P_mean, P_std^2), and maps t = 1 / (1 + sigma);
    # so logit(t) = -log sigma ~ N(-P_mean, P_std^2), which is LogitNormalTime(mean=-P_mean, std=P_std).
    # With log sigma = P_mean + P_std * (-eps) (as valid a draw as +eps), both use the same normal numbers.
    p_mean, p_std = -1.2, 1.2
    eps = torch.randn(1000, generator=_gen(3))
    by_hand = 1.0 / (1.0 + torch.exp(p_mean - p_std * eps))
    ours = LogitNormalTime(mean=-p_mean, std=p_std).sample(1000, generator=_gen(3))
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-6)


def test_classifier_free_guidance_scale_of_flow_matching_examples_is_one_plus_ours():
    # flow_matching's image example guides with (1 + w) v_cond - w v_uncond; flowzoo with v_u + s (v_c - v_u).
    model = lambda x, t, y: x * (y[:, None].to(x.dtype) + 1.0)  # noqa: E731  (null label 0)
    x, y, w = _randn(4, 2, seed=28), torch.tensor([1, 2, 3, 4]), 0.7
    guided = ClassifierFreeGuidance(model, scale=1.0 + w, null_cond={"y": 0})(x, torch.full((4,), 0.3, dtype=F64), y=y)
    by_hand = (1 + w) * model(x, None, y) - w * model(x, None, torch.zeros_like(y))
    torch.testing.assert_close(guided, by_hand)


def test_peer_and_flowzoo_scheduler_lists_cover_each_other():
    """Every scheduler class flow_matching exports has a flowzoo counterpart in this file's table."""
    _fm()
    from flow_matching.path import scheduler as fm_scheduler
    exported = {name for name in fm_scheduler.__all__ if name.endswith("Scheduler")}
    covered = {type(theirs).__name__ for _, _, theirs in _scheduler_pairs()}
    abstract = {"Scheduler", "ConvexScheduler"}
    assert exported - abstract == covered
