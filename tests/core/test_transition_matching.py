"""Tests of flowzoo.core.families.transition_matching (DTM, Shaul et al., arXiv 2506.23589)."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError, ShapeError
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.core.families import DTMLoss, DTMModel, dtm_sample

CENTRES = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mixture(n, gen):
    """Four well-separated Gaussians with non-zero variance (std 0.4)."""
    return CENTRES[torch.randint(0, 4, (n,), generator=gen)] + 0.4 * torch.randn(n, 2, generator=gen)


def _train(model, objective, sampler, iters, seed=1):
    torch.set_num_threads(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - 0.9 * i / iters)  # settle the end
    gen = _gen(seed)
    for _ in range(iters):
        loss, _ = objective(model, {"x1": sampler(256, gen)}, generator=gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model


def _cov_error(x, cov_ref):
    return (torch.cov(x.T) - cov_ref).norm().item()


def test_dtm_beats_fm_euler_at_two_backbone_steps():
    """Demystifying-TM (§19): with T = 2 backbone calls, FM-Euler shrinks the covariance; DTM's kernel keeps it."""
    T, iters = 2, 1500
    torch.manual_seed(0)
    fm = _train(MLPVelocity(2, hidden=64, depth=3, time_dim=32), FlowMatchingLoss(), _mixture, iters)
    torch.manual_seed(0)
    dtm = _train(DTMModel(2, T, hidden=64, head_hidden=64), DTMLoss(T, head_samples=4), _mixture, iters)
    reference, cov_ref = _mixture(1000, _gen(5)), torch.cov(_mixture(20000, _gen(7)).T)
    x0 = torch.randn(1000, 2, generator=_gen(6))
    fm_x = integrate(fm, x0, method="euler", steps=T).x
    out = dtm_sample(dtm, x0, inner_steps=16, generator=_gen(8))
    assert (out.nfe, out.extras["head_nfe"]) == (2, 32)
    w2_fm, w2_dtm = wasserstein2(fm_x, reference), wasserstein2(out.x, reference)
    cov_fm, cov_dtm = _cov_error(fm_x, cov_ref), _cov_error(out.x, cov_ref)
    assert w2_dtm < 0.6 and w2_dtm < 0.7 * w2_fm, (w2_dtm, w2_fm)
    assert cov_dtm < 0.4 * cov_fm, (cov_dtm, cov_fm)
    # flip the bug on: a deterministic head (Y_0 = 0) collapses the kernel to a point mass, like FM
    with torch.no_grad():
        x = x0
        for k in range(T):
            features, y = dtm.features(x, torch.full((1000,), k / T)), torch.zeros_like(x)
            for j in range(16):
                y = y + dtm.head(y, j / 16, features) / 16
            x = x + y / T
    assert _cov_error(x, cov_ref) > 2 * cov_dtm and wasserstein2(x, reference) > w2_dtm + 0.15


def test_head_mean_is_the_fm_velocity_and_its_spread_is_the_posterior():
    """Degenerate check (T → ∞ limit): E[Y | X_k] is the FM velocity at t = k/T; oracle for Gaussian data.

    x0 ~ N(0, I), x1 ~ N(m, s^2 I), x_t = (1-t)x0 + t x1, Y = x1 - x0 (per dimension):
    E[Y | x_t] = m + c/V (x_t - t m), Var[Y | x_t] = s^2 + 1 - c^2/V, c = t s^2 - (1 - t), V = (1-t)^2 + t^2 s^2.
    """
    T, mean, std = 8, torch.tensor([1.0, -0.5]), 0.5
    torch.manual_seed(0)
    model = _train(DTMModel(2, T, hidden=64, head_hidden=64), DTMLoss(T, head_samples=4),
                   lambda n, gen: mean + std * torch.randn(n, 2, generator=gen), 800)
    gen = _gen(3)
    for k in (2, 6):
        t = k / T
        c, v = t * std ** 2 - (1 - t), (1 - t) ** 2 + t ** 2 * std ** 2
        x_t = t * mean + v ** 0.5 * torch.tensor([[0.5, -0.5]])
        with torch.no_grad():
            features = model.features(x_t, torch.tensor([t])).expand(4000, -1)
            y = torch.randn(4000, 2, generator=gen)
            for j in range(32):
                y = y + model.head(y, j / 32, features) / 32
        expected_mean = mean + c / v * (x_t[0] - t * mean)
        expected_std = (std ** 2 + 1 - c ** 2 / v) ** 0.5
        assert torch.allclose(y.mean(0), expected_mean, atol=0.1), (k, y.mean(0), expected_mean)
        assert torch.allclose(y.std(0), torch.full((2,), expected_std), rtol=0.15), (k, y.std(0), expected_std)


