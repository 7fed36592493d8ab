"""Tests of flowzoo.core.families.pfgmpp (PFGM++, Xu et al., arXiv 2302.04265): kernel, prior, EDM loss and sampler."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from flowzoo.core.errors import ConfigError, FlowzooError, ShapeError
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.families import (EDMPrecond, PFGMPPLoss, edm_sigma_grid, pfgmpp_sample, sample_perturbation,
                                 sample_prior)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_second_moment_tends_to_gaussian_at_large_D():
    sigma, n = 0.7, 20000
    y = torch.randn(n, 8, 8, generator=_gen(0), dtype=torch.float64)
    x = sample_perturbation(y, sigma, D=8192, generator=_gen(1))
    second = (x - y).flatten(1).pow(2).sum(1).mean().item()
    N = 64
    assert second == pytest.approx(N * sigma ** 2, rel=0.01)
    assert second == pytest.approx(N * sigma ** 2 * 8192 / 8190, rel=0.005)


@pytest.mark.parametrize("N,D", [(2, 8), (3, 16)])
def test_second_moment_exact_at_small_D(N, D):
    sigma = 1.3
    y = torch.zeros(200_000, N, dtype=torch.float64)
    x = sample_perturbation(y, sigma, D=D, generator=_gen(2))
    second = x.pow(2).sum(1).mean().item()
    exact = N * sigma ** 2 * D / (D - 2)           # r^2 (N/2)/(D/2 - 1), r = sigma sqrt(D)
    assert second == pytest.approx(exact, rel=0.02)
    assert abs(second - N * sigma ** 2) > 0.05 * N * sigma ** 2   # visibly heavier than the Gaussian


def test_per_sample_sigma_scales_each_row():
    y = torch.zeros(40000, 16, dtype=torch.float64)
    sigma = torch.where(torch.arange(40000) % 2 == 0, 0.5, 2.0).double()
    x = sample_perturbation(y, sigma, D=4096, generator=_gen(3))
    sq = x.pow(2).sum(1)
    assert sq[0::2].mean().item() == pytest.approx(16 * 0.25, rel=0.02)
    assert sq[1::2].mean().item() == pytest.approx(16 * 4.0, rel=0.02)


def test_directions_are_uniform_on_the_sphere():
    y = torch.randn(50000, 3, generator=_gen(4), dtype=torch.float64)
    diff = sample_perturbation(y, 1.0, D=6, generator=_gen(5)) - y
    u = diff / diff.norm(dim=1, keepdim=True)
    assert u.mean(0).abs().max().item() < 0.015
    assert torch.allclose(u.T @ u / u.shape[0], torch.eye(3, dtype=torch.float64) / 3, atol=0.01)
    # uniform on S^2: each coordinate is Uniform(-1, 1) (Archimedes)
    assert stats.kstest(u[:, 0].numpy(), stats.uniform(-1, 2).cdf).pvalue > 0.01


def test_prior_radius_is_beta_prime_and_not_rescaled_again():
    N, D, sigma_max = 2, 4, 80.0
    x = sample_prior((20000, N), sigma_max, D, generator=_gen(6), dtype=torch.float64)
    r = sigma_max * math.sqrt(D)
    beta = (x.pow(2).sum(1) / (x.pow(2).sum(1) + r ** 2)).numpy()    # R^2/(R^2 + r^2) ~ Beta(N/2, D/2)
    assert stats.kstest(beta, stats.beta(N / 2, D / 2).cdf).pvalue > 0.01
    bad = x * sigma_max                                               # the EDM-branch bug
    bad_beta = (bad.pow(2).sum(1) / (bad.pow(2).sum(1) + r ** 2)).numpy()
    assert stats.kstest(bad_beta, stats.beta(N / 2, D / 2).cdf).pvalue < 1e-6


def test_edm_grid():
    grid = edm_sigma_grid(18)
    assert grid.shape == (19,) and grid[0].item() == pytest.approx(80.0) and grid[-2].item() == pytest.approx(0.002)
    assert grid[-1].item() == 0.0 and bool((grid[1:] < grid[:-1]).all())


def test_loss_matches_hand_computation():
    y = torch.randn(6, 2, generator=_gen(7))
    loss, metrics = PFGMPPLoss(D=8)(lambda x, s: x, {"x1": y}, generator=_gen(8))
    gen = _gen(8)
    sigma = (-1.2 + 1.2 * torch.randn(6, generator=gen)).exp()
    x = sample_perturbation(y, sigma, 8, gen)
    lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    assert loss.item() == pytest.approx((lam * (x - y).pow(2).mean(1)).mean().item(), rel=1e-5)
    assert metrics["sigma_mean"] == pytest.approx(sigma.mean().item(), rel=1e-6)


def test_heun_sampler_on_exact_denoisers():
    # a point mass: D(x, sigma) = y0 sends every start to y0 exactly (last step is Euler to sigma = 0)
    y0 = torch.tensor([0.3, -0.2])
    out = pfgmpp_sample(lambda x, s: y0.expand_as(x), sample_prior((5, 2), 80.0, 4, _gen(9)), steps=10)
    assert torch.allclose(out.x, y0.expand(5, 2), atol=1e-5) and out.nfe == 19
    # Gaussian data N(0, s^2 I), D -> inf: D = s^2/(s^2 + sigma^2) x, exact flow x(sigma) ∝ sqrt(s^2 + sigma^2)
    s2, start = 0.25, torch.randn(4, 3, generator=_gen(10), dtype=torch.float64) * 80.0
    out = pfgmpp_sample(lambda x, sig: s2 / (s2 + sig[:, None] ** 2) * x, start, steps=40)
    assert torch.allclose(out.x, start * math.sqrt(s2) / math.sqrt(s2 + 80.0 ** 2), rtol=0.02)


def _mixture(n, gen):
    centres = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 0.5
    return centres[torch.randint(0, 4, (n,), generator=gen)] + 0.08 * torch.randn(n, 2, generator=gen)


@pytest.mark.parametrize("D,threshold", [(4, 0.35), (128, 0.5)])
def test_learns_a_2d_mixture_and_the_rescaled_prior_fails(D, threshold):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    denoiser = EDMPrecond(MLPVelocity(2, hidden=64, depth=3, time_dim=32))
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    gen, objective = _gen(1), PFGMPPLoss(D=D)
    for _ in range(1200):
        loss, _ = objective(denoiser, {"x1": _mixture(256, gen)}, generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    reference = _mixture(1000, _gen(5))
    good = pfgmpp_sample(denoiser, sample_prior((1000, 2), 80.0, D, _gen(6)), steps=18)
    w2 = wasserstein2(good.x, reference)
    bad_start = sample_prior((1000, 2), 80.0, D, _gen(6)) * 80.0
    w2_bad = wasserstein2(pfgmpp_sample(denoiser, bad_start, steps=18).x, reference)
    assert w2 < threshold, w2
    assert w2_bad > 3 * threshold, w2_bad


def test_bad_inputs():
    with pytest.raises(ConfigError):
        sample_perturbation(torch.zeros(2, 2), 1.0, D=0)
    with pytest.raises(ConfigError):
        sample_perturbation(torch.zeros(2, 2), -1.0, D=4)
    with pytest.raises(ShapeError):
        sample_perturbation(torch.zeros(2, 2), torch.ones(3), D=4)
    with pytest.raises(FlowzooError):
        sample_perturbation(torch.full((2, 2), float("nan")), 1.0, D=4)
    with pytest.raises(ShapeError):
        sample_prior((4,), 80.0, D=4)
    with pytest.raises(ConfigError):
        edm_sigma_grid(1)
    with pytest.raises(ConfigError):
        edm_sigma_grid(5, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError):
        PFGMPPLoss(D=4)(lambda x, s: x, {"y": torch.zeros(2, 2)})
    with pytest.raises(ShapeError):
        PFGMPPLoss(D=4)(lambda x, s: x[:, :1], {"x1": torch.zeros(2, 2)})
    with pytest.raises(ShapeError):
        pfgmpp_sample(lambda x, s: x[:, :1], torch.ones(2, 2), steps=3)
