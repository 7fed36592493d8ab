"""Convex schedulers and the mixture path: κ's boundary values and derivative, and the path's marginals."""

from __future__ import annotations

import math

import pytest
import torch


from flowzoo.core.discrete import (CosineConvexScheduler, LinearConvexScheduler, MixtureDiscretePath,
                                   PolynomialConvexScheduler, get_convex_scheduler, masked_source, uniform_source)
from flowzoo.core.errors import ConfigError

SCHEDULERS = [LinearConvexScheduler(), PolynomialConvexScheduler(0.5), PolynomialConvexScheduler(3.0),
              CosineConvexScheduler()]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=repr)
def test_scheduler_ends_derivative_and_inverse(scheduler):
    ends = scheduler(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends.kappa.tolist() == pytest.approx([0.0, 1.0], abs=1e-12)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    finite_difference = (scheduler.kappa(t + h) - scheduler.kappa(t - h)) / (2 * h)
    torch.testing.assert_close(scheduler.d_kappa(t), finite_difference, rtol=1e-6, atol=1e-6)
    assert bool((scheduler.d_kappa(t) >= 0).all())
    torch.testing.assert_close(scheduler.kappa_inverse(scheduler.kappa(t)), t)
    torch.testing.assert_close(scheduler.jump_coefficient(t), scheduler.d_kappa(t) / (1 - scheduler.kappa(t)))


def test_get_convex_scheduler_by_name():
    assert isinstance(get_convex_scheduler("cosine"), CosineConvexScheduler)
    assert get_convex_scheduler("polynomial", n=2.0).n == 2.0
    with pytest.raises(ConfigError, match="scheduler"):
        get_convex_scheduler("sigmoid")


def _binomial_ok(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("scheduler", [LinearConvexScheduler(), PolynomialConvexScheduler(2.0)], ids=repr)
def test_masked_path_marginal_is_kappa(t, scheduler):
    path = MixtureDiscretePath(5, source="mask", scheduler=scheduler)
    x1 = torch.randint(0, 5, (400, 50), generator=torch.Generator().manual_seed(0))
    out = path.sample(x1, torch.full((400,), t), generator=torch.Generator().manual_seed(1))
    kappa = float(scheduler.kappa(torch.tensor(t)))
    assert _binomial_ok(int((out.x_t == x1).sum()), x1.numel(), kappa)
    assert bool(((out.x_t == x1) | (out.x_t == path.source.mask_id)).all())   # nothing else appears
    assert bool((out.x0 == 5).all()) and out.t.shape == (400,)


def test_uniform_path_marginal_formula():
    """P(x_t = y | x1) = κ δ(y = x1) + (1 - κ) / V, checked for every y."""
    v, t = 4, 0.3
    path = MixtureDiscretePath(v, source="uniform")
    x1 = torch.full((500, 40), 2)
    out = path.sample(x1, torch.full((500,), t), generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(out.x_t.flatten(), minlength=v)
    for y in range(v):
        p = t * (y == 2) + (1 - t) / v
        assert _binomial_ok(int(counts[y]), x1.numel(), p), (y, counts.tolist())
    probs = path.marginal_probs(x1[:1, :1], torch.tensor([t]))[0, 0]
    assert probs.tolist() == pytest.approx([0.175, 0.175, 0.475, 0.175])


def test_path_ends_and_given_source():
    path = MixtureDiscretePath(3, source="uniform")
    x1 = torch.randint(0, 3, (8, 6))
    x0 = torch.randint(0, 3, (8, 6))
    assert torch.equal(path.sample(x1, torch.zeros(8), x0=x0).x_t, x0)
    assert torch.equal(path.sample(x1, torch.ones(8), x0=x0).x_t, x1)
    assert torch.equal(path.sample(x1, 1.0).x_t, x1)     # a number is one time for all


def test_sources():
    assert masked_source(4).probs().tolist() == [0, 0, 0, 0, 1]
    assert masked_source(4, mask_id=6).num_states == 7
    assert uniform_source(4).probs().tolist() == [0.25] * 4
    assert MixtureDiscretePath(4, "mask").carry_over and not MixtureDiscretePath(4, "uniform").carry_over
    assert not MixtureDiscretePath(4, "mask", carry_over=False).carry_over
    assert "carry_over=True" in repr(MixtureDiscretePath(4))


def test_carry_over_probs_pins_unmasked_tokens():
    path = MixtureDiscretePath(3, "mask")
    probs = torch.full((1, 2, 3), 1 / 3)
    pinned = path.carry_over_probs(probs, torch.tensor([[1, 3]]))
    assert pinned[0, 0].tolist() == [0, 1, 0] and pinned[0, 1].tolist() == pytest.approx([1 / 3] * 3)
