"""benchmarks/meanflow_moons_ablation.py: the batch posterior velocity is the exact marginal one; every variant runs."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import meanflow_moons_ablation as ablation


def test_posterior_velocity_is_the_marginal_velocity_of_a_discrete_target():
    # Data = two points, source N(0, I): the marginal velocity at x_s is the posterior mean of (x1 - x) / (1 - s)
    # with posterior weights N(x; s x1_j, (1 - s)^2 I) -- exact when the batch is the whole data set.
    points = torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    estimator = ablation.BatchPosteriorVelocity(lambda z: -0.5 * (z**2).sum(-1))
    estimator.set_data(points)
    x = torch.tensor([[0.3, 0.2], [-0.5, 0.4], [1.0, -1.0]], dtype=torch.float64)
    s = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    sd = (1 - s)[:, None]
    log_w = -((x[:, None, :] - s[:, None, None] * points[None]) ** 2).sum(-1) / (2 * sd**2)
    expected = (torch.softmax(log_w, 1)[..., None] * (points[None] - x[:, None, :])).sum(1) / sd
    assert torch.allclose(estimator(x, s), expected, atol=1e-10)
    # At s = 0 every data point is equally likely: the velocity is mean(x1) - x.
    assert torch.allclose(estimator(x, torch.zeros(3, dtype=torch.float64)), points.mean(0) - x, atol=1e-12)


def test_eight_gaussians_log_prob_matches_the_mixture_up_to_a_constant():
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = 5.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(8, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(centres, 0.1**0.25 * torch.ones_like(centres)), 1))
    z = torch.randn(50, 2, dtype=torch.float64) * 4
    gap = ablation.eight_gaussians_log_prob(z) - mixture.log_prob(z)
    assert torch.allclose(gap, gap[0].expand_as(gap), atol=1e-9)


@pytest.mark.parametrize("variant", ["posterior", "ot_ema", "ot_ugap", "ot_ugap_lr"])
def test_variants_train_and_report(variant):
    rows = ablation.run_variant(variant, steps=6, eval_every=3, hidden=16, eval_samples=64, progress=False)
    assert [r["step"] for r in rows] == [3, 6]
    keys = {"W2 1-NFE", "W2 2-NFE"} | ({"EMA W2 1-NFE", "EMA W2 2-NFE"} if variant.endswith("ema") else set())
    assert keys <= set(rows[-1]) and all(math.isfinite(rows[-1][k]) for k in keys)


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit, match="unknown variant"):
        ablation.run_variant("nope", steps=1)
