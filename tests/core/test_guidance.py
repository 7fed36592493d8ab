"""Tests of flowzoo.core.sampling.guidance: the CFG formula, batching into one forward, schedules, and a learning test."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError, ShapeError
from flowzoo.core.sampling import ClassifierFreeGuidance, ConstantGuidance
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.sampling import integrate

NULL = 5


class LabelModel:
    """v(x, t | y) = x·(1 + t) + y, with call counting; y = NULL is the unconditional case."""

    def __init__(self):
        self.calls, self.batches = 0, []

    def __call__(self, x, t, y, extra=None):
        self.calls += 1
        self.batches.append(x.shape[0])
        out = x * (1 + t[:, None]) + y[:, None].to(x.dtype)
        return out if extra is None else out + extra


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=gen), torch.rand(4, generator=gen), torch.tensor([0, 1, 2, 3])


def test_scale_zero_is_unconditional_and_one_is_conditional(inputs):
    x, t, y = inputs
    model = LabelModel()
    uncond = ClassifierFreeGuidance(model, 0.0, {"y": NULL})(x, t, y=y)
    assert torch.allclose(uncond, model(x, t, torch.full((4,), NULL)))
    cond = ClassifierFreeGuidance(model, 1.0, {"y": NULL})(x, t, y=y)
    assert torch.allclose(cond, model(x, t, y))
    model.calls, model.batches = 0, []
    ClassifierFreeGuidance(model, 1.0, {"y": NULL})(x, t, y=y)
    ClassifierFreeGuidance(model, 0.0, {"y": NULL})(x, t, y=y)
    assert model.calls == 2 and model.batches == [4, 4]  # one plain pass each, no doubled batch


@pytest.mark.parametrize("scale", [-0.5, 2.0, 7.5])
def test_guided_velocity_follows_the_formula_in_one_batched_forward(inputs, scale):
    x, t, y = inputs
    model = LabelModel()
    guided = ClassifierFreeGuidance(model, scale, {"y": NULL})(x, t, y=y)
    assert model.calls == 1 and model.batches == [8]
    v_c, v_u = model(x, t, y), model(x, t, torch.full((4,), NULL))
    assert torch.allclose(guided, v_u + scale * (v_c - v_u), atol=1e-6)


def test_tensor_null_values_and_shared_keys(inputs):
    x, t, _ = inputs
    calls = []

    def model(x, t, emb, context):
        calls.append(x.shape[0])
        return x + emb.sum(1, keepdim=True) * context

    emb = torch.randn(4, 6)
    null_emb = torch.zeros(6)
    context = torch.tensor(2.0)  # shared by both halves, not batched
    guided = ClassifierFreeGuidance(model, 3.0, {"emb": null_emb})(x, t, emb=emb, context=context)
    v_c, v_u = model(x, t, emb, context), model(x, t, torch.zeros(4, 6), context)
    assert calls[0] == 8 and torch.allclose(guided, v_u + 3.0 * (v_c - v_u), atol=1e-5)


def test_none_null_value_omits_the_keyword_with_two_passes(inputs):
    x, t, y = inputs
    model = LabelModel()
    extra = torch.ones(4, 3)
    guided = ClassifierFreeGuidance(model, 2.0, {"extra": None})(x, t, y=y, extra=extra)
    assert model.calls == 2
    v_c, v_u = model(x, t, y, extra), model(x, t, y)
    assert torch.allclose(guided, v_u + 2.0 * (v_c - v_u))


def test_schedule_hook_gives_per_sample_scales(inputs):
    x, t, y = inputs
    seen = {}

    def schedule(t, v_cond, v_uncond):
        seen.update(t=t, v_cond=v_cond, v_uncond=v_uncond)
        return 1.0 + torch.arange(4, dtype=v_cond.dtype)  # w = 1, 2, 3, 4

    model = LabelModel()
    guided_model = ClassifierFreeGuidance(model, schedule, {"y": NULL})
    assert guided_model.scale is None
    guided = guided_model(x, t, y=y)
    assert model.calls == 1 and seen["t"].shape == (4,) and seen["v_cond"].shape == x.shape
    v_c, v_u = model(x, t, y), model(x, t, torch.full((4,), NULL))
    expected = v_u + (1.0 + torch.arange(4.0))[:, None] * (v_c - v_u)
    assert torch.allclose(guided, expected, atol=1e-6)
    constant = ClassifierFreeGuidance(LabelModel(), ConstantGuidance(2.0), {"y": NULL})
    assert constant.scale == 2.0 and torch.allclose(constant(x, t, y=y), v_u + 2.0 * (v_c - v_u), atol=1e-6)


def test_guided_model_goes_through_the_solver(inputs):
    x, _, y = inputs
    model = LabelModel()
    result = integrate(ClassifierFreeGuidance(model, 2.0, {"y": NULL}), x, method="rk4", steps=3, cond={"y": y})
    assert result.nfe == 12 and model.calls == 12 and set(model.batches) == {8}


def test_wraps_a_module_and_follows_it():
    net = MLPVelocity(2, hidden=16, depth=1, num_classes=3)
    guided = ClassifierFreeGuidance(net, 2.0, {"y": net.null_class})
    assert list(guided.parameters()) == list(net.parameters())
    guided.eval()
    assert not net.training
    out = guided(torch.randn(5, 2), torch.rand(5), y=torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, 2)


def test_cfg_sharpens_a_learned_class_conditional_flow():
    """Two classes at (-2, 0) and (2, 0); trained with 30% label dropout, guided samples land on their class."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = MLPVelocity(2, hidden=64, depth=2, num_classes=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    for _ in range(400):
        y = torch.randint(0, 2, (256,), generator=gen)
        x1 = centers[y] + 0.3 * torch.randn(256, 2, generator=gen)
        x0 = torch.randn(256, 2, generator=gen)
        t = torch.rand(256, generator=gen)
        y_in = torch.where(torch.rand(256, generator=gen) < 0.3, torch.full_like(y, net.null_class), y)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = (net(x_t, t, y=y_in) - (x1 - x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x0 = torch.randn(2000, 2, generator=gen)
    y = torch.arange(2).repeat(1000)

    def sample(scale):
        return integrate(ClassifierFreeGuidance(net, scale, {"y": net.null_class}), x0, method="euler", steps=20,
                         cond={"y": y}).x

    def wrong_side(x):  # fraction of samples on the other class's half-plane
        return float(((x[:, 0] > 0).long() != y).float().mean())

    unconditional, conditional, guided = sample(0.0), sample(1.0), sample(3.0)
    assert 0.35 < float((unconditional[:, 0] > 0).float().mean()) < 0.65  # both modes, ignoring the label
    assert wrong_side(conditional) < 0.1
    assert wrong_side(guided) <= wrong_side(conditional) and wrong_side(guided) < 0.05

    def spread(x):  # mean squared distance to the own class centre
        return float((x - centers[y]).pow(2).sum(1).mean())

    assert spread(guided) < spread(conditional) < 0.5 < spread(unconditional)  # w > 1 concentrates the classes


def test_bad_configuration_raises(inputs):
    x, t, y = inputs
    model = LabelModel()
    for kwargs in ({"scale": float("nan"), "null_cond": {"y": NULL}}, {"scale": 2.0, "null_cond": {}},
                   {"scale": 2.0, "null_cond": None}, {"scale": "big", "null_cond": {"y": NULL}}):
        with pytest.raises(ConfigError):
            ClassifierFreeGuidance(model, **kwargs)
    with pytest.raises(ConfigError):
        ClassifierFreeGuidance(42, 2.0, {"y": NULL})
    with pytest.raises(ConfigError, match="y"):
        ClassifierFreeGuidance(model, 2.0, {"y": NULL})(x, t)
    with pytest.raises(ShapeError):
        ClassifierFreeGuidance(lambda x, t, emb: x, 2.0, {"emb": torch.zeros(3)})(x, t, emb=torch.ones(4, 6))
    with pytest.raises(ShapeError) as info:
        ClassifierFreeGuidance(model, lambda t, c, u: torch.ones(3), {"y": NULL})(x, t, y=y)
    assert isinstance(info.value, FlowzooError)
