"""Lean forward-mode AD (flowzoo.core.fewstep.forward_ad): same derivative as PyTorch's, with fewer convolutions."""

import pytest
import torch
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.profiler import ProfilerActivity, profile

from flowzoo.core.fewstep import forward_ad
from flowzoo.core.fewstep import TwoTimeSampler
from flowzoo.core.fewstep import padded_gap_index
from flowzoo.core.fewstep import MeanFlowLoss


class ConvFlowMap(nn.Module):
    """Every layer kind the lean rules cover, plus ones they leave alone (SiLU, Mish, LayerNorm, attention)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.time = nn.Linear(2, channels)
        self.stem = nn.Conv2d(2, channels, 3, padding=1)
        self.norm = nn.GroupNorm(2, channels)
        self.plain_norm = nn.GroupNorm(4, channels, affine=False)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.mix = nn.Conv1d(channels, channels, 1, bias=False)
        self.layer_norm = nn.LayerNorm(channels)
        self.out = nn.Conv2d(channels, 2, 3, padding=1)

    def forward(self, x, s, t):
        emb = self.time(torch.stack([s, t - s], dim=1))[:, :, None, None]
        h = nn.functional.silu(self.norm(self.stem(x) + emb))
        h = self.up(nn.functional.mish(self.down(h))) + h
        b, c, height, width = h.shape
        flat = self.mix(self.plain_norm(h).reshape(b, c, -1))
        attention = torch.softmax(torch.einsum("bci,bcj->bij", flat, flat) / c, dim=-1)
        flat = torch.einsum("bij,bcj->bci", attention, flat)
        h = h + self.layer_norm(flat.transpose(1, 2)).transpose(1, 2).reshape(b, c, height, width)
        return self.out(h)


def _inputs(dtype=torch.float64, batch=3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 2, 8, 8, generator=generator, dtype=dtype)
    s = torch.rand(batch, generator=generator, dtype=dtype) * 0.5
    t = s + 0.5 * torch.rand(batch, generator=generator, dtype=dtype)
    tangents = (torch.randn(x.shape, generator=generator, dtype=dtype), torch.ones_like(s), torch.zeros_like(t))
    return (x, s, t), tangents


def test_lean_jvp_equals_pytorch_forward_mode():
    torch.manual_seed(0)
    net = ConvFlowMap().double()
    primals, tangents = _inputs()
    out, tangent = forward_ad.jvp(net, primals, tangents)
    ref_out, ref_tangent = torch.func.jvp(net, primals, tangents)
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(tangent, ref_tangent, atol=1e-10)
    # ... and both are the derivative: a central difference along the tangent agrees to O(h^2).
    h = 1e-5
    up = net(*(p + h * d for p, d in zip(primals, tangents)))
    down = net(*(p - h * d for p, d in zip(primals, tangents)))
    assert torch.allclose(tangent, (up - down) / (2 * h), atol=1e-6)


def test_lean_rules_step_aside_when_weights_carry_a_tangent():
    """A JVP with respect to the parameters (weights dual) must use PyTorch's full rules, not the lean ones."""
    torch.manual_seed(1)
    net = ConvFlowMap().double()
    primals, _ = _inputs()
    params = dict(net.named_parameters())
    directions = {k: torch.randn_like(v) for k, v in params.items()}

    def of_params(p):
        return torch.func.functional_call(net, p, primals)

    reference = torch.func.jvp(of_params, (params,), (directions,))[1]
    with fwAD.dual_level(), forward_ad.LeanForwardAD():
        dual = {k: fwAD.make_dual(v.detach(), directions[k]) for k, v in params.items()}
        lean = fwAD.unpack_dual(of_params(dual)).tangent
    assert torch.allclose(lean, reference, atol=1e-10)


def _convolutions(run) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::convolution")


def test_each_convolution_runs_twice_not_three_times():
    """The lean rule's point: primal + input tangent per convolution; generic forward AD also convolves the
    weight's zero tangent. A lean mode that fell back to the generic rule would fail the first assertion."""
    net = ConvFlowMap()
    primals, tangents = _inputs(torch.float32)
    layers = sum(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())
    with torch.no_grad():
        plain = _convolutions(lambda: net(*primals))
        lean = _convolutions(lambda: forward_ad.jvp(net, primals, tangents))
        generic = _convolutions(lambda: torch.func.jvp(net, primals, tangents))
    assert plain == layers
    assert lean == 2 * layers
    assert generic >= lean


def test_tangent_that_does_not_reach_the_output_is_zero():
    out, tangent = forward_ad.jvp(lambda x, y: x * 2, (torch.ones(3), torch.ones(3)), (torch.zeros(3), torch.ones(3)))
    assert torch.equal(tangent, torch.zeros(3))
    out, tangent = forward_ad.jvp(lambda x: torch.ones(2), (torch.ones(3),), (torch.ones(3),))
    assert torch.equal(tangent, torch.zeros(2))


def test_meanflow_target_same_with_lean_and_generic_forward_mode():
    torch.manual_seed(2)
    net = ConvFlowMap().double()
    (x, s, t), (v, _, _) = _inputs()
    lean = MeanFlowLoss().target(net, x, s, t, v)
    generic = MeanFlowLoss(lean_forward_ad=False).target(net, x, s, t, v)
    assert torch.allclose(lean, generic, atol=1e-10)


@pytest.mark.parametrize("distinct", [0.0, 0.1, 0.5, 1.0])
def test_padded_gap_index_covers_every_gap_in_multiples_of_eight(distinct):
    s, t = TwoTimeSampler(distinct_fraction=distinct).sample(37, generator=torch.Generator().manual_seed(3))
    gap = t > s
    index = padded_gap_index(gap)
    assert set(gap.nonzero()[:, 0].tolist()) <= set(index.tolist())
    assert len(set(index.tolist())) == index.numel()
    assert index.numel() == min(37, -(-int(gap.sum()) // 8) * 8)


def test_meanflow_loss_on_padded_subset_equals_whole_batch_target():
    """Padding the derivative pass with s = t samples leaves the loss unchanged: their target is v either way."""
    torch.manual_seed(4)
    net = ConvFlowMap().double()
    loss = MeanFlowLoss(time_sampler=TwoTimeSampler(distinct_fraction=0.3))
    (x, _, _), (v, _, _) = _inputs(batch=13)
    s, t = loss.time_sampler.sample(13, generator=torch.Generator().manual_seed(5))
    s, t = s.double(), t.double()
    subset = loss._target_on_gaps(net, x, s, t, v, {}, None, subset=True)
    whole = loss._target_on_gaps(net, x, s, t, v, {}, None, subset=False)
    assert torch.allclose(subset, whole, atol=1e-10)
