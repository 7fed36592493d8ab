"""Blockwise Flow Matching (flowzoo.vision.blockwise, flowzoo.vision.blockwise_nets): routing by time, the K = 1
identity with FlowMatchingLoss, per-segment gradients, the feature alignment loss, FLOPs, learning, bad input."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.vision.blockwise import (BlockwiseFlowMatchingLoss, FeatureResidualLoss, blockwise_sample,
                                      flops_per_sample, segment_grid, segment_split)
from flowzoo.vision.blockwise_nets import BlockwiseVelocity, check_boundaries, segment_index
from flowzoo.vision.datasets import load_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(**options) -> BlockwiseVelocity:
    settings = dict(patch=2, hidden=32, heads=2, segments=2, block_depth=1)
    settings.update(options)
    return BlockwiseVelocity(1, 8, **settings)


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # adaLN-Zero makes every block the identity at initialisation; random weights make the blocks differ.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return net


def test_segment_index_puts_each_boundary_in_the_segment_it_opens():
    edges = (0.0, 0.3, 0.7, 1.0)
    t = torch.tensor([0.0, 0.2999, 0.3, 0.69, 0.7, 0.99, 1.0])
    assert segment_index(t, edges).tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_routing_by_t_runs_the_block_of_the_segment_at_a_boundary():
    net = _randomise(_net(segments=[0.0, 0.3, 1.0])).eval()
    x = torch.randn(1, 1, 8, 8)
    for t, k in [(0.0, 0), (0.2999, 0), (0.3, 1), (1.0, 1)]:
        tt = torch.full((1,), t)
        own = [net.velocity(x, net.condition(x, tt, None), j) for j in range(2)]
        out = net(x, tt)
        assert torch.allclose(out, own[k], atol=1e-6)
        assert not torch.allclose(out, own[1 - k], atol=1e-3)


def test_a_mixed_batch_routes_every_row_like_a_batch_of_one():
    net = _randomise(_net(segments=4, feature_dim=6, feature_depth=1)).eval()
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([0.9, 0.1, 0.5, 0.3, 0.74])
    rows = torch.cat([net(x[i:i + 1], t[i:i + 1]) for i in range(5)])
    assert torch.allclose(net(x, t), rows, rtol=1e-4, atol=1e-4)


def test_one_segment_reduces_to_flow_matching_loss_draw_for_draw():
    net = _randomise(_net(segments=1, block_depth=2, num_classes=3))
    batch = {"x1": torch.randn(6, 1, 8, 8), "y": torch.tensor([0, 1, 2, 0, 1, 2])}
    losses, grads = [], []
    for objective in (BlockwiseFlowMatchingLoss(cond_dropout=0.2, null_cond={"y": 3}),
                      FlowMatchingLoss(cond_dropout=0.2, null_cond={"y": 3})):
        net.zero_grad()
        loss, _ = objective(net, batch, generator=torch.Generator().manual_seed(7))
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_times_are_drawn_inside_each_segment_in_equal_shares():
    assert segment_split(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    seen = []
    net = _net(segments=[0.0, 0.2, 1.0])

    def spy(x, t, **_):
        seen.append(t.clone())
        return net(x, t)
    spy.boundaries = net.boundaries
    BlockwiseFlowMatchingLoss()(spy, {"x1": torch.randn(40, 1, 8, 8)})
    t = seen[0]
    assert bool((t[:20] >= 0).all() and (t[:20] < 0.2).all() and (t[20:] >= 0.2).all() and (t[20:] <= 1).all())


def test_a_segment_loss_trains_only_its_block_and_the_shared_parts():
    net = _randomise(_net(segments=4, block_depth=1, feature_dim=6, feature_depth=1))
    x1, x0, t = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.full((3,), 0.6)   # segment 2
    x_t = (1 - 0.6) * x0 + 0.6 * x1
    ((net(x_t, t) - (x1 - x0)) ** 2).mean().backward()
    touched = [any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in block.parameters())
               for block in net.blocks]
    assert touched == [False, False, True, False]
    for shared in (net.patchify, net.time_embed, net.final, net.feature_blocks):
        assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in shared.parameters())


class _FixedFeatures(torch.nn.Module):
    """A stand-in net that returns zero velocity and the features it is told to."""

    boundaries, feature_dim = (0.0, 1.0), 4

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    def forward(self, x, t, return_features=False):
        return torch.zeros_like(x), self.features


@pytest.mark.parametrize("make, zero", [(lambda f: f, True), (lambda f: 3.0 * f, True),
                                        (lambda f: f + 0.5 * torch.randn(f.shape), False),
                                        (lambda f: -f, False)])
def test_the_feature_loss_is_zero_iff_the_head_predicts_the_target_features(make, zero):
    x1 = torch.randn(5, 1, 8, 8)
    representation = lambda images: images.flatten(1)[:, :4]   # noqa: E731
    objective = BlockwiseFlowMatchingLoss(representation=representation, feature_weight=1.0)
    _, metrics = objective(_FixedFeatures(make(representation(x1))), {"x1": x1, "x0": torch.zeros_like(x1)})
    # Cosine alignment: zero for the target features and any positive multiple of them (the paper's REPA loss).
    assert (metrics["feature"] == pytest.approx(0.0, abs=1e-6)) is zero
    assert metrics["loss"] == pytest.approx(metrics["fm"] + metrics["feature"])
    if make(torch.ones(1)).item() == -1.0:
        assert metrics["feature"] == pytest.approx(2.0)


def test_flops_count_one_block_per_evaluation():
    def flops(**options):
        return flops_per_sample(_net(**options), (1, 8, 8))
    layer = flops(segments=1, block_depth=2) - flops(segments=1, block_depth=1)
    assert layer > 0
    assert flops(segments=4, block_depth=2) == pytest.approx(flops(segments=1, block_depth=2))
    assert flops(segments=1, block_depth=8) == pytest.approx(flops(segments=4, block_depth=2) + 6 * layer)


def test_bfm_costs_at_most_0_7_of_the_monolithic_flops_at_the_benchmark_sizes():
    from benchmarks.vision_bfm import VARIANTS, build_net

    mono = flops_per_sample(build_net("monolithic", (1, 28, 28), 10, 128), (1, 28, 28), cond={"y": torch.zeros(1).long()})
    for name in ("bfm_k2", "bfm_k4", "bfm_k4_sfg", "bfm_k4_sfg_fra"):
        net = build_net(name, (1, 28, 28), 10, 128)
        cost = flops_per_sample(net, (1, 28, 28), steps=20, residual=VARIANTS[name].residual)
        assert cost <= 0.7 * mono, name


def test_the_residual_approximation_runs_the_alignment_network_once_per_segment():
    net = _randomise(_net(segments=4, feature_dim=6, feature_depth=1, residual_depth=1)).eval()
    x = torch.randn(2, 1, 8, 8)
    full = blockwise_sample(net, x, steps=8)
    approx = blockwise_sample(net, x, steps=8, residual=True)
    assert (full.extras["feature_evals"], full.extras["residual_evals"]) == (8, 0)
    assert (approx.extras["feature_evals"], approx.extras["residual_evals"]) == (4, 4)
    assert full.nfe == approx.nfe == 8 and full.extras["segment_steps"] == [2, 2, 2, 2]
    one_step = blockwise_sample(net, x, steps=4, residual=True)   # one step per segment: no residual call
    assert torch.allclose(one_step.x, blockwise_sample(net, x, steps=4).x, atol=1e-5)


def test_the_sampler_is_euler_and_heun_over_a_grid_holding_the_boundaries():
    net = _randomise(_net(segments=2, num_classes=2)).eval()
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    ours = blockwise_sample(net, x, steps=4, cond={"y": y})
    assert torch.allclose(ours.x, integrate(net, x, steps=4, cond={"y": y}).x, atol=1e-5)
    single = _randomise(_net(segments=1))
    heun = blockwise_sample(single, x, steps=3, method="heun")
    assert heun.nfe == 6 and torch.allclose(heun.x, integrate(single, x, steps=3, method="heun").x, atol=1e-5)
    grid = segment_grid([0.0, 0.1, 1.0], 10)
    assert grid[1].item() == pytest.approx(0.1) and len(grid) == 11
    assert segment_grid([0.0, 0.5, 1.0], time_grid=[0.0, 1.0]).tolist() == [0.0, 0.5, 1.0]


def test_feature_residual_training_fits_the_alignment_features():
    torch.manual_seed(0)
    net = _randomise(_net(segments=2, feature_dim=6, feature_depth=2, residual_depth=1), seed=1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    objective, batch = FeatureResidualLoss(), {"x1": torch.randn(16, 1, 8, 8)}
    opt = torch.optim.Adam(net.residual_parameters(), lr=3e-3)
    first = objective(net, batch, generator=torch.Generator().manual_seed(0))[0].item()
    for step in range(60):
        loss, _ = objective(net, batch, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert objective(net, batch, generator=torch.Generator().manual_seed(0))[0].item() < 0.5 * first


def test_a_tiny_bfm_overfits_a_handful_of_digits():
    torch.manual_seed(0)
    data = load_images("digits", split="train")
    picks = torch.stack([torch.nonzero(data.labels == c)[0, 0] for c in range(4)])
    images, labels = data.images[picks], data.labels[picks]
    net = BlockwiseVelocity(1, 8, patch=2, hidden=32, heads=2, segments=2, block_depth=2, feature_dim=8,
                            feature_depth=1, num_classes=4)
    representation = lambda x: x.flatten(1)[:, ::8]   # noqa: E731 - a fixed stand-in for a feature network
    objective = BlockwiseFlowMatchingLoss(representation=representation, feature_weight=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    batch = {"x1": images.repeat(8, 1, 1, 1), "y": labels.repeat(8)}
    for _ in range(200):
        loss, metrics = objective(net, batch, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    noise = torch.randn(16, 1, 8, 8, generator=gen)
    samples = blockwise_sample(net, noise, steps=20, cond={"y": labels.repeat(4)}).x
    errors = ((samples - images.repeat(4, 1, 1, 1)) ** 2).flatten(1).mean(1)
    others = ((samples - images.roll(1, 0).repeat(4, 1, 1, 1)) ** 2).flatten(1).mean(1)
    assert float(errors.mean()) < 0.05 and bool((errors < others).all())
    assert metrics["feature"] < 0.1


@pytest.mark.parametrize("bad", [0, -1, [0.0, 0.6, 0.4, 1.0], [0.1, 0.5, 1.0], [0.0, 0.5], [0.0], "x", True])
def test_bad_segments_are_config_errors(bad):
    with pytest.raises(ConfigError, match="expected"):
        check_boundaries(bad)
    with pytest.raises(ConfigError):
        _net(segments=bad)


def test_bad_input_is_reported_with_a_fix():
    net = _net(segments=2)
    with pytest.raises(ConfigError, match=r"t in \[0, 1\]"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([0.5, 1.5]))
    with pytest.raises(ConfigError, match=r"t in \[0, 1\]"):
        net(torch.randn(2, 1, 8, 8), -0.1)
    with pytest.raises(ShapeError, match="images"):
        net(torch.randn(2, 1, 6, 6), 0.5)
    with pytest.raises(ConfigError, match="at least one step per segment"):
        blockwise_sample(net, torch.randn(2, 1, 8, 8), steps=1)
    with pytest.raises(ConfigError, match="residual"):
        blockwise_sample(net, torch.randn(2, 1, 8, 8), steps=4, residual=True)
    with pytest.raises(ConfigError, match="feature guidance"):
        BlockwiseFlowMatchingLoss(representation=lambda x: x.flatten(1))(net, {"x1": torch.randn(2, 1, 8, 8)})
    with pytest.raises(ConfigError, match="boundaries"):
        BlockwiseFlowMatchingLoss(segments=4)(net, {"x1": torch.randn(2, 1, 8, 8)})
    with pytest.raises(ConfigError, match="feature guidance"):
        _net(residual_depth=1)
    with pytest.raises(ConfigError, match="residual_depth"):
        FeatureResidualLoss()(net, {"x1": torch.randn(2, 1, 8, 8)})


def test_the_benchmark_rows_on_a_tiny_setting(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    from benchmarks.vision_bfm import format_table, main, rows

    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path / "cache"))
    table = rows("digits", seed=0, variants=("monolithic", "bfm_k4_sfg_fra"), settings=(2, 8, 2, 40, 4))
    assert [r["method"] for r in table] == ["monolithic", "bfm_k4_sfg_fra"]
    assert table[1]["baseline"] == "monolithic" and table[1]["nfe"] == 4
    assert table[1]["gflops_per_sample"] < 0.7 * table[0]["gflops_per_sample"]
    assert "not tested" in table[1]["note"] or "claim" in table[1]["note"]
    assert "| blockwise | digits | monolithic |" in format_table(table)
    with pytest.raises(SystemExit):
        main(["--help"])


def test_the_benchmark_command_takes_steps_and_variants(monkeypatch, tmp_path, capsys):
    """--steps and --variants reach the rows; a subset without the monolithic baseline is refused."""
    pytest.importorskip("sklearn")
    from benchmarks import vision_bfm

    seen = {}
    monkeypatch.setattr(vision_bfm, "rows", lambda data, **kw: seen.update(kw) or [])
    assert vision_bfm.main(["--data", "digits", "--steps", "7", "--variants", "monolithic,bfm_k2"]) == 0
    assert seen["variants"] == ("monolithic", "bfm_k2") and seen["settings"][0] == 7
    with pytest.raises(SystemExit):
        vision_bfm.main(["--variants", "bfm_k2"])
    assert "monolithic included" in capsys.readouterr().err