@pytest.mark.slow
def test_large_T_sampling_matches_fm_euler():
    """Degenerate check on samples: at T = 16 DTM and FM-Euler(16) agree (measured W2 0.49 vs 0.50)."""
    T, iters = 16, 1500
    torch.manual_seed(0)
    fm = _train(MLPVelocity(2, hidden=64, depth=3, time_dim=32), FlowMatchingLoss(), _mixture, iters)
    torch.manual_seed(0)
    dtm = _train(DTMModel(2, T, hidden=64, head_hidden=64), DTMLoss(T, head_samples=4), _mixture, iters)
    reference, x0 = _mixture(1000, _gen(5)), torch.randn(1000, 2, generator=_gen(6))
    w2_fm = wasserstein2(integrate(fm, x0, method="euler", steps=T).x, reference)
    w2_dtm = wasserstein2(dtm_sample(dtm, x0, inner_steps=4, generator=_gen(8)).x, reference)
    assert abs(w2_dtm - w2_fm) < 0.1 and max(w2_dtm, w2_fm) < 0.6, (w2_dtm, w2_fm)


def test_sampler_counts_and_trajectory():
    model = DTMModel(3, T=4, hidden=16, head_hidden=8)
    out = dtm_sample(model, torch.randn(5, 3), inner_steps=3, generator=_gen(0), return_trajectory=True)
    assert (out.nfe, out.extras["head_nfe"]) == (4, 12) and out.trajectory.shape == (5, 5, 3)
    again = dtm_sample(model, out.trajectory[0], inner_steps=3, generator=_gen(0))
    assert torch.equal(again.x, out.x)


def test_loss_accepts_source_and_weights_and_image_shapes():
    model = DTMModel(12, T=2, hidden=16, head_hidden=8)
    batch = {"x1": torch.randn(4, 3, 2, 2), "x0": torch.randn(4, 3, 2, 2), "weight": torch.tensor([1.0, 0, 2, 1])}
    loss, metrics = DTMLoss(2, head_samples=3)(model, batch, generator=_gen(0))
    loss.backward()
    assert loss.ndim == 0 and metrics["loss"] == pytest.approx(loss.item())


def test_bad_inputs():
    model = DTMModel(2, T=4, hidden=8, head_hidden=8)
    with pytest.raises(ConfigError):
        DTMModel(2, T=0)
    with pytest.raises(ConfigError):
        DTMLoss(T=2)(model, {"x1": torch.randn(4, 2)})               # trained T != model T
    with pytest.raises(ConfigError):
        DTMLoss(T=4)(model, {"y": torch.randn(4, 2)})
    with pytest.raises(ShapeError):
        DTMLoss(T=4)(model, {"x1": torch.randn(4, 2), "x0": torch.randn(4, 3)})
    with pytest.raises(FlowzooError):
        DTMLoss(T=4)(model, {"x1": torch.full((4, 2), float("nan"))})
    with pytest.raises(ShapeError):
        model.features(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(ConfigError):
        dtm_sample(model, torch.randn(4, 2), inner_steps=0)
    with pytest.raises(ConfigError):
        dtm_sample(lambda x: x, torch.randn(4, 2))
    with pytest.raises(FlowzooError):
        dtm_sample(model, torch.zeros(0, 2))
