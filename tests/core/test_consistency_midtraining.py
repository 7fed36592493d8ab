"""Tests of flowzoo.core.fewstep.consistency_midtraining: chords of the exact flow are the oracle's average velocity, the
loss is zero for the exact map and not for the wrong state placement, CMT learns a 1-step map on moons, bad input."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.fewstep import ConsistencyMidTrainingLoss, TrajectoryBank, teacher_trajectory
from flowzoo.core.data import sample_toy
from flowzoo.core.errors import ConfigError, FlowzooError, NonFiniteError, ShapeError
from flowzoo.core.fewstep import GaussianOracle, MLPFlowMap, flowmap_sample
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate

F64 = torch.float64
ORACLE = GaussianOracle(mean=torch.tensor([1.5, -0.5], dtype=F64), std=torch.tensor([0.5, 2.0], dtype=F64))


def test_chords_of_a_fine_rk4_trajectory_are_the_exact_average_velocity():
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    result = teacher_trajectory(ORACLE.velocity, x0, steps=64, solver="rk4")
    states, times = result.trajectory, result.times
    assert states.shape == (65, 256, 2) and result.nfe == 256
    for i, j in [(0, 64), (0, 1), (10, 50), (32, 33), (5, 64)]:
        chord = (states[j] - states[i]) / (times[j] - times[i])
        s, t = times[i].expand(256), times[j].expand(256)
        torch.testing.assert_close(chord, ORACLE(states[i], s, t), atol=1e-6, rtol=0)


def test_loss_is_zero_for_the_exact_map_and_not_for_the_state_at_the_end():
    objective = ConsistencyMidTrainingLoss(ORACLE.velocity, steps=64, pairs_per_sample=8, solver="rk4")
    batch = {"x1": torch.zeros(128, 2, dtype=F64)}
    loss, metrics = objective(ORACLE, batch, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-12 and 0.0 < metrics["gap_mean"] < 1.0
    # the known bug: evaluate the map at the state of the time it jumps TO (MF-RAE's noise-time placement
    # ported without flipping the time axis) -- the chord target no longer matches
    def state_at_end(x, s, t):
        return ORACLE(ORACLE.flow(x, s, t), s, t)

    loss, _ = objective(state_at_end, batch, generator=torch.Generator().manual_seed(0))
    assert loss.item() > 1e-2


def test_euler_chords_are_the_euler_steps_and_the_bank_is_reused():
    calls = []

    def teacher(x, t):
        calls.append(x.shape[0])
        return -x

    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    objective = ConsistencyMidTrainingLoss(teacher, steps=4, pairs_per_sample=3)
    bank = objective.generate_bank(x0, chunk=10)
    assert isinstance(bank, TrajectoryBank) and len(bank) == 32 and bank.states.shape == (5, 32, 2)
    torch.testing.assert_close(bank.states[-1], x0 * 0.75 ** 4)   # 4 Euler steps of dx/dt = -x, h = 1/4
    n_calls = len(calls)
    # Euler states are x_k = 0.75^k x_0, so the chord over j - i steps is x_i (0.75^(j-i) - 1) / (t_j - t_i)
    loss, metrics = objective(lambda x, s, t: torch.zeros_like(x), {"x1": torch.zeros(16, 2)})
    assert len(calls) == n_calls and loss.item() > 0 and 0 < metrics["gap_mean"] <= 1
    exact = lambda x, s, t: x * ((1 - 0.25) ** torch.round((t - s) * 4)[:, None] - 1) / (t - s)[:, None]
    loss, _ = objective(exact, {"x1": torch.zeros(16, 2)})
    assert loss.item() < 1e-10


def test_conditions_and_weights_follow_the_pairs():
    seen = {}

    def teacher(x, t, y):
        return y[:, None].to(x.dtype).expand_as(x)          # dx/dt = y: chord velocity y for every pair

    def model(x, s, t, y):
        seen["n"] = x.shape[0]
        return y[:, None].to(x.dtype).expand_as(x)

    batch = {"x1": torch.zeros(6, 2), "y": torch.arange(6), "weight": torch.ones(6)}
    objective = ConsistencyMidTrainingLoss(teacher, steps=3, pairs_per_sample=5, solver="heun")
    loss, metrics = objective(model, batch)
    assert seen["n"] == 30 and loss.item() < 1e-12 and metrics["weight_mean"] == 1.0
    objective.generate_bank(torch.zeros(10, 2), cond={"y": torch.arange(10)})
    loss, _ = objective(model, {"x1": torch.zeros(4, 2)})
    assert loss.item() < 1e-12


def test_bad_inputs_raise_flowzoo_errors():
    teacher = ORACLE.velocity
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss("teacher")
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss(teacher, steps=0)
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss(teacher, pairs_per_sample=1.5)
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss(teacher, solver="dopri5")
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss(teacher, time_grid=[0.0, 0.7, 0.3])
    with pytest.raises(ConfigError):
        ConsistencyMidTrainingLoss(teacher, bank="bank")
    with pytest.raises(ConfigError):
        teacher_trajectory(None, torch.zeros(2, 2))
    with pytest.raises(NonFiniteError):
        teacher_trajectory(teacher, torch.full((2, 2), float("nan")))
    objective = ConsistencyMidTrainingLoss(teacher, steps=4)
    with pytest.raises(ConfigError):
        objective(ORACLE, {"x0": torch.randn(4, 2)})
    with pytest.raises(ShapeError):
        objective(lambda x, s, t: x[:, :1], {"x1": torch.randn(4, 2)})
    with pytest.raises(FlowzooError):
        objective(ORACLE, {"x1": torch.randn(0, 2)})
    objective.generate_bank(torch.randn(8, 2))
    with pytest.raises(ShapeError):
        objective(ORACLE, {"x1": torch.randn(4, 3)})


# ------------------------------------------------------------------------------------- learning

def _fit(model, objective, steps, batch, seed, data):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss, _ = objective(model, {"x1": data[torch.randint(len(data), (batch,), generator=g)]}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


def test_cmt_learns_a_one_step_map_from_a_small_flow_matching_teacher():
    # Reference (MLPVelocity / MLPFlowMap 64x3, moons, 1500 + 1500 Adam steps, W2 on 1000 vs 1000 samples;
    # two moons samples are at 0.21, N(0, I) at 2.0): teacher 100-step Euler 0.55, 16-step Euler 0.58;
    # CMT student 1-step 0.59. The teacher's own 1-step Euler is ~2.5.
    torch.set_num_threads(1)
    data = sample_toy("moons", 20000, seed=0)
    torch.manual_seed(0)
    teacher = _fit(MLPVelocity(2, hidden=64, depth=3), FlowMatchingLoss(), 1500, 256, 0, data).requires_grad_(False)
    objective = ConsistencyMidTrainingLoss(teacher, steps=16, pairs_per_sample=4)
    objective.generate_bank(torch.randn(8192, 2, generator=torch.Generator().manual_seed(3)))
    torch.manual_seed(1)
    student = _fit(MLPFlowMap(2, hidden=64, depth=3), objective, 1500, 64, 1, data)
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(5))
    test = sample_toy("moons", 1000, seed=1)
    with torch.no_grad():
        w2_teacher = wasserstein2(integrate(teacher, x0, method="euler", steps=100).x, test)
        w2_teacher_1 = wasserstein2(integrate(teacher, x0, method="euler", steps=1).x, test)
        w2_student = wasserstein2(flowmap_sample(student, x0, steps=1).x, test)
    assert w2_student < 1.25 * w2_teacher and w2_student < 0.4 * w2_teacher_1, (w2_student, w2_teacher, w2_teacher_1)
