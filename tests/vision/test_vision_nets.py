"""flowzoo.vision.nets: the DiT and its flow map (shapes, adaLN-Zero, conditioning, attention paths, forward-mode
AD, learning, bad input) and the GPU options (checkpointing, bf16 autocast, channels_last, compile)."""

from __future__ import annotations

import warnings

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, FlowzooError, ShapeError
from flowzoo.core.fewstep import FlowMapAsVelocity, MeanFlowLoss, flowmap_sample, forward_ad
from flowzoo.core.nets import UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.vision.acceleration import compile_model, to_channels_last
from flowzoo.vision.nets import DIT_PRESETS, DiT, FlowMapDiT, sincos_position_embedding

SMALL = dict(patch=2, hidden=32, depth=2, heads=4)


pytestmark = pytest.mark.usefixtures("one_thread")


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The net with its zero-initialised layers (adaLN-Zero) filled with small random values, so every
    input reaches the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            if not parameter.any():
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return net


def times_for(cls, batch: int) -> tuple[torch.Tensor, ...]:
    return (torch.rand(batch),) if cls is DiT else (torch.rand(batch) * 0.5, 0.5 + torch.rand(batch) * 0.5)


@pytest.mark.parametrize("cls", [DiT, FlowMapDiT])
@pytest.mark.parametrize("in_channels, height, width, patch", [(1, 8, 8, 2), (3, 16, 8, 4), (4, 8, 12, 2)])
def test_output_is_shaped_like_the_input(cls, in_channels, height, width, patch):
    net = randomised(cls(in_channels=in_channels, **{**SMALL, "patch": patch}))
    x = torch.randn(2, in_channels, height, width)
    out = net(x, *times_for(cls, 2))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert net.double()(x.double(), *(t.double() for t in times_for(cls, 2))).dtype == torch.float64


def test_presets_name_the_paper_sizes():
    assert (DIT_PRESETS["dit_s"].hidden, DIT_PRESETS["dit_s"].depth, DIT_PRESETS["dit_s"].heads) == (384, 12, 6)
    assert (DIT_PRESETS["dit_b"].hidden, DIT_PRESETS["dit_b"].heads) == (768, 12)
    net = DiT.preset("dit_tiny/4", in_channels=1, num_classes=10)
    assert (net.patch, net.hidden, len(net.blocks), net.num_classes) == (4, 64, 4, 10)
    assert FlowMapDiT.preset("dit_tiny", patch=2).patch == 2
    # DiT-S/2 on 4 latent channels: 33 M parameters in the paper (Table 1; theirs also predicts a variance).
    assert 32e6 < sum(p.numel() for p in DiT.preset("dit_s/2", in_channels=4).parameters()) < 34e6
    with pytest.raises(ConfigError, match="preset"):
        DiT.preset("dit_xxl")


def test_position_embedding_is_distinct_per_token_and_bounded():
    table = sincos_position_embedding(16, 3, 4)
    assert table.shape == (12, 16) and table.abs().max() <= 1.0
    assert torch.cdist(table, table).add(torch.eye(12)).min() > 0.1  # no two tokens share a position code
    # Row features do not depend on the column and vice versa.
    assert torch.equal(table[0, :8], table[1, :8]) and torch.equal(table[0, 8:], table[4, 8:])


@pytest.mark.parametrize("cls", [DiT, FlowMapDiT])
def test_adaln_zero_starts_at_zero_and_every_block_as_the_identity(cls):
    net = cls(in_channels=1, num_classes=3, **SMALL)
    x = torch.randn(4, 1, 8, 8)
    out = net(x, *times_for(cls, 4), y=torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out, torch.zeros_like(out))
    for block in net.blocks:
        h, c = torch.randn(2, 5, 32), torch.randn(2, 32)
        assert torch.equal(block(h, c), h)
    assert randomised(net)(x, *times_for(cls, 4), y=torch.tensor([0, 1, 2, 3])).abs().max() > 1e-3


def test_time_and_labels_condition_the_output_with_a_null_class():
    net = randomised(DiT(in_channels=1, num_classes=3, **SMALL)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    y = torch.tensor([0, 0])
    assert net.null_class == 3
    assert (net(x, torch.zeros(2), y=y) - net(x, torch.ones(2), y=y)).abs().max() > 1e-3
    assert torch.equal(net(x, 0.5, y=y), net(x, torch.full((2,), 0.5), y=y))
    a, b = net(x, t, y=y), net(x, t, y=torch.tensor([1, 3]))
    # Samples are independent: changing the second label leaves the first output alone.
    assert torch.allclose(a[0], net(x, t, y=torch.tensor([0, 1]))[0], atol=1e-6) and (a - b).abs().max() > 1e-3
    null = net(x, t, y=torch.full((2,), 3))
    assert torch.isfinite(null).all() and (null - a).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="labels y"):
        net(x, t)
    with pytest.raises(DTypeError, match="integer class labels"):
        net(x, t, y=torch.zeros(2))
    with pytest.raises(ConfigError, match="num_classes=0"):
        DiT(in_channels=1, **SMALL)(x, t, y=y)


