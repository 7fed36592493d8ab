"""Tests of flowzoo.core.sampling.sde.integrate_sde: the ODE limit, a Gaussian interpolant whose marginals are
known in closed form (forward and backward), generator determinism, call counts and bad input."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.sampling import integrate, integrate_sde

F64 = torch.float64
# Target of the Gaussian test: x1 ~ N(MEAN, STD^2) per coordinate, source x0 ~ N(0, I).
MEAN = torch.tensor([2.0, -1.0], dtype=F64)
STD = torch.tensor([0.5, 1.5], dtype=F64)


def _marginal(t: torch.Tensor):
    """Mean, variance and their time derivatives of x_t = (1 - t) x0 + t x1 (independent Gaussians), per sample."""
    t = t[:, None]
    mean, var = t * MEAN, (1 - t) ** 2 + t ** 2 * STD ** 2
    return mean, var, MEAN.expand_as(mean), -2 * (1 - t) + 2 * t * STD ** 2


def drift(x, t):
    """The probability-flow velocity of a Gaussian marginal: b = m' + v' / (2 v) (x - m)."""
    mean, var, d_mean, d_var = _marginal(t)
    return d_mean + d_var / (2 * var) * (x - mean)


def score(x, t):
    mean, var, _, _ = _marginal(t)
    return -(x - mean) / var


def _source(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _never(x, t):
    raise AssertionError("the score must not be called where eps is 0")


# ---- the ODE limit ------------------------------------------------------------------------------------------------

def test_zero_diffusion_is_exactly_the_euler_ode():
    def field(x, t):
        return torch.sin(3 * x) + t[:, None, None]

    x = torch.randn(16, 2, 3, dtype=F64)
    ode = integrate(field, x, method="euler", steps=25)
    for eps in (0.0, 0, lambda t: 0.0 * t):
        sde = integrate_sde(field, x, score_model=_never, eps=eps, steps=25)
        assert torch.equal(sde.x, ode.x) and sde.nfe == ode.nfe == 25
    assert torch.equal(integrate_sde(field, x, eps=0.0, steps=25).x, ode.x)


def test_zero_diffusion_converges_to_the_exact_ode_solution():
    x = torch.randn(8, 3, dtype=F64)
    result = integrate_sde(lambda x, t: -x, x, eps=0.0, steps=2000)
    torch.testing.assert_close(result.x, x * torch.exp(torch.tensor(-1.0, dtype=F64)), rtol=1e-3, atol=1e-4)


def test_per_sample_zero_diffusion_leaves_those_rows_on_the_ode_path():
    x = _source(8)
    on = torch.tensor([0.0, 1.0] * 4, dtype=F64)  # eps(t) per sample: rows 0, 2, 4, 6 have no noise
    sde = integrate_sde(drift, x, score_model=score, eps=lambda t: on, steps=10, t0=0.01, t1=0.99,
                        generator=torch.Generator().manual_seed(1))
    ode = integrate(drift, x, method="euler", steps=10, t0=0.01, t1=0.99)
    torch.testing.assert_close(sde.x[0::2], ode.x[0::2])
    assert (sde.x[1::2] - ode.x[1::2]).abs().min() > 0


# ---- a linear SDE with known Gaussian marginals -------------------------------------------------------------------

@pytest.mark.parametrize("eps", [1.0, lambda t: 0.5 + t])
def test_forward_sde_reaches_the_gaussian_target(eps):
    # Stochastic interpolants, Thm. 2.21: any eps >= 0 keeps the interpolant's marginals, here N(t m, v(t)).
    n, steps = 20000, 100
    result = integrate_sde(drift, _source(n), score_model=score, eps=eps, steps=steps,
                           generator=torch.Generator().manual_seed(2), final_noise=True, return_trajectory=True)
    assert result.nfe == 2 * steps and result.trajectory.shape == (steps + 1, n, 2)
    for index, t in ((steps // 2, 0.5), (steps, 1.0)):
        states = result.trajectory[index]
        mean, var, _, _ = _marginal(torch.tensor([t], dtype=F64))
        # Monte-Carlo error of the mean ~ sd / sqrt(n) < 0.01, of the variance ~ sqrt(2 / n) = 1 % relative;
        # Euler-Maruyama's O(h) bias adds a few per cent at h = 0.01.
        torch.testing.assert_close(states.mean(0), mean[0], atol=0.04, rtol=0)
        torch.testing.assert_close(states.var(0), var[0], rtol=0.07, atol=0)


def test_backward_sde_returns_the_target_to_the_source():
    n, steps = 20000, 100
    x1 = MEAN + STD * _source(n, seed=3)
    result = integrate_sde(drift, x1, score_model=score, eps=1.0, t0=1.0, t1=0.0, steps=steps,
                           generator=torch.Generator().manual_seed(4), final_noise=True)
    torch.testing.assert_close(result.x.mean(0), torch.zeros(2, dtype=F64), atol=0.04, rtol=0)
    torch.testing.assert_close(result.x.var(0), torch.ones(2, dtype=F64), rtol=0.07, atol=0)


def test_the_score_sign_matters():
    # With the score term of the wrong sign the forward chain is no longer marginal-preserving: this is what the
    # tests above would catch if integrate_sde mixed up the direction.
    def wrong_score(x, t):
        return -score(x, t)

    result = integrate_sde(drift, _source(20000), score_model=wrong_score, eps=1.0, steps=100,
                           generator=torch.Generator().manual_seed(2), final_noise=True)
    assert (result.x.var(0) / STD ** 2 - 1).abs().max() > 0.2


def test_no_final_noise_leaves_the_last_step_deterministic():
    x, seen = _source(4), []
    kwargs = dict(eps=1.0, steps=5, callback=lambda info: seen.append((info["i"], float(info["t_next"]))))
    a = integrate_sde(drift, x, score_model=score, generator=torch.Generator().manual_seed(5), **kwargs)
    b = integrate_sde(drift, x, score_model=score, generator=torch.Generator().manual_seed(5), final_noise=True,
                      **kwargs)
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4] * 2 and seen[4][1] == pytest.approx(1.0)
    # The same chain stopped one step early, where its last step (t = 0.6 -> 0.8) keeps its noise.
    before_last = integrate_sde(drift, x, score_model=score, generator=torch.Generator().manual_seed(5), eps=1.0,
                                time_grid=torch.linspace(0, 1, 6)[:-1], final_noise=True).x
    # Without final noise the last step is x + h (b + eps s) from the same state; with it, a kick is added.
    t_last = torch.full((4,), 0.8, dtype=F64)
    noise_free = before_last + 0.2 * (drift(before_last, t_last) + score(before_last, t_last))
    torch.testing.assert_close(a.x, noise_free)
    assert not torch.allclose(b.x, noise_free)


# ---- determinism --------------------------------------------------------------------------------------------------

def test_the_generator_fixes_the_brownian_path():
    x = _source(64)

    def run(generator=None):
        return integrate_sde(drift, x, score_model=score, eps=0.5, steps=20, generator=generator).x

    assert torch.equal(run(torch.Generator().manual_seed(7)), run(torch.Generator().manual_seed(7)))
    assert not torch.allclose(run(torch.Generator().manual_seed(7)), run(torch.Generator().manual_seed(8)))
    torch.manual_seed(9)
    global_rng = run()
    torch.manual_seed(9)
    assert torch.equal(run(), global_rng)  # without a generator, torch's global RNG


# ---- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf"), True, "1.0", None])
def test_bad_constant_diffusion_is_refused(eps):
    with pytest.raises(ConfigError, match="eps"):
        integrate_sde(drift, _source(4), score_model=score, eps=eps, steps=3)


def test_bad_diffusion_schedules_are_refused():
    x = _source(4)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        integrate_sde(drift, x, score_model=score, eps=lambda t: t - 0.5, steps=3)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        integrate_sde(drift, x, score_model=score, eps=lambda t: torch.full_like(t, float("nan")), steps=3)
    with pytest.raises(ConfigError, match=r"\(B,\) tensor"):
        integrate_sde(drift, x, score_model=score, eps=lambda t: torch.ones(3), steps=3)


def test_a_score_model_is_required_whenever_there_is_noise():
    x = _source(4)
    with pytest.raises(ConfigError, match="score_model"):
        integrate_sde(drift, x, eps=0.5, steps=3)
    with pytest.raises(ConfigError, match="score_model"):
        integrate_sde(drift, x, eps=lambda t: 0.0, steps=3)


def test_bad_state_grid_and_models_are_refused():
    x = _source(4)
    with pytest.raises(DTypeError):
        integrate_sde(drift, x.tolist(), score_model=score, steps=3)
    with pytest.raises(DTypeError):
        integrate_sde(drift, torch.zeros(4, 2, dtype=torch.long), score_model=score, steps=3)
    with pytest.raises(EmptyInputError):
        integrate_sde(drift, torch.zeros(0, 2), score_model=score, steps=3)
    with pytest.raises(NonFiniteError):
        integrate_sde(drift, torch.full((4, 2), float("nan")), score_model=score, steps=3)
    with pytest.raises(ConfigError, match="steps or time_grid"):
        integrate_sde(drift, x, score_model=score)
    with pytest.raises(ConfigError, match="both"):
        integrate_sde(drift, x, score_model=score, steps=3, time_grid=[0.0, 1.0])
    with pytest.raises(ConfigError, match="monotone"):
        integrate_sde(drift, x, score_model=score, time_grid=[0.0, 0.5, 0.5, 1.0])
    with pytest.raises(ShapeError):
        integrate_sde(lambda x, t: x[:, :1], x, score_model=score, steps=3)
    with pytest.raises(ShapeError):
        integrate_sde(drift, x, score_model=lambda x, t: x[:, :1], eps=1.0, steps=3)
    with pytest.raises(NonFiniteError, match="finite end state"):
        integrate_sde(lambda x, t: torch.exp(x) * 1e300, x.abs() + 10, eps=0.0, steps=3)
