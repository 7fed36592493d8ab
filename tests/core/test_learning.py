"""Learning tests: I-CFM and OT-CFM must actually learn 8 Gaussians -> moons.

Calibration (seeds 0/1, this file's settings): two independent 1000-point moon sets are already
W2 0.2-0.3 apart (the floor); trained I-CFM reaches 0.46-0.55 and OT-CFM 0.27-0.30 at 100 Euler
steps, an untrained network > 2 and a target with the source derivative dropped > 7. The threshold
0.7 sits between, so only a working objective passes.
"""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.data import sample_toy
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import AffinePath, LinearScheduler, SchedulerOutput
from flowzoo.core.sampling import integrate
from toy_training import train_fm_moons

STEPS = 2000
BATCH = 256


def _train(coupling, seed: int = 0, objective=None) -> torch.nn.Module:
    return train_fm_moons(STEPS, seed, hidden=128, batch=BATCH,
                          objective=objective or FlowMatchingLoss(coupling=coupling))


@pytest.fixture(scope="module")
def eval_sets():
    return sample_toy("8gaussians", 1000, seed=11), sample_toy("moons", 1000, seed=12)


@pytest.fixture(scope="module")
def trained():
    return {"icfm": _train(None), "otcfm": _train(ExactOTCoupling())}


def _w2(model, eval_sets, steps):
    x0, x1 = eval_sets
    return wasserstein2(integrate(model, x0, method="euler", steps=steps).x, x1)


def test_untrained_model_is_far(eval_sets):
    torch.manual_seed(0)
    assert _w2(MLPVelocity(2, hidden=128, depth=3).eval(), eval_sets, 100) > 2.0


@pytest.mark.parametrize("name", ["icfm", "otcfm"])
def test_flow_matching_learns_moons(trained, eval_sets, name):
    assert _w2(trained[name], eval_sets, 100) < 0.7


def test_ot_cfm_one_step_is_far_better_than_icfm(trained, eval_sets):
    w2_icfm = _w2(trained["icfm"], eval_sets, 1)
    w2_ot = _w2(trained["otcfm"], eval_sets, 1)
    assert w2_ot < 0.5 * w2_icfm, (w2_ot, w2_icfm)
    assert w2_ot < 0.6


def test_broken_target_fails_the_threshold(eval_sets):
    """A bug a reviewer could miss: the path's source derivative dropped, so the target is x1."""

    class ForgetsSourceDerivative(LinearScheduler):
        def __call__(self, t):
            out = super().__call__(t)
            return SchedulerOutput(out.alpha, out.beta, torch.zeros_like(out.d_alpha), out.d_beta)

    model = _train(None, objective=FlowMatchingLoss(path=AffinePath(ForgetsSourceDerivative())))
    assert _w2(model, eval_sets, 100) > 0.7