def test_flow_map_at_s_equal_t_is_its_velocity_and_the_gap_conditions_it():
    net = randomised(FlowMapDiT(in_channels=1, **SMALL)).eval()
    x, s, t = torch.randn(3, 1, 8, 8), torch.rand(3) * 0.5, 0.5 + torch.rand(3) * 0.5
    assert torch.equal(net.velocity(x, t), net(x, t, t))
    assert torch.equal(FlowMapAsVelocity(net)(x, t), net(x, t, t))
    assert (net(x, s, t) - net(x, t, t)).abs().max() > 1e-3
    one_step = flowmap_sample(net, x, steps=1).x
    assert torch.allclose(one_step, x + net(x, torch.zeros(3), torch.ones(3)), atol=1e-6)
    assert integrate(FlowMapAsVelocity(net), x, steps=2, method="euler").x.shape == x.shape


def test_jvp_safe_attention_equals_fused_attention():
    explicit = randomised(DiT(in_channels=3, num_classes=2, jvp_safe=True, **SMALL)).eval()
    fused = DiT(in_channels=3, num_classes=2, jvp_safe=False, **SMALL).eval()
    fused.load_state_dict(explicit.state_dict())
    x, t, y = torch.randn(3, 3, 8, 8), torch.rand(3), torch.tensor([0, 1, 2])
    assert torch.allclose(explicit(x, t, y=y), fused(x, t, y=y), atol=1e-5)


def test_forward_mode_derivative_through_the_flow_map_matches_finite_differences():
    torch.manual_seed(0)
    net = randomised(FlowMapDiT(in_channels=1, num_classes=2, **SMALL)).double().eval()
    x, s = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.rand(2, dtype=torch.float64) * 0.5
    t, y = s + 0.3, torch.tensor([0, 2])
    tangents = (torch.randn_like(x), torch.ones_like(s), torch.zeros_like(t))
    function = lambda x, s, t: net(x, s, t, y=y)  # noqa: E731
    _, tangent = torch.func.jvp(function, (x, s, t), tangents)
    h = 1e-6
    finite = (function(x + h * tangents[0], s + h, t) - function(x - h * tangents[0], s - h, t)) / (2 * h)
    assert tangent.abs().max() > 1e-3 and torch.allclose(tangent, finite, atol=1e-6)
    # The core's lean forward-mode rules (MeanFlow's default) give the same derivative, also through a net
    # built for fused attention: dual tensors take the explicit attention path.
    assert torch.allclose(forward_ad.jvp(function, (x, s, t), tangents)[1], tangent, atol=1e-10)
    fused = FlowMapDiT(in_channels=1, num_classes=2, jvp_safe=False, **SMALL).double().eval()
    fused.load_state_dict(net.state_dict())
    fused_function = lambda x, s, t: fused(x, s, t, y=y)  # noqa: E731
    assert torch.allclose(forward_ad.jvp(fused_function, (x, s, t), tangents)[1], tangent, atol=1e-10)


def test_meanflow_step_runs_through_the_flow_map_dit():
    torch.manual_seed(0)
    net = randomised(FlowMapDiT(in_channels=1, num_classes=3, **SMALL))
    batch = {"x1": torch.randn(8, 1, 8, 8), "x0": torch.randn(8, 1, 8, 8), "y": torch.randint(0, 3, (8,))}
    loss, metrics = MeanFlowLoss(cond_dropout=0.2, null_cond={"y": 3})(net, batch,
                                                                     generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and metrics["distinct"] > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    # The JVP target and MeanFlow's finite-difference target (step 5e-3) give nearly the same loss.
    losses = [MeanFlowLoss(derivative=d, adaptive_p=0.0)(net, batch, generator=torch.Generator().manual_seed(1))[0]
              .item() for d in ("jvp", "finite_difference")]
    assert abs(losses[0] - losses[1]) < 1e-2 * losses[0]


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = randomised(DiT(in_channels=1, num_classes=2, **SMALL))
    checkpointed = DiT(in_channels=1, num_classes=2, gradient_checkpointing=True, **SMALL)
    checkpointed.load_state_dict(plain.state_dict())
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 0])
    for net in (plain, checkpointed):
        net(x, t, y=y).square().mean().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize("net", [randomised(DiT(in_channels=1, num_classes=2, **SMALL)),
                                 UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16,
                                      num_classes=2)], ids=["dit", "unet"])
