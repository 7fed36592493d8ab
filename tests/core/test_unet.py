"""flowzoo.core.nets.unet: shapes, time and label conditioning, the flow-map variant, learning, bad input."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, FlowzooError, ShapeError
from flowzoo.core.fewstep import FlowMapAsVelocity, flowmap_sample
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate

SMALL = dict(channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)


@pytest.mark.parametrize("cls", [UNet, FlowMapUNet])
@pytest.mark.parametrize("in_channels, size, multipliers", [(1, 8, (1, 2)), (3, 8, (1, 2, 2)), (2, 6, (1,))])
def test_output_is_shaped_like_the_input(cls, in_channels, size, multipliers):
    net = cls(in_channels=in_channels, channels=8, multipliers=multipliers, res_blocks=1,
              attention_levels=(len(multipliers) - 1,), head_channels=8)
    x = torch.randn(2, in_channels, size, size + 4 * (len(multipliers) - 1))  # non-square images too
    times = (torch.rand(2),) if cls is UNet else (torch.rand(2), torch.rand(2))
    out = net(x, *times)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    if in_channels == 1:
        assert net.double()(x.double(), *(t.double() for t in times)).dtype == torch.float64


def test_cifar10_configuration_is_torchcfms_size():
    # torchcfm's UNetModel at its CIFAR-10 settings has 35.7 M parameters; the flow map adds a second time MLP.
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    velocity, flowmap = UNet.cifar10(), FlowMapUNet.cifar10()
    assert 35.5e6 < count(velocity) < 36.0e6
    assert count(flowmap) - count(velocity) == sum(p.numel() for p in flowmap.gap_embed.parameters())


def test_time_conditioning_changes_the_output_and_numbers_broadcast():
    net = UNet(in_channels=1, **SMALL).eval()
    x = torch.randn(2, 1, 8, 8)
    early, late = net(x, torch.zeros(2)), net(x, torch.ones(2))
    assert (early - late).abs().max() > 1e-3
    assert torch.equal(net(x, 0.5), net(x, torch.full((2,), 0.5)))
    assert torch.equal(net(x, torch.tensor(0.5)), net(x, 0.5))


def test_flow_map_at_s_equal_t_is_its_velocity_and_the_gap_conditions_it():
    net = FlowMapUNet(in_channels=1, **SMALL).eval()
    x, s, t = torch.randn(3, 1, 8, 8), torch.rand(3) * 0.5, 0.5 + torch.rand(3) * 0.5
    assert torch.equal(net.velocity(x, t), net(x, t, t))
    assert torch.equal(FlowMapAsVelocity(net)(x, t), net(x, t, t))
    assert (net(x, s, t) - net(x, t, t)).abs().max() > 1e-3  # t - s enters through its own embedding
    # One jump of the flow map is x + (t - s) u(x, s, t) (flowzoo's two-time convention).
    one_step = flowmap_sample(net, x, steps=1).x
    assert torch.allclose(one_step, x + net(x, torch.zeros(3), torch.ones(3)), atol=1e-6)
    # At s = t the flow map is a velocity field an ODE solver can integrate.
    assert integrate(FlowMapAsVelocity(net), x, steps=2, method="euler").x.shape == x.shape


def test_labels_condition_the_output_with_a_null_class():
    net = UNet(in_channels=1, num_classes=3, **SMALL).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert net.null_class == 3
    a, b = net(x, t, y=torch.tensor([0, 0])), net(x, t, y=torch.tensor([1, 3]))
    assert torch.equal(a[0], net(x, t, y=torch.tensor([0, 1]))[0]) and (a - b).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="labels y"):
        net(x, t)
    with pytest.raises(DTypeError, match="integer class labels"):
        net(x, t, y=torch.zeros(2))
    with pytest.raises(ShapeError, match="one label per sample"):
        net(x, t, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="num_classes=0"):
        UNet(in_channels=1, **SMALL)(x, t, y=torch.tensor([0, 1]))


def test_a_tiny_unet_overfits_four_images():
    # One thread: a net this small gains nothing from two, and a loaded machine slows two threads badly.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _overfit_four_images()
    finally:
        torch.set_num_threads(threads)


def _overfit_four_images():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    net = UNet(in_channels=1, **SMALL)
    objective = FlowMatchingLoss()

    def held_out_loss() -> float:  # the same noise and times before and after training
        with torch.no_grad():
            batch = {"x1": images.repeat(8, 1, 1, 1)}
            return float(objective(net, batch, generator=torch.Generator().manual_seed(7))[0])

    before = held_out_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        optimizer.zero_grad()
        loss, _ = objective(net, {"x1": images.repeat(4, 1, 1, 1)}, generator=generator)
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    # At initialisation the loss is about E|x1 - x0|^2 (1.33 here); fitting four images lowers it well below.
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("x, error, message", [
    (torch.randn(2, 1, 8), ShapeError, "at least 4"),
    (torch.randn(2, 3, 8, 8), ShapeError, "in_channels=3"),
    (torch.randn(2, 1, 8, 6), ShapeError, "multiples of 4"),
    (torch.randn(2, 1, 1, 8, 8), ShapeError, r"\(B, 1, H, W\)"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.long), DTypeError, "floating"),
    ([[0.0]], DTypeError, "torch.Tensor"),
])
def test_bad_images_are_refused_with_the_fix(x, error, message):
    net = UNet(in_channels=1, channels=8, multipliers=(1, 2, 2), res_blocks=1, head_channels=8)
    with pytest.raises(error, match=message):
        net(x, torch.rand(2))


def test_bad_times_are_refused():
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ShapeError, match="one t per image"):
        UNet(in_channels=1, **SMALL)(x, torch.rand(3))
    with pytest.raises(ShapeError, match="one s per image"):
        FlowMapUNet(in_channels=1, **SMALL)(x, torch.rand(2, 1), torch.rand(2))


@pytest.mark.parametrize("options, message", [
    (dict(multipliers=()), "non-empty sequence"),
    (dict(multipliers=(1, 0)), "each multiplier"),
    (dict(attention_levels=(2,)), "attention_levels"),
    (dict(channels=1), "channels"),
    (dict(res_blocks=True), "res_blocks"),
    (dict(dropout=1.5), "dropout"),
    (dict(num_classes=-1), "num_classes"),
    (dict(time_scale=0.0), "time_scale"),
])
def test_bad_configurations_are_refused(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        UNet(**{**dict(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16), **options})
    assert isinstance(info.value, FlowzooError) and "Fix:" in str(info.value)
