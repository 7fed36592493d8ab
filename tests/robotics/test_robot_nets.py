"""Policy networks: encoders, the conditional 1-D U-Net in both call forms, recorded features, bad input."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import forward_ad as fwAD

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.robotics.nets import ConditionalUnet1D, ObservationEncoder, PointCloudEncoder, StateEncoder

torch.set_num_threads(1)


def test_point_encoder_pools_the_same_with_and_without_autograd():
    """Inference pools with amax (no argmax), training with max (its backward): the features must be identical."""
    torch.manual_seed(0)
    enc = PointCloudEncoder(out_dim=16)
    points = torch.randn(3, 40, 3)
    with torch.no_grad():
        inference = enc(points)
    training = enc(points)
    assert training.requires_grad and torch.equal(inference, training.detach())


def test_point_encoder_is_permutation_and_duplicate_invariant():
    torch.manual_seed(0)
    enc = PointCloudEncoder(out_dim=16)
    cloud = torch.randn(2, 50, 3)
    out = enc(cloud)
    assert out.shape == (2, 16)
    shuffled = cloud[:, torch.randperm(50)]
    doubled = torch.cat([cloud, cloud[:, :10]], dim=1)  # max-pooling ignores repeated points
    assert torch.allclose(enc(shuffled), out, atol=1e-6)
    assert torch.allclose(enc(doubled), out, atol=1e-6)
    # the final LayerNorm (no affine change at init) centres and scales each feature vector
    assert torch.allclose(out.mean(1), torch.zeros(2), atol=1e-5)


def test_observation_encoder_flattens_history_and_keys():
    torch.manual_seed(0)
    enc = ObservationEncoder({"point_cloud": (32, 3), "agent_pos": (4,)}, n_obs_steps=2, point_dim=16, state_dim=8)
    assert enc.out_dim == 2 * (16 + 8)
    obs = {"point_cloud": torch.randn(3, 2, 32, 3), "agent_pos": torch.randn(3, 2, 4)}
    features = enc(obs)
    assert features.shape == (3, 48)
    # step 0 of sample 0 is encoded independently of step 1 and of the other samples (sorted keys: agent_pos first)
    alone = torch.cat([enc.encoders["agent_pos"](obs["agent_pos"][0, 0]),
                       enc.encoders["point_cloud"](obs["point_cloud"][0, :1])[0]])
    assert torch.allclose(features[0, :24], alone, atol=1e-6)
    with pytest.raises(ShapeError, match="agent_pos"):
        enc({"point_cloud": obs["point_cloud"], "agent_pos": torch.randn(3, 1, 4)})
    with pytest.raises(ShapeError, match="keys"):
        enc({"agent_pos": obs["agent_pos"]})
    with pytest.raises(ConfigError):
        ObservationEncoder({"image": (3, 8, 8)})
    assert StateEncoder(5, 7)(torch.randn(4, 5)).shape == (4, 7)


@pytest.mark.parametrize("horizon", [1, 3, 4, 8])
def test_unet_shapes_for_tiny_horizons_and_both_call_forms(horizon):
    torch.manual_seed(0)
    net = ConditionalUnet1D(4, global_cond_dim=10, down_dims=(16, 32, 64), time_dim=16)
    x, g = torch.randn(3, horizon, 4), torch.randn(3, 10)
    velocity = net(x, torch.rand(3), cond=g)
    average = net(x, torch.zeros(3), torch.ones(3), cond=g)
    assert velocity.shape == average.shape == x.shape
    padded = -(-horizon // 4) * 4
    assert [tuple(f.shape) for f in net.last_features] == [(3, 16, padded), (3, 32, padded // 2)]
    assert net.last_mid_features.shape == (3, 64, padded // 4)


def test_unet_samples_are_independent_and_conditioning_matters():
    torch.manual_seed(0)
    net = ConditionalUnet1D(2, global_cond_dim=6, down_dims=(16, 32), time_dim=16)
    x, g, t = torch.randn(4, 4, 2), torch.randn(4, 6), torch.rand(4)
    full = net(x, t, cond=g)
    single = net(x[2:3], t[2:3], cond=g[2:3])
    assert torch.allclose(full[2:3], single, atol=1e-5)  # GroupNorm normalises per sample
    other = net(x, t, cond=g + 1.0)
    assert (other - full).abs().max() > 1e-3
    later = net(x, t, t + 0.3, cond=g)
    assert (later - net(x, t, t, cond=g)).abs().max() > 1e-4  # the gap embedding reaches the output


def test_unet_gradients_reach_condition_and_forward_mode_matches_finite_difference():
    torch.manual_seed(0)
    net = ConditionalUnet1D(2, global_cond_dim=6, down_dims=(16, 32), time_dim=16, time_scale=1.0).double()
    x, g = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    s, t = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64), torch.tensor([0.6, 0.3, 0.9], dtype=torch.float64)
    net(x, s, t, cond=g).square().sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0
    v = torch.randn_like(x)
    with fwAD.dual_level():
        out = net(fwAD.make_dual(x, v), fwAD.make_dual(s, torch.ones_like(s)), fwAD.make_dual(t, torch.zeros_like(t)),
                  cond=g.detach())
        tangent = fwAD.unpack_dual(out).tangent
    eps = 1e-6
    fd = (net(x + eps * v, s + eps, t, cond=g.detach()) - net(x - eps * v, s - eps, t, cond=g.detach())) / (2 * eps)
    assert torch.allclose(tangent, fd, atol=1e-6)


def test_unet_bad_input():
    net = ConditionalUnet1D(2, global_cond_dim=6, down_dims=(16, 32), time_dim=16)
    with pytest.raises(ShapeError, match="action chunk"):
        net(torch.randn(3, 4, 3), torch.rand(3), cond=torch.randn(3, 6))
    with pytest.raises(ShapeError, match="cond"):
        net(torch.randn(3, 4, 2), torch.rand(3), cond=torch.randn(3, 5))
    with pytest.raises(ShapeError, match="time"):
        net(torch.randn(3, 4, 2), torch.rand(2), cond=torch.randn(3, 6))
    with pytest.raises(ConfigError, match="n_groups"):
        ConditionalUnet1D(2, down_dims=(12, 32))
    with pytest.raises(ConfigError, match="odd kernel_size"):
        ConditionalUnet1D(2, kernel_size=4)
    with pytest.raises(ConfigError, match="down_dims"):
        ConditionalUnet1D(2, down_dims=())