def test_bf16_autocast_forward_runs_close_to_float32(net):
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 2])
    reference = net(x, t, y=y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, t, y=y)
    assert torch.isfinite(low).all()
    assert (low.float() - reference).norm() < 0.1 * reference.norm()


def test_channels_last_converts_the_unet_and_its_inputs_without_changing_results():
    net = UNet(in_channels=3, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    reference = net(x, t)
    fast, x_last = to_channels_last(net), to_channels_last(x)
    assert x_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(x_last, x)
    assert fast.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x_last, t), reference, atol=1e-5)
    assert to_channels_last(t) is t
    with pytest.raises(ConfigError, match="nn.Module or a tensor"):
        to_channels_last([x])


def test_compile_wraps_the_model_and_falls_back_with_a_warning():
    net = randomised(DiT(in_channels=1, **SMALL)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    compiled = compile_model(net, backend="eager")
    assert torch.allclose(compiled(x, t), net(x, t), atol=1e-6) and compiled.failure is None
    assert list(compiled.state_dict()) == ["model." + k for k in net.state_dict()]

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    failing = compile_model(net, backend=broken_backend)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = failing(x, t)
    assert torch.equal(out, net(x, t)) and "no compiler here" in failing.failure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        failing(x, t)  # warned once; eager from now on
    with pytest.raises(ShapeError, match="multiples of the patch"):
        compiled(torch.randn(2, 1, 7, 8), t)
    with pytest.raises(ConfigError, match="nn.Module"):
        compile_model(lambda x: x)


@pytest.mark.parametrize("x, error, message", [
    (torch.randn(2, 1, 8, 7), ShapeError, "multiples of the patch 2"),
    (torch.randn(2, 3, 8, 8), ShapeError, "in_channels=3"),
    (torch.randn(2, 1, 1, 8, 8), ShapeError, r"\(B, 1, H, W\)"),
    (torch.randn(2, 1, 8), ShapeError, "at least 4"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.long), DTypeError, "floating"),
])
def test_bad_images_are_refused_with_the_fix(x, error, message):
    with pytest.raises(error, match=message):
        DiT(in_channels=1, **SMALL)(x, torch.rand(2))


def test_bad_labels_and_times_are_refused():
    net, x = DiT(in_channels=1, num_classes=3, **SMALL), torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"labels in \[0, 3\]"):
        net(x, torch.rand(2), y=torch.tensor([0, 4]))
    with pytest.raises(ConfigError, match=r"labels in \[0, 3\]"):
        net(x, torch.rand(2), y=torch.tensor([-1, 0]))
    with pytest.raises(ShapeError, match="one label per sample"):
        net(x, torch.rand(2), y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ShapeError, match="one t per image"):
        net(x, torch.rand(3), y=torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="one s per image"):
        FlowMapDiT(in_channels=1, **SMALL)(x, torch.rand(2, 1), torch.rand(2))


@pytest.mark.parametrize("options, message", [
    (dict(hidden=30), "divisible by 4"),
    (dict(heads=3), "by heads"),
    (dict(patch=0), "patch"),
    (dict(depth=0), "depth"),
    (dict(num_classes=-1), "num_classes"),
    (dict(mlp_ratio=0.0), "mlp_ratio"),
    (dict(time_scale=0.0), "time_scale"),
    (dict(jvp_safe="yes"), "jvp_safe"),
])
def test_bad_configurations_are_refused(options, message):
    with pytest.raises(FlowzooError, match=message) as info:
        DiT(**{"in_channels": 1, **SMALL, **options})
    assert "Fix:" in str(info.value) or "fix" in str(info.value).lower()


def test_a_tiny_class_conditional_dit_memorises_eight_images():
    # Eight random binary 8x8 images, one per class. After training, Euler samples of class k must land on
    # image k: a net that ignores its labels lands near the mean image (squared error about 0.9 per pixel), one
    # that ignores time or position cannot fit the images at all.
    torch.manual_seed(0)
    images = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float() * 2 - 1
    labels = torch.arange(8)
    net = DiT(in_channels=1, patch=2, hidden=64, depth=2, heads=4, num_classes=8)
    objective, optimizer = FlowMatchingLoss(), torch.optim.Adam(net.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        optimizer.zero_grad()
        loss, _ = objective(net, {"x1": images.repeat(4, 1, 1, 1), "y": labels.repeat(4)}, generator=generator)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        noise, wanted = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3)), labels.repeat(2)
        samples = integrate(net.eval(), noise, steps=20, method="euler", cond={"y": wanted}).x
    error = (samples - images[wanted]).square().flatten(1).mean(1)
    nearest = torch.cdist(samples.flatten(1), images.flatten(1)).argmin(1)
    assert error.mean() < 0.1 and torch.equal(nearest, wanted), (error, nearest)
