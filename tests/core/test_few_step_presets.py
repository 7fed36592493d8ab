"""flowzoo.core.fewstep.presets: each preset builds its objective, trains a step, and hands out fresh objects."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.fewstep import presets
from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.fewstep import MLPFlowMap
from flowzoo.core.fewstep import MeanFlowLoss
from flowzoo.core.fewstep import SplitMeanFlowLoss

OBJECTIVES = [
    ("meanflow", lambda: MeanFlowLoss(**presets.meanflow_settings())),
    ("imf", lambda: MeanFlowLoss(**presets.imf_settings())),
    ("meanflow_ot", lambda: MeanFlowLoss(coupling=ExactOTCoupling(), **presets.meanflow_ot_settings())),
    ("splitmeanflow_2d", lambda: SplitMeanFlowLoss(**presets.splitmeanflow_settings(dim=2))),
    ("splitmeanflow_64d", lambda: SplitMeanFlowLoss(**presets.splitmeanflow_settings(dim=64))),
]


@pytest.mark.parametrize("name, build", OBJECTIVES, ids=[n for n, _ in OBJECTIVES])
def test_each_preset_trains_a_step(name, build):
    torch.manual_seed(0)
    model = MLPFlowMap(2, hidden=16, depth=2)
    loss, metrics = build()(model, {"x1": torch.randn(32, 2)}, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_presets_differ_where_their_evidence_says_and_are_fresh_objects():
    low, high = presets.splitmeanflow_settings(dim=2), presets.splitmeanflow_settings(dim=64)
    assert low["adaptive_p"] == 0.5 and high["adaptive_p"] == 0.0  # p = 0.5 gave FD 138 on the 64-D digits
    assert low["time_sampler"] is not presets.splitmeanflow_settings(dim=2)["time_sampler"]
    assert presets.imf_settings()["formulation"] == "imf" and "formulation" not in presets.meanflow_settings()
    assert 0 < presets.MEANFLOW_OT_LR_FACTOR < 1

