"""Tests of flowzoo.core.paths.timesamplers: ranges, seeded determinism and the shape of each distribution."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError
from flowzoo.core.paths import (
    TIME_SAMPLERS,
    LogitNormalTime,
    UniformTime,
    UShapedTime,
    get_time_sampler,
)

N = 20_000
SAMPLERS = [UniformTime(), UniformTime(0.1, 0.3), LogitNormalTime(), LogitNormalTime(1.0, 0.5),
            UShapedTime(), UShapedTime(0.0), UShapedTime(10.0)]


def _draw(sampler, n=N, seed=0):
    return sampler.sample(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_shape_range_dtype_and_determinism(sampler):
    t = _draw(sampler)
    assert t.shape == (N,) and t.dtype == torch.float32
    assert bool(((t >= 0) & (t <= 1)).all())
    assert torch.equal(t, _draw(sampler))
    assert not torch.equal(t, _draw(sampler, seed=1))
    torch.manual_seed(3)
    a = sampler.sample(5)
    torch.manual_seed(3)
    assert torch.equal(a, sampler.sample(5, device="cpu"))


def test_uniform_moments_and_bounds():
    t = _draw(UniformTime(0.2, 0.6)).double()
    assert t.min() >= 0.2 and t.max() <= 0.6
    assert t.mean().item() == pytest.approx(0.4, abs=0.005)
    assert t.var().item() == pytest.approx(0.4 ** 2 / 12, rel=0.05)


def test_logit_normal_concentrates_in_the_middle():
    t = _draw(LogitNormalTime()).double()
    middle = ((t > 0.25) & (t < 0.75)).double().mean().item()
    # P(|logit t| < log 3) for a standard normal = erf(log(3)/sqrt(2)) ~ 0.728, vs 0.5 for uniform.
    assert middle == pytest.approx(math.erf(math.log(3) / math.sqrt(2)), abs=0.01)
    assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    torch.testing.assert_close(torch.logit(t).mean(), torch.tensor(0.0, dtype=torch.float64), atol=0.03, rtol=0)


def test_logit_normal_mean_shifts_towards_data():
    assert _draw(LogitNormalTime(mean=1.0)).mean() > 0.6
    assert _draw(LogitNormalTime(mean=-1.0)).mean() < 0.4


def test_u_shaped_matches_its_density():
    a = 4.0
    t = _draw(UShapedTime(a), n=100_000).double()
    # CDF of p(t) = a cosh(a(t - 1/2)) / (2 sinh(a/2)) is (sinh(a(t - 1/2)) + sinh(a/2)) / (2 sinh(a/2)).
    for q in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9):
        cdf = (math.sinh(a * (q - 0.5)) + math.sinh(a / 2)) / (2 * math.sinh(a / 2))
        assert (t <= q).double().mean().item() == pytest.approx(cdf, abs=0.006)
    ends = ((t < 0.1) | (t > 0.9)).double().mean().item()
    assert ends > 0.33 and t.mean().item() == pytest.approx(0.5, abs=0.01)


def test_u_shaped_sharpens_with_a_and_is_uniform_at_zero():
    ends = [((t < 0.1) | (t > 0.9)).float().mean().item() for t in (_draw(UShapedTime(a)) for a in (0.0, 2.0, 8.0))]
    assert ends[0] == pytest.approx(0.2, abs=0.01)
    assert ends[0] < ends[1] < ends[2]


def test_get_time_sampler():
    assert set(TIME_SAMPLERS) == {"uniform", "logit_normal", "u_shaped"}
    assert isinstance(get_time_sampler("uniform"), UniformTime)
    sampler = get_time_sampler("Logit-Normal", mean=0.5, std=2.0)
    assert isinstance(sampler, LogitNormalTime) and (sampler.mean, sampler.std) == (0.5, 2.0)
    assert get_time_sampler("u_shaped", a=2.0).a == 2.0
    with pytest.raises(ConfigError, match="uniform"):
        get_time_sampler("gaussian")
    with pytest.raises(ConfigError, match="UShapedTime"):
        get_time_sampler("u_shaped", std=1.0)


@pytest.mark.parametrize("make", [
    lambda: UniformTime(0.5, 0.5), lambda: UniformTime(-0.1, 1.0), lambda: UniformTime(0.0, 1.5),
    lambda: LogitNormalTime(std=0.0), lambda: LogitNormalTime(mean=float("inf")), lambda: UShapedTime(-1.0),
    lambda: UShapedTime("4"),
])
def test_bad_parameters(make):
    with pytest.raises(ConfigError):
        make()


def test_bad_counts():
    with pytest.raises(EmptyInputError):
        UniformTime().sample(0)
    with pytest.raises(DTypeError):
        LogitNormalTime().sample(3.0)
    with pytest.raises(DTypeError):
        UShapedTime().sample(torch.tensor(3))
