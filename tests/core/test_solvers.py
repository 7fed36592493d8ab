"""Tests of flowzoo.core.sampling.ode (ODE integrators, grids) and flowzoo.core.sampling.sde (Euler–Maruyama).

Analytic cases: dx/dt = 3t² (x(1) = x(0) + 1), dx/dt = -x (x(1) = x(0)/e), dx/dt = cos(t)·x
(x(t) = x(0)·exp(sin t)) for orders of accuracy, and the Gaussian → Gaussian linear interpolant, whose drift and
score are known in closed form, for the SDE.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import (ConfigError, DTypeError, EmptyInputError, FlowzooError, NonFiniteError,
                                 ShapeError)
from flowzoo.core.sampling import (ADAPTIVE_METHODS, FIXED_STEP_METHODS, METHODS, SampleResult, euler_step,
                                  heun_step, integrate, integrate_sde, midpoint_step, rk4_step, shifted_grid,
                                  uniform_grid)

EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


class Counting:
    """A velocity model that counts its calls and records the batch sizes and times it saw."""

    def __init__(self, fn):
        self.fn, self.calls, self.batches, self.times = fn, 0, [], []

    def __call__(self, x, t, **cond):
        assert t.dim() == 1 and t.shape[0] == x.shape[0] and t.is_floating_point()
        self.calls += 1
        self.batches.append(x.shape[0])
        self.times.append(float(t[0]))
        return self.fn(x, t, **cond)


def cubic(x, t):
    return 3.0 * t[:, None] ** 2 * torch.ones_like(x)


def decay(x, t):
    return -x


def cos_growth(x, t):
    return torch.cos(t)[:, None] * x


# ---------------------------------------------------------------------------------------------- ODE

@pytest.mark.parametrize("method", list(FIXED_STEP_METHODS))
def test_fixed_step_methods_reach_known_endpoints(method):
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tol = {"euler": 1e-2, "midpoint": 1e-4, "heun": 1e-4, "rk4": 1e-9}[method]
    assert torch.allclose(integrate(cubic, x0, method=method, steps=200).x, x0 + 1.0, atol=tol)
    assert torch.allclose(integrate(decay, x0, method=method, steps=200).x, x0 * math.exp(-1.0), atol=tol)


@pytest.mark.parametrize("method", list(FIXED_STEP_METHODS))
def test_observed_order_of_accuracy(method):
    x0 = torch.full((1, 1), 0.7, dtype=torch.float64)
    exact = 0.7 * math.exp(math.sin(1.0))
    errors = [abs(integrate(cos_growth, x0, method=method, steps=n).x.item() - exact) for n in (32, 64, 128)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    for observed in orders:
        assert abs(observed - ORDER[method]) < 0.25, (method, errors, orders)


def test_rk4_is_exact_on_cubic_polynomials():
    x0 = torch.zeros(2, 2)
    assert torch.allclose(integrate(cubic, x0, method="rk4", steps=1).x, torch.ones(2, 2), atol=1e-6)


@pytest.mark.parametrize("method", ["rk4", "heun", "dopri5"])
def test_backward_integration_inverts_forward(method):
    weight = torch.tensor([[0.0, -1.5], [1.0, 0.2]], dtype=torch.float64)

    def field(x, t):
        return torch.tanh(x @ weight.T) * (1.0 + t[:, None])

    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps = None if method == "dopri5" else 200
    forward = integrate(field, x0, method=method, steps=steps)
    backward = integrate(field, forward.x, method=method, steps=steps, t0=1.0, t1=0.0)
    assert (forward.x - x0).abs().max() > 0.1  # the flow actually moved the points
    assert torch.allclose(backward.x, x0, atol=1e-4)
    reversed_grid = integrate(field, forward.x, method=method, time_grid=torch.linspace(1, 0, 201,
                                                                                        dtype=torch.float64)) \
        if method != "dopri5" else backward
    assert torch.allclose(reversed_grid.x, backward.x, atol=1e-10)


def test_dopri5_hits_endpoint_and_counts_calls():
    model = Counting(decay)
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = integrate(model, x0, method="dopri5", atol=1e-8, rtol=1e-8)
    assert torch.allclose(result.x, x0 * math.exp(-1.0), atol=1e-5)
    assert result.nfe > 0 and result.nfe == model.calls
    assert result.times.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("method", list(ADAPTIVE_METHODS))
def test_every_adaptive_method_solves_linear_ode(method):
    x0 = torch.ones(3, 1, dtype=torch.float64)
    result = integrate(decay, x0, method=method, atol=1e-7, rtol=1e-7)
    assert torch.allclose(result.x, x0 * math.exp(-1.0), atol=1e-4)
    assert result.nfe > 0


@pytest.mark.parametrize("method", list(FIXED_STEP_METHODS))
def test_nfe_is_steps_times_evaluations_per_step(method):
    model = Counting(decay)
    result = integrate(model, torch.ones(4, 2), method=method, steps=7)
    assert result.nfe == model.calls == 7 * EVALS_PER_STEP[method]
    assert set(model.batches) == {4}


def test_step_functions_share_one_signature():
    x, t, t_next = torch.ones(3, 2), torch.tensor(0.0), torch.tensor(0.5)
    for name, step in [("euler", euler_step), ("midpoint", midpoint_step), ("heun", heun_step), ("rk4", rk4_step)]:
        x_next, nfe = step(decay, x, t, t_next, {})
        assert x_next.shape == x.shape and nfe == EVALS_PER_STEP[name]
        assert FIXED_STEP_METHODS[name] is step
    assert set(METHODS) == set(FIXED_STEP_METHODS) | set(ADAPTIVE_METHODS)


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_conditioning_reaches_the_model(method):
    def shifted(x, t, y, scale=1.0):
        return scale * y[:, None].to(x.dtype).expand_as(x)

    y = torch.tensor([1, -2, 3])
    result = integrate(shifted, torch.zeros(3, 2), method=method, steps=None if method == "dopri5" else 4,
                       cond={"y": y, "scale": 0.5})
    assert torch.allclose(result.x, 0.5 * y[:, None].float().expand(3, 2), atol=1e-5)


def test_time_reaches_the_model_as_batch_tensor_on_the_grid():
    model = Counting(decay)
    integrate(model, torch.ones(2, 1), method="euler", time_grid=[0.0, 0.1, 0.5, 1.0])
    assert model.times == pytest.approx([0.0, 0.1, 0.5])


def test_trajectory_times_and_callback():
    seen = []
    x = torch.randn(6, 2, 3)
    result = integrate(decay, x, method="heun", steps=5, return_trajectory=True, callback=seen.append)
    assert isinstance(result, SampleResult)
    assert result.trajectory.shape == (6, 6, 2, 3)
    assert torch.equal(result.trajectory[0], x) and torch.equal(result.trajectory[-1], result.x)
    assert torch.allclose(result.times, uniform_grid(5))
    assert [s["i"] for s in seen] == list(range(5)) and torch.equal(seen[-1]["x"], result.x)
    assert integrate(decay, x, method="heun", steps=5).trajectory is None
    adaptive = integrate(decay, x, method="dopri5", steps=4, return_trajectory=True)
    assert adaptive.trajectory.shape == (5, 6, 2, 3)


def test_progress_bar_runs(capsys):
    result = integrate(decay, torch.ones(2, 2), method="euler", steps=3, progress=True)
    assert result.nfe == 3
    assert integrate(decay, torch.ones(2, 2), method="dopri5", progress=True).nfe > 0


def test_runs_without_grad_unless_enabled():
    a = torch.tensor(2.0, requires_grad=True)

    def field(x, t):
        return a * torch.ones_like(x)

    x0 = torch.zeros(3, 2)
    assert not integrate(field, x0, method="rk4", steps=3).x.requires_grad
    out = integrate(field, x0, method="rk4", steps=3, enable_grad=True).x
    out.sum().backward()
    assert a.grad.item() == pytest.approx(6.0)


def test_uniform_and_shifted_grids():
    assert torch.equal(uniform_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert torch.equal(uniform_grid(2, 1.0, 0.0), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(shifted_grid(10, 1.0), uniform_grid(10), atol=1e-7)
    for shift in (0.3, 3.0, 10.0):
        grid = shifted_grid(16, shift)
        assert grid.shape == (17,) and grid[0] == 0.0 and grid[-1] == 1.0
        assert bool((grid[1:] > grid[:-1]).all())
    # shift > 1: smaller steps near the source (t = 0), larger near the data.
    grid, uniform = shifted_grid(16, 3.0), uniform_grid(16)
    assert (grid[1] - grid[0]) < (uniform[1] - uniform[0]) < (grid[-1] - grid[-2])
    # The SD3 formula in sigma = 1 - t.
    sigma = 1.0 - uniform
    assert torch.allclose(1.0 - grid, 3.0 * sigma / (1.0 + 2.0 * sigma), atol=1e-6)
    assert shifted_grid(4, 2.0, dtype=torch.float64).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- SDE

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.6], [0.6, 0.8]], dtype=torch.float64)


def _gaussian_path_terms(t: torch.Tensor):
    """For x0 ~ N(0, I), x1 ~ N(MEAN, COV) independent, x_t = (1-t) x0 + t x1: C_t and A_t of b = m + A_t (x - t m)."""
    s = float(t[0])
    eye = torch.eye(2, dtype=torch.float64)
    cov_t = (1 - s) ** 2 * eye + s**2 * COV
    gain = torch.linalg.solve(cov_t, s * COV - (1 - s) * eye).T  # (tΣ - (1-t)I) C_t⁻¹, symmetric
    return s, cov_t, gain


def gaussian_drift(x, t):
    s, _, gain = _gaussian_path_terms(t)
    return MEAN + (x - s * MEAN) @ gain.T


def gaussian_score(x, t):
    s, cov_t, _ = _gaussian_path_terms(t)
    return -torch.linalg.solve(cov_t, (x - s * MEAN).T).T


def test_sde_with_zero_eps_is_euler():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ode = integrate(gaussian_drift, x0, method="euler", steps=20)
    sde = integrate_sde(gaussian_drift, x0, eps=0.0, steps=20)
    assert torch.equal(sde.x, ode.x) and sde.nfe == ode.nfe == 20
    zero_schedule = integrate_sde(gaussian_drift, x0, score_model=gaussian_score, eps=lambda t: 0.0 * t, steps=20)
    assert torch.equal(zero_schedule.x, ode.x) and zero_schedule.nfe == 20


@pytest.mark.parametrize("eps", [1.0, lambda t: 0.5 + t * (1 - t)], ids=["constant", "schedule"])
def test_sde_reaches_the_data_gaussian(eps):
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(16000, 2, generator=gen, dtype=torch.float64)
    result = integrate_sde(gaussian_drift, x0, score_model=gaussian_score, eps=eps, steps=200, generator=gen,
                           final_noise=True)
    assert result.nfe == 400
    assert torch.allclose(result.x.mean(0), MEAN, atol=0.05)
    assert torch.allclose(torch.cov(result.x.T), COV, atol=0.06)


def test_backward_sde_returns_data_to_the_source():
    gen = torch.Generator().manual_seed(5)
    x1 = MEAN + torch.randn(16000, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(COV).T
    result = integrate_sde(gaussian_drift, x1, score_model=gaussian_score, eps=1.0, t0=1.0, t1=0.0, steps=200,
                           generator=gen, final_noise=True)
    assert torch.allclose(result.x.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.05)
    assert torch.allclose(torch.cov(result.x.T), torch.eye(2, dtype=torch.float64), atol=0.06)


def test_sde_is_reproducible_and_final_step_is_noise_free():
    x0 = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def run(seed, **kw):
        return integrate_sde(gaussian_drift, x0, score_model=gaussian_score, eps=1.0, steps=10,
                             generator=torch.Generator().manual_seed(seed), return_trajectory=True, **kw)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.trajectory.shape == (11, 32, 2) and torch.equal(a.trajectory[-1], a.x)
    # Without final noise, the last step is a deterministic drift step from the previous state.
    prev, t = a.trajectory[-2], torch.full((32,), 0.9, dtype=torch.float64)
    expected_last = prev + 0.1 * (gaussian_drift(prev, t) + gaussian_score(prev, t))
    assert torch.allclose(a.x, expected_last, atol=1e-12)
    assert not torch.allclose(run(0, final_noise=True).x, expected_last, atol=1e-3)


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"method": "rk5", "steps": 4}, ConfigError),
        ({"method": "euler"}, ConfigError),
        ({"method": "euler", "steps": 4, "time_grid": [0.0, 1.0]}, ConfigError),
        ({"method": "euler", "steps": 0}, ConfigError),
        ({"method": "euler", "steps": 2.5}, ConfigError),
        ({"method": "euler", "time_grid": [0.0, 0.5, 0.4, 1.0]}, ConfigError),
        ({"method": "euler", "time_grid": [0.0, 0.5, 0.5, 1.0]}, ConfigError),
        ({"method": "euler", "time_grid": [0.0]}, ShapeError),
        ({"method": "euler", "time_grid": [[0.0, 1.0]]}, ShapeError),
        ({"method": "euler", "time_grid": [0.0, float("nan")]}, NonFiniteError),
        ({"method": "euler", "steps": 2, "t0": 1.0, "t1": 1.0}, ConfigError),
        ({"method": "euler", "steps": 2, "cond": [1, 2]}, ConfigError),
    ],
)
def test_bad_configuration_raises(kwargs, error):
    with pytest.raises(error) as info:
        integrate(decay, torch.ones(2, 2), **kwargs)
    assert isinstance(info.value, FlowzooError)


def test_unknown_method_lists_the_methods():
    with pytest.raises(ConfigError, match="dopri5") as info:
        integrate(decay, torch.ones(2, 2), method="RK4", steps=3)
    assert all(name in str(info.value) for name in METHODS)


@pytest.mark.parametrize(
    "x, error",
    [
        (torch.tensor([[float("nan"), 0.0]]), NonFiniteError),
        (torch.empty(0, 2), EmptyInputError),
        (torch.ones(2, 2, dtype=torch.long), DTypeError),
        ([[0.0, 1.0]], DTypeError),
    ],
)
def test_bad_state_raises(x, error):
    with pytest.raises(error):
        integrate(decay, x, method="euler", steps=2)
    with pytest.raises(error):
        integrate_sde(decay, x, eps=0.0, steps=2)


def test_bad_model_output_raises():
    with pytest.raises(ShapeError):
        integrate(lambda x, t: x[:, :1], torch.ones(2, 2), method="euler", steps=2)
    with pytest.raises(ShapeError):
        integrate(lambda x, t: x[:, :1], torch.ones(2, 2), method="dopri5")
    with pytest.raises(NonFiniteError):
        integrate(lambda x, t: x * float("nan"), torch.ones(2, 2), method="euler", steps=2)


def test_bad_sde_configuration_raises():
    x = torch.ones(2, 2)
    with pytest.raises(ConfigError):
        integrate_sde(decay, x, eps=1.0, steps=2)
    with pytest.raises(ConfigError):
        integrate_sde(decay, x, score_model=decay, eps=-0.1, steps=2)
    with pytest.raises(ConfigError):
        integrate_sde(decay, x, score_model=decay, eps=lambda t: -t - 1.0, steps=2)
    with pytest.raises(ConfigError):
        integrate_sde(decay, x, score_model=decay, eps=lambda t: torch.ones(3), steps=2)
    with pytest.raises(ConfigError):
        integrate_sde(decay, x, score_model=decay, eps=1.0)
    with pytest.raises(ConfigError):
        shifted_grid(4, 0.0)
    with pytest.raises(ConfigError):
        uniform_grid(-1)


def test_edm_grid_matches_karras_noise_levels():
    from flowzoo.core.sampling import edm_grid

    steps, smin, smax, rho = 18, 0.002, 80.0, 7.0
    grid = edm_grid(steps, dtype=torch.float64)
    sigma = [(smax ** (1 / rho) + i / (steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
             for i in range(steps)] + [0.0]
    torch.testing.assert_close(grid, torch.tensor([1 / (1 + s) for s in sigma], dtype=torch.float64))
    assert bool((grid[1:] > grid[:-1]).all()) and grid[-1].item() == 1.0
    with pytest.raises(ConfigError, match="sigma_min < sigma_max"):
        edm_grid(4, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError):
        edm_grid(0)
