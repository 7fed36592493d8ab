"""Tests of RatioAwareGuidance (RAAG, Zhu et al., arXiv 2508.03442): formula, per-sample scales, CFG wiring."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError, ShapeError
from flowzoo.core.sampling import ClassifierFreeGuidance, RatioAwareGuidance

NULL = 3


def test_scale_matches_hand_computation():
    v_u = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])            # norms 5, 2, 1
    v_c = v_u + torch.tensor([[0.0, 5.0], [1.0, 0.0], [0.0, 0.0]])      # ratios 1, 0.5, 0
    w = RatioAwareGuidance(max_scale=7.0, alpha=2.0)(torch.zeros(3), v_c, v_u)
    expected = [1 + 6 * math.exp(-2.0), 1 + 6 * math.exp(-1.0), 7.0]
    assert w.shape == (3,)
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)
    w_sq = RatioAwareGuidance(max_scale=7.0, alpha=2.0, squared=True)(torch.zeros(3), v_c, v_u)
    assert torch.allclose(w_sq, torch.tensor([1 + 6 * math.exp(-2.0), 1 + 6 * math.exp(-0.5), 7.0]), atol=1e-6)


def test_norm_runs_over_all_non_batch_dims():
    gen = torch.Generator().manual_seed(0)
    v_u, v_c = torch.randn(4, 2, 3, 5, generator=gen), torch.randn(4, 2, 3, 5, generator=gen)
    rho = RatioAwareGuidance(4.0, 1.0).ratio(v_c, v_u)
    flat = (v_c - v_u).flatten(1).norm(dim=1) / v_u.flatten(1).norm(dim=1)
    assert torch.allclose(rho, flat)


def test_eps_floor_keeps_the_scale_finite_and_near_one():
    v_u, v_c = torch.zeros(2, 3), torch.ones(2, 3)
    w = RatioAwareGuidance(10.0, 1.0, eps=1e-8)(torch.zeros(2), v_c, v_u)
    assert torch.isfinite(w).all() and torch.allclose(w, torch.ones(2))


def test_each_sample_gets_its_own_scale_through_cfg():
    """Flip-the-bug: a batch-averaged ratio gives both samples the same w; RAAG must not."""

    def model(x, t, y):   # conditional: v_u = 1, v_c = 1 + y * e_0
        out = torch.ones_like(x)
        cond = torch.where(y == NULL, 0.0, y.to(x.dtype))
        out[:, 0] += cond
        return out

    schedule = RatioAwareGuidance(max_scale=5.0, alpha=1.0)
    guided = ClassifierFreeGuidance(model, schedule, {"y": NULL})
    x, y = torch.zeros(2, 4), torch.tensor([0, 2])
    out = guided(x, torch.zeros(2), y=y)
    # sample 0: v_c = v_u, guided = v_u. Sample 1: rho = 2 / 2 = 1, w = 1 + 4 e^-1, guided_0 = 1 + 2 w.
    w1 = 1 + 4 * math.exp(-1.0)
    assert torch.allclose(out[0], torch.ones(4))
    assert out[1, 0].item() == pytest.approx(1 + 2 * w1, rel=1e-6)
    batch_mean_w = 1 + 4 * math.exp(-0.5)           # what a batch-mean ratio (0 + 1) / 2 would give
    assert abs(out[1, 0].item() - (1 + 2 * batch_mean_w)) > 0.5


def test_alpha_zero_is_constant_cfg_and_large_ratio_is_conditional():
    gen = torch.Generator().manual_seed(1)
    v_u, v_c = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    assert torch.allclose(RatioAwareGuidance(3.0, 0.0)(torch.zeros(5), v_c, v_u), torch.full((5,), 3.0))
    w = RatioAwareGuidance(3.0, 50.0)(torch.zeros(5), v_c + 100.0, v_u)
    assert torch.allclose(w, torch.ones(5))


@pytest.mark.parametrize("kwargs", [dict(max_scale=float("nan"), alpha=1.0), dict(max_scale=2.0, alpha=-1.0),
                                    dict(max_scale=2.0, alpha=1.0, eps=0.0), dict(max_scale="2", alpha=1.0),
                                    dict(max_scale=2.0, alpha=1.0, squared="yes")])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        RatioAwareGuidance(**kwargs)


def test_bad_shapes_raise():
    schedule = RatioAwareGuidance(2.0, 1.0)
    with pytest.raises(ShapeError):
        schedule(torch.zeros(2), torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(FlowzooError):
        schedule(torch.zeros(2), [1.0], torch.zeros(2, 3))
