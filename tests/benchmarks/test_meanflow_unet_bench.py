"""benchmarks/meanflow_unet_step.py and its U-Net (flowzoo.core.nets.FlowMapUNet): every row runs, the targets
agree; no timing is asserted."""

from __future__ import annotations

import json
import math

import torch

from benchmarks import meanflow_unet_step as bench
from benchmarks.meanflow_unet_step import tiny_unet
from flowzoo.core.fewstep import forward_ad
from flowzoo.core.nets import FlowMapUNet


def test_unet_shapes_velocity_and_size():
    net = tiny_unet()
    x, s, t = torch.randn(3, 3, 8, 8), torch.rand(3), torch.rand(3)
    assert net(x, s, t).shape == x.shape
    assert torch.equal(net.velocity(x, t), net(x, t, t))
    assert not torch.allclose(net(x, s, t), net(x, t, t))  # the gap t - s conditions the output
    # torchcfm's CIFAR configuration has 35.7 M parameters; ours adds the gap embedding.
    assert 35e6 < sum(p.numel() for p in FlowMapUNet.cifar10().parameters()) < 37e6
    assert isinstance(tiny_unet(), FlowMapUNet)


def test_unet_jvp_matches_finite_difference():
    torch.manual_seed(0)
    net = tiny_unet().double()
    x, s = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, dtype=torch.float64) * 0.5
    t = s + 0.3
    tangents = (torch.randn_like(x), torch.ones_like(s), torch.zeros_like(t))
    _, tangent = forward_ad.jvp(net, (x, s, t), tangents)
    h = 1e-6
    up = net(x + h * tangents[0], s + h, t)
    down = net(x - h * tangents[0], s - h, t)
    assert torch.allclose(tangent, (up - down) / (2 * h), atol=1e-6)


def test_benchmark_runs_every_row_on_tiny_size(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert bench.main(["--size", "tiny", "--steps", "1", "--warmup", "0", "--batch", "4", "--device", "cpu",
                       "--json", str(out)]) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    names = [row["name"] for row in data["rows"]]
    expected = [v.name for v in bench.VARIANTS if not v.bf16 and v.objective != "torchcfm-fm"]
    assert names == expected
    assert all(math.isfinite(row["median_ms"]) and row["median_ms"] > 0 for row in data["rows"])
    assert all(math.isfinite(row["loss"]) for row in data["rows"])
    assert data["agreement"]["lean_vs_generic"] < 1e-5
    assert data["agreement"]["fd_vs_jvp"] < 1e-2
    assert "| meanflow jvp, 75% s<t |" in table and "ratio to its FM step" in table
    # The generic-dual-tensor row asks its own loss for PyTorch's forward-AD rules; no class-wide switch.
    generic = next(v for v in bench.VARIANTS if not v.lean)
    assert generic.build("tiny")[1].lean_forward_ad is False
