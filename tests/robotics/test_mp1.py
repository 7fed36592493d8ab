"""MP1 pieces: the time-pair translation, both guidance forms by hand, 1-NFE sampling, the dispersive hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.core.fewstep import dispersive_loss
from flowzoo.core.errors import ConfigError
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.mp1 import MP1_DEFAULTS, meanflow_objective, mp1_config, mp1_time_sampler
from flowzoo.robotics.dm1 import dm1_config
from flowzoo.robotics.policy import FlowPolicy
from flowzoo.robotics.policy_config import PolicyConfig

torch.set_num_threads(1)

SMALL = dict(down_dims=(16, 32), time_dim=16, state_dim=16, state_hidden=(32,))
SPEC = EnvSpec("fake-task", "state", {"state": (5,)}, 2, (-1.0, -1.0), (1.0, 1.0), 50)
NORMALIZER = Normalizer({"state": {"min": [-1.0] * 5, "max": [1.0] * 5},
                         "action": {"min": [-1.0, -1.0], "max": [1.0, 1.0]}})


def test_time_pairs_match_mp1_sampler_translated_to_flowzoo_time():
    n = 40000
    gen = torch.Generator().manual_seed(0)
    # MP1 (data at 0, noise at 1): t = max, r = min of two LN(-0.4, 1); r = t for half of the batch.
    a, b = torch.sigmoid(-0.4 + torch.randn(2, n, generator=gen))
    t_mp1, r_mp1 = torch.maximum(a, b), torch.minimum(a, b)
    r_mp1 = torch.where(torch.rand(n, generator=gen) < 0.5, r_mp1, t_mp1)
    s_ref, t_ref = 1 - t_mp1, 1 - r_mp1
    s, t = mp1_time_sampler().sample(n, generator=torch.Generator().manual_seed(1))
    assert bool((s <= t).all())
    for ours, ref in ((s, s_ref), (t, t_ref), (t - s, t_ref - s_ref)):
        qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
        assert torch.allclose(torch.quantile(ours, qs), torch.quantile(ref, qs), atol=0.015)
    assert (s == t).float().mean().item() == pytest.approx(0.5, abs=0.01)


class _KnownFlowMap(torch.nn.Module):
    """u(x, s, t | cond) = x * (1 + s) + 3 t + cond.sum(1) broadcast: every term checkable by hand."""

    def forward(self, x, s, t, cond):
        return x * (1 + s)[:, None, None] + 3 * t[:, None, None] + cond.sum(1)[:, None, None]


def test_guided_targets_by_hand():
    model = _KnownFlowMap()
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    v = torch.randn(4, 3, 2, dtype=torch.float64)
    s = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    cond = {"cond": torch.randn(4, 5, dtype=torch.float64)}
    u_cond = model(x, s, s, cond["cond"])
    u_null = model(x, s, s, torch.full((4, 5), 0.5, dtype=torch.float64))

    mp1 = meanflow_objective(guidance="mp1", guidance_scale=2.0)
    assert mp1.guidance_kappa == -1.0 and not mp1.uses_null_branch and mp1.cond_dropout == 0.0
    assert torch.allclose(mp1.guided_velocity(model, x, s, v, cond, None), 2 * v - u_cond)

    cfg = meanflow_objective(guidance="cfg", guidance_scale=2.0, cond_dropout=0.1, null_value=0.5)
    assert cfg.uses_null_branch and cfg.null_cond == {"cond": 0.5}
    assert torch.allclose(cfg.guided_velocity(model, x, s, v, cond, None), 2 * v - u_null)
    dropped = torch.tensor([True, False, False, True])
    guided = cfg.guided_velocity(model, x, s, v, cond, dropped)
    assert torch.allclose(guided[dropped], v[dropped])  # samples trained unconditionally keep v

    plain = meanflow_objective()
    assert torch.equal(plain.guided_velocity(model, x, s, v, cond, None), v)
    assert plain.adaptive_p == 0.5 and plain.time_sampler.distinct_fraction == 0.5
    with pytest.raises(ConfigError, match="cond_dropout"):
        meanflow_objective(guidance="cfg", guidance_scale=2.0)
    with pytest.raises(ConfigError, match="guidance"):
        meanflow_objective(guidance="classifier")


def test_mp1_config_and_objective_wiring():
    config = mp1_config(**SMALL)
    for key in ("dispersive", "guidance", "guidance_scale", "adaptive_p", "distinct_fraction", "time_mean"):
        assert getattr(config, key) == MP1_DEFAULTS[key]
    # the method name alone resolves to the same settings as the presets
    assert PolicyConfig(method="mp1", **SMALL).resolved() == config.resolved()
    assert PolicyConfig(method="dm1", **SMALL).resolved() == dm1_config(**SMALL).resolved()
    policy = FlowPolicy(SPEC, NORMALIZER, config)
    assert policy.objective.guidance_scale == 2.0 and policy.objective.guidance_kappa == -1.0
    assert policy.null_embedding is None and policy.nfe == 1
    cfg_policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(guidance="cfg", cond_dropout=0.1, **SMALL))
    assert cfg_policy.objective.null_cond["cond"] is cfg_policy.null_embedding
    zeros = FlowPolicy(SPEC, NORMALIZER, mp1_config(guidance="cfg", cond_dropout=0.1, null_cond="zeros", **SMALL))
    assert zeros.null_embedding is None and zeros.objective.null_cond == {"cond": 0.0}


def test_one_step_sampling_is_one_flow_map_jump():
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(clip_sample=False, **SMALL)).eval()
    obs = {"state": torch.rand(3, 2, 5) * 2 - 1}
    noise = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        features = policy.obs_encoder(policy.normalize_obs(obs))
        by_hand = noise + policy.net(noise, torch.zeros(3), torch.ones(3), cond=features)
    # identity normaliser on [-1, 1]; the action limits clip
    assert torch.allclose(policy.predict_action_chunk(obs, noise=noise), by_hand.clamp(-1, 1), atol=1e-6)


def test_dispersive_uses_the_down_blocks_of_the_gradient_pass():
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(**SMALL))
    batch = {"obs": {"state": torch.rand(6, 2, 5)}, "action": torch.rand(6, 4, 2)}
    loss, metrics = policy.loss(batch, generator=torch.Generator().manual_seed(0))
    features = policy.net.last_features
    assert len(features) == 1 and features[0].shape == (6, 16, 4) and features[0].requires_grad
    assert metrics["dispersive"] == pytest.approx(dispersive_loss(features, "mp1").item(), rel=1e-6)
    # the dispersive term alone sends gradient into the encoder (through the FiLM condition)
    dispersive_loss(features, "mp1").backward()
    grad = policy.obs_encoder.encoders["state"].mlp[0].weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert np.isfinite(loss.item())


class _ConstantMap(torch.nn.Module):
    """A flow map whose output is one learned vector: u(x, s, t) = c, so du/ds = 0 and the target is v̂ itself."""

    def __init__(self, dim: int):
        super().__init__()
        self.c = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x, s, t):
        return self.c.expand_as(x)


def _fit_constant(objective, x1: torch.Tensor, steps: int = 400) -> tuple[torch.Tensor, float]:
    model = _ConstantMap(x1.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        loss, _ = objective(model, {"x1": x1}, generator=generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= steps - 100:
            losses.append(loss.item())
    return model.c.detach(), sum(losses) / len(losses)


def test_mp1_guided_target_keeps_the_plain_minimiser_with_omega_times_the_noise():
    # E[v] = E[x1 - x0] = mean of x1: both targets lead there; MP1's target v̂ = 2v - u has 2x the noise (4x loss).
    spread = 0.1 * torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    x1 = torch.tensor([[0.5, -1.0]]) + spread
    plain, plain_loss = _fit_constant(meanflow_objective(adaptive_p=0.0), x1)
    guided, guided_loss = _fit_constant(meanflow_objective(guidance="mp1", guidance_scale=2.0, adaptive_p=0.0), x1)
    mean = x1.mean(0)
    assert torch.allclose(plain, mean, atol=0.05) and torch.allclose(guided, mean, atol=0.05)
    assert 3.0 < guided_loss / plain_loss < 5.0
