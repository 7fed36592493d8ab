"""Tests of flowzoo.core.nets.mlp: time embedding and MLP velocity (shapes, conditioning, null class, bad input)."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, FlowzooError, ShapeError
from flowzoo.core.nets import ACTIVATIONS, MLPVelocity, SinusoidalTimeEmbedding


def test_time_embedding_values_and_shapes():
    emb = SinusoidalTimeEmbedding(8)
    t = torch.tensor([0.0, 0.25, 1.0])
    out = emb(t)
    assert out.shape == (3, 8) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos 0 = 1, sin 0 = 0
    # First frequency is 1 and times are scaled by 1000: feature 0 is cos(1000 t), feature 4 sin(1000 t).
    assert out[1, 0].item() == pytest.approx(math.cos(250.0), abs=1e-4)
    assert out[1, 4].item() == pytest.approx(math.sin(250.0), abs=1e-4)
    assert out.abs().max() <= 1.0
    assert emb(torch.tensor(0.5)).shape == (1, 8)
    assert emb(t.double()).dtype == torch.float64


def test_time_embedding_odd_dim_and_distinct_times():
    emb = SinusoidalTimeEmbedding(7)
    out = emb(torch.linspace(0, 1, 50))
    assert out.shape == (50, 7) and torch.all(out[:, -1] == 0)
    distances = torch.cdist(out, out) + torch.eye(50) * 10
    assert distances.min() > 1e-2  # nearby times in [0, 1] still get distinct features
    assert SinusoidalTimeEmbedding(8, scale=1.0)(torch.tensor([1.0]))[0, 0].item() == pytest.approx(math.cos(1.0))


@pytest.mark.parametrize("kwargs", [{"dim": 1}, {"dim": 8, "max_period": 1.0}, {"dim": 8, "scale": 0.0},
                                    {"dim": 4.0}])
def test_time_embedding_bad_config(kwargs):
    with pytest.raises(ConfigError):
        SinusoidalTimeEmbedding(**kwargs)
    with pytest.raises(ShapeError):
        SinusoidalTimeEmbedding(4)(torch.zeros(2, 2))


def test_mlp_shapes_for_vectors_and_tensors():
    torch.manual_seed(0)
    net = MLPVelocity(2, hidden=32, depth=3)
    assert net(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)
    assert net(torch.randn(5, 2), 0.3).shape == (5, 2)  # scalar time broadcast to the batch
    image_net = MLPVelocity(12, hidden=32, depth=2)
    x = torch.randn(4, 3, 2, 2)
    assert image_net(x, torch.rand(4)).shape == x.shape
    linears = [m for m in net.body if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 and linears[0].in_features == 2 + 64 and linears[-1].out_features == 2


def test_mlp_depends_on_time_and_is_deterministic():
    torch.manual_seed(0)
    net = MLPVelocity(3, hidden=32, depth=2)
    x = torch.randn(6, 3)
    assert not torch.allclose(net(x, torch.zeros(6)), net(x, torch.ones(6)))
    torch.manual_seed(0)
    twin = MLPVelocity(3, hidden=32, depth=2)
    assert torch.equal(net(x, torch.rand(6, generator=torch.Generator().manual_seed(1))),
                       twin(x, torch.rand(6, generator=torch.Generator().manual_seed(1))))


def test_mlp_class_conditioning_and_null_class():
    torch.manual_seed(0)
    net = MLPVelocity(2, hidden=32, depth=2, num_classes=4)
    assert net.null_class == 4 and net.label_embedding.num_embeddings == 5
    x, t = torch.randn(3, 2), torch.rand(3)
    out_a = net(x, t, y=torch.tensor([0, 0, 0]))
    out_b = net(x, t, y=torch.tensor([1, 2, 4]))  # 4 is the null class: allowed
    assert out_a.shape == (3, 2) and not torch.allclose(out_a, out_b)
    assert torch.equal(net(x, t, y=torch.tensor([0, 1, 2]))[0], out_a[0])  # samples do not interact


def test_mlp_continuous_conditioning_and_gradients():
    torch.manual_seed(0)
    net = MLPVelocity(2, hidden=32, depth=2, num_classes=2, cond_dim=3)
    x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, 1])
    c = torch.randn(4, 3)
    out = net(x, t, y=y, c=c)
    assert not torch.allclose(out, net(x, t, y=y, c=c + 1.0))
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_activations(activation):
    assert MLPVelocity(2, hidden=8, depth=1, activation=activation)(torch.randn(2, 2), torch.rand(2)).shape == (2, 2)


def test_mlp_works_in_double_precision():
    net = MLPVelocity(2, hidden=8, depth=1).double()
    assert net(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64)).dtype == torch.float64


def test_mlp_bad_configuration():
    for kwargs in ({"dim": 0}, {"dim": 2, "depth": 0}, {"dim": 2, "hidden": 2.5}, {"dim": 2, "num_classes": -1},
                   {"dim": 2, "activation": "swish"}, {"dim": 2, "time_dim": 1}):
        with pytest.raises(ConfigError):
            MLPVelocity(**kwargs)


def test_mlp_bad_inputs():
    net = MLPVelocity(4, hidden=8, depth=1, num_classes=3, cond_dim=2)
    x, t, y, c = torch.randn(2, 4), torch.rand(2), torch.tensor([0, 1]), torch.randn(2, 2)
    cases = [
        (dict(x=torch.randn(2, 5), t=t, y=y, c=c), ShapeError),
        (dict(x=torch.randn(0, 4), t=torch.rand(0), y=y, c=c), EmptyInputError),
        (dict(x=x.long(), t=t, y=y, c=c), DTypeError),
        (dict(x=x, t=torch.rand(3), y=y, c=c), ShapeError),
        (dict(x=x, t=t, y=None, c=c), ConfigError),
        (dict(x=x, t=t, y=torch.tensor([0, 4]), c=c), ConfigError),
        (dict(x=x, t=t, y=torch.tensor([-1, 0]), c=c), ConfigError),
        (dict(x=x, t=t, y=torch.tensor([0.0, 1.0]), c=c), DTypeError),
        (dict(x=x, t=t, y=torch.tensor([0, 1, 2]), c=c), ShapeError),
        (dict(x=x, t=t, y=y, c=None), ConfigError),
        (dict(x=x, t=t, y=y, c=torch.randn(2, 3)), ShapeError),
    ]
    for kwargs, error in cases:
        with pytest.raises(error) as info:
            net(**kwargs)
        assert isinstance(info.value, FlowzooError)
    plain = MLPVelocity(4, hidden=8, depth=1)
    with pytest.raises(ConfigError):
        plain(x, t, y=y)
    with pytest.raises(ConfigError):
        plain(x, t, c=c)


def test_mlp_forward_is_the_composition_of_its_parts():
    # The conditioning vector is the time features' MLP plus the label embedding plus the projection of c (each
    # only when the net has it), concatenated to x and passed through the body: checked against that composition.
    torch.manual_seed(0)
    x, t, y, c = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 2, 1]), torch.randn(5, 3)
    plain = MLPVelocity(2, hidden=16, depth=2, time_dim=8)
    expected = plain.body(torch.cat([x, plain.time_embedding(t)], dim=1))
    torch.testing.assert_close(plain(x, t), expected, rtol=0, atol=0)
    full = MLPVelocity(2, hidden=16, depth=2, time_dim=8, num_classes=2, cond_dim=3)
    context = full.time_embedding(t) + full.label_embedding(y) + full.cond_projection(c)
    torch.testing.assert_close(full(x, t, y=y, c=c), full.body(torch.cat([x, context], dim=1)), rtol=0, atol=0)


def test_time_embedding_angles_are_scale_times_t_times_each_frequency():
    emb = SinusoidalTimeEmbedding(6, max_period=100.0, scale=10.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    angles = 10.0 * t[:, None] * (100.0 ** (-torch.arange(3, dtype=torch.float64) / 3))[None]
    torch.testing.assert_close(emb(t), torch.cat([angles.cos(), angles.sin()], dim=1))
    assert emb(t).dtype == torch.float64
