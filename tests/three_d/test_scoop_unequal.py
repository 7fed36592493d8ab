"""SCOOP on scan pairs whose point counts differ from pair to pair (flowzoo.three_d.scoop.estimate_flows)."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.three_d.scoop import estimate_flow, estimate_flows
from flowzoo.three_d.scoop_model import SCOOPModel


def _scan(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


def test_each_pair_gets_the_flow_it_gets_alone():
    torch.manual_seed(0)
    model = SCOOPModel(channels=4, neighbors=4, top_k=3).eval()
    scans_a, scans_b = [_scan(12, 0), _scan(30, 1)], [_scan(20, 2), _scan(25, 3)]
    flows = estimate_flows(model, scans_a, scans_b)
    assert [tuple(f.shape) for f in flows] == [(12, 3), (30, 3)]
    for flow, a, b in zip(flows, scans_a, scans_b):
        assert torch.allclose(flow, estimate_flow(model, a, b)[0])


def test_refinement_from_zero_recovers_a_translation_per_pair():
    """Refinement only (no model): each pair's own shift, 0.05 and -0.03, comes back for scans of 40 and 64 points."""
    shifts = (torch.tensor([0.05, 0.0, 0.0]), torch.tensor([0.0, -0.03, 0.0]))
    scans_a = [_scan(40, 4), _scan(64, 5)]
    flows = estimate_flows(None, scans_a, [a + s for a, s in zip(scans_a, shifts)], refine_steps=100,
                           smoothness=1.0, neighbors=8)
    for flow, shift in zip(flows, shifts):
        assert torch.allclose(flow.mean(dim=0), shift, atol=0.01)


def test_lists_that_do_not_pair_up_are_clear_errors():
    model = SCOOPModel(channels=4, neighbors=4, top_k=3).eval()
    with pytest.raises(ShapeError, match="one target scan per source scan"):
        estimate_flows(model, [_scan(10, 0)], [_scan(10, 1), _scan(10, 2)])
    with pytest.raises(ShapeError, match="scans, not batches"):
        estimate_flows(model, [torch.rand(2, 10, 3)], [torch.rand(2, 10, 3)])
    with pytest.raises(ConfigError, match="estimate_flows"):  # a list handed to the batch function says where to go
        estimate_flow(model, [_scan(10, 0), _scan(12, 1)], [_scan(10, 2), _scan(12, 3)])
    with pytest.raises(ConfigError, match=r"scans_b\[0\]"):  # a unit mix-up names the pair
        estimate_flows(model, [_scan(10, 0)], [1000 * _scan(10, 1)])
