"""The Euler CTMC sampler: its one-step kernel, and exact posteriors reproducing a known joint (chi-square)."""

from __future__ import annotations

import pytest
import torch

from discrete_support import ExactPosterior, chi2_pvalue, random_joint, sequence_index
from flowzoo.core.discrete import (MixtureDiscretePath, PolynomialConvexScheduler, discrete_sample, jump_rates,
                                   posterior_probs, sample_categorical, step_kernel)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("div_free", [0.0, 2.0])
def test_step_kernel_rows_sum_to_one(source, div_free):
    path = MixtureDiscretePath(5, source=source, carry_over=False)
    probs = torch.softmax(torch.randn(6, 7, 5), -1)
    x = torch.randint(0, path.num_states, (6, 7))
    for t in (0.0, 0.3, 0.9):
        kernel = step_kernel(probs, x, t, 0.05, path, div_free)
        assert kernel.shape == (6, 7, path.num_states) and bool((kernel >= 0).all())
        torch.testing.assert_close(kernel.sum(-1), torch.ones(6, 7))
    rates = jump_rates(probs, x, 0.3, path, div_free)
    assert bool((rates.gather(-1, x[..., None]) == 0).all())          # no rate to stay
    if source == "mask" and div_free == 0:
        assert bool((rates[..., 5] == 0).all())                          # nothing jumps back to the mask


def test_one_euler_step_follows_the_kernel():
    """The empirical distribution of one Euler jump matches step_kernel (chi-square), with div_free."""
    path = MixtureDiscretePath(4, source="uniform", scheduler=PolynomialConvexScheduler(2.0))
    posterior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    model = lambda x, t: posterior.log().expand(*x.shape, 4)
    n = 40000
    x = torch.full((n, 1), 1)
    out = discrete_sample(model, x, path=path, time_grid=[0.4, 0.6, 0.7], div_free=1.0,
                          return_trajectory=True, generator=torch.Generator().manual_seed(0))
    after_one = out.trajectory[1][:, 0]
    kernel = step_kernel(posterior[None], torch.tensor([1]), 0.4, 0.2, path, 1.0)[0]
    assert chi2_pvalue(torch.bincount(after_one, minlength=4), kernel) > 1e-3


def test_sample_categorical_frequencies():
    weights = torch.tensor([0.0, 1.0, 3.0, 0.0, 4.0]).expand(50000, 5)
    draws = sample_categorical(weights, torch.Generator().manual_seed(0))
    assert chi2_pvalue(torch.bincount(draws, minlength=5), weights[0] / 8) > 1e-3
    assert not bool(((draws == 0) | (draws == 3)).any())


@pytest.mark.parametrize("source,div_free", [("mask", 0.0), ("mask", 1.0), ("uniform", 0.0), ("uniform", 0.25)])
def test_exact_posterior_reproduces_the_joint(source, div_free):
    """A model that returns the true posterior of a joint over length-3 sequences samples that joint.

    Euler's error is O(h) (tokens that jump in one step are drawn independently), so 128 steps: with 32 the
    chi-square test sees the bias at this sample size.
    """
    v, length, n, steps = 3, 3, 5000, 128
    joint = random_joint(v, length, seed=1, sharpness=1.0)
    path = MixtureDiscretePath(v, source=source)
    model = ExactPosterior(joint, path, length)
    x0 = path.source.sample((n, length), generator=torch.Generator().manual_seed(0))
    out = discrete_sample(model, x0, path=path, steps=steps, div_free=div_free,
                          generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(sequence_index(out.x, v), minlength=v ** length)
    assert out.nfe == steps == model.calls
    assert chi2_pvalue(counts, joint) > 1e-3


def test_few_steps_are_not_exact_for_a_correlated_joint():
    """The test above can fail: one Euler step draws tokens independently and misses the correlations."""
    v, length, n = 3, 3, 5000
    joint = random_joint(v, length, seed=1, sharpness=1.0)
    path = MixtureDiscretePath(v, source="mask")
    out = discrete_sample(ExactPosterior(joint, path, length), path.source.sample((n, length)), path=path, steps=1,
                          generator=torch.Generator().manual_seed(1))
    assert chi2_pvalue(torch.bincount(sequence_index(out.x, v), minlength=v ** length), joint) < 1e-6


def test_masks_never_survive_and_tokens_stay_in_vocabulary():
    path = MixtureDiscretePath(6, source="mask", mask_id=9)
    model = lambda x, t: torch.randn(*x.shape, 6)
    for steps in (1, 2, 17):
        out = discrete_sample(model, path.source.sample((32, 10)), path=path, steps=steps, div_free=1.0)
        assert out.x.dtype == torch.long and bool(((out.x >= 0) & (out.x < 6)).all())
    partial = discrete_sample(model, path.source.sample((32, 10)), path=path, time_grid=[0.0, 0.5])
    assert bool(((partial.x < 6) | (partial.x == 9)).all())             # a grid ending before 1 keeps masks


def test_carry_over_keeps_unmasked_tokens():
    path = MixtureDiscretePath(4, source="mask")
    model = lambda x, t: torch.tensor([40.0, 0.0, 0.0, 0.0]).expand(*x.shape, 4)   # always says "token 0"
    x = torch.tensor([[3, 4, 2, 4]]).repeat(100, 1)
    out = discrete_sample(model, x, path=path, steps=10)
    assert bool((out.x[:, 0] == 3).all() and (out.x[:, 2] == 2).all())
    assert bool((out.x[:, [1, 3]] == 0).all())


def test_top_k_one_is_greedy_and_temperature_sharpens():
    path = MixtureDiscretePath(5, source="uniform")
    logits = torch.tensor([0.0, 1.0, 0.5, 2.0, 1.5])
    model = lambda x, t: logits.expand(*x.shape, 5)
    x0 = path.source.sample((64, 8), generator=torch.Generator().manual_seed(0))
    for seed in (0, 1):
        out = discrete_sample(model, x0, path=path, steps=20, top_k=1, generator=torch.Generator().manual_seed(seed))
        assert bool((out.x == 3).all())
    torch.testing.assert_close(posterior_probs(logits, temperature=0.5), torch.softmax(2 * logits, -1))
    top2 = posterior_probs(logits, top_k=2)
    assert top2[[0, 1, 2]].sum() == 0 and top2[3] > top2[4] > 0
    cold = discrete_sample(model, x0, path=path, steps=20, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert float((cold.x == 3).float().mean()) > 0.95


def test_trajectory_callback_and_determinism():
    path = MixtureDiscretePath(4, source="mask")
    model = lambda x, t: torch.zeros(*x.shape, 4)
    seen = []
    out = discrete_sample(model, path.source.sample((3, 5)), path=path, steps=4, return_trajectory=True,
                          callback=lambda step: seen.append((step["i"], step["x"].shape)),
                          generator=torch.Generator().manual_seed(0))
    assert out.trajectory.shape == (5, 3, 5) and out.times.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert seen == [(i, (3, 5)) for i in range(4)] and bool((out.trajectory[0] == 4).all())
    again = discrete_sample(model, path.source.sample((3, 5)), path=path, steps=4,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.x, again.x) and isinstance(out.extras["jumps"], int)
