"""Action Flow Matching: analytic data, the lifted path, learning the inverse-gain map, regime detection,
online relabelling, the controller against the misaligned planner, and bad input."""

import math

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.robotics.afm.regimes import (PAPER_GAINS, Regime, point_mass_afm_batch, point_mass_regime_maps, unicycle_afm_batch)
from flowzoo.robotics.afm.method import ActionFlowMatching, ActionFlowNet, LiftedPath
from flowzoo.robotics.afm.controller import AFMController
from flowzoo.robotics.afm.waypoints import DriftSchedule, circle_waypoints
from flowzoo.robotics.afm.point_mass import PointMassTask
from flowzoo.robotics.afm.sim import UnicycleTask
from flowzoo.robotics.mppi import MPPIPlanner, PlannerController, goal_distance_cost, run_mission

torch.set_num_threads(1)
TRAIN_GAINS = tuple(PAPER_GAINS) + ((2.5, 0.5), (0.5, 2.0), (1.5, 0.7), (0.7, 1.5))


def _task():
    return UnicycleTask(circle_waypoints(12, 3.0), noise_std=0.0)


def _bounds(task):
    return (torch.as_tensor(task.action_low, dtype=torch.float32),
            torch.as_tensor(task.action_high, dtype=torch.float32))


def _regime(task, gains, heading=0.7, probe=(0.8, 0.5)):
    """The regime a probe would register on a unicycle with these gains."""
    state, action = torch.tensor([[0.0, 0.0, heading]]), torch.tensor([probe])
    error = task.state_error(task.nominal_step(state, action), task.nominal_step(state, action, torch.tensor([gains])))
    if error.norm() < task.misalignment_threshold:
        error = torch.zeros_like(error)
    return Regime(task.regime_features(state)[0], action[0], task.regime_error(state, error)[0])


def _map_error(afm, task, gains, n=300):
    low, high = _bounds(task)
    planned = low + (high - low) * torch.rand(n, 2, generator=torch.Generator().manual_seed(7))
    wanted = torch.clamp(planned / torch.tensor(gains), low, high)
    out = afm.transform(planned, _regime(task, gains))
    return (out - wanted).norm(dim=1).mean().item(), (planned - wanted).norm(dim=1).mean().item()


@pytest.fixture(scope="module")
def trained():
    task = _task()
    results = {}
    for lifted in (True, False):
        torch.manual_seed(0)
        afm = ActionFlowMatching(ActionFlowNet(2, 2, 3, lifted=lifted), lr=3e-3, seed=0)
        afm.pretrain(lambda g: unicycle_afm_batch(task, 256, g, gains=TRAIN_GAINS), steps=1500)
        results[lifted] = afm
    return results


def test_unicycle_batch_is_the_clipped_inverse_gain_map():
    task = _task()
    batch = unicycle_afm_batch(task, 500, torch.Generator().manual_seed(0), gains=[(2.0, -0.5)], keep_nominal=0.0)
    low, high = _bounds(task)
    registered = batch["state_error"].norm(dim=1) > 0
    assert registered.float().mean() > 0.8
    expected = torch.clamp(batch["x0"] / torch.tensor([2.0, -0.5]), low, high)
    assert torch.allclose(batch["x1"][registered], expected[registered])
    assert torch.equal(batch["x1"][~registered], batch["x0"][~registered])       # no visible error: no change
    # Error in the vehicle's frame, by hand: along = dt (g_v - 1) v_p, across = 0, heading = dt (g_w - 1) w_p.
    probe, error = batch["probe_action"][registered][0], batch["state_error"][registered][0]
    assert torch.allclose(error, torch.tensor([0.2 * 1.0 * probe[0], 0.0, 0.2 * -1.5 * probe[1]]), atol=1e-5)


def test_point_mass_batch_reproduces_the_nominal_step():
    task = PointMassTask()
    maps = point_mass_regime_maps(task, 8, torch.Generator().manual_seed(0), keep_nominal=0.0, flip=0.0)
    batch = point_mass_afm_batch(task, 64, torch.Generator().manual_seed(1), maps, speed=0.0)
    assert batch["x1"].abs().max() <= 1.0 and batch["x0"].shape == batch["x1"].shape == (64, 2)
    # From rest and without clipping, the changed actuator moves the mass exactly as the plan does nominally.
    a_changed, b_changed = maps
    _, b_nominal = (torch.as_tensor(m, dtype=torch.float32) for m in task.linear_model())
    gains = b_changed[:, 2, 0] / b_nominal[2, 0]
    assert gains.min() > 0


def test_lifted_path_endpoints_velocity_and_half_turn():
    path = LiftedPath(tube=0.0)
    x0 = torch.tensor([[0.5, -1.0, 0.0, 0.0]])
    x1 = torch.tensor([[1.0, 1.0, 0.0, 0.0]])        # first entry keeps its sign, second flips
    for t, want in ((0.0, x0), (1.0, x1)):
        assert torch.allclose(path.sample(x0, x1, torch.tensor([t])).x_t, want, atol=1e-6)
    middle = path.sample(x0, x1, torch.tensor([0.5])).x_t
    assert torch.allclose(middle, torch.tensor([[0.75, 0.0, 0.0, -1.0]]), atol=1e-6)   # radius 1, a quarter turn
    t, h = torch.tensor([0.3]), 1e-3
    numeric = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    assert torch.allclose(path.sample(x0, x1, t).dx_t, numeric, atol=1e-3)
    plain = LiftedPath(enabled=False, tube=0.0).sample(x0, x1, t)
    assert torch.allclose(plain.x_t[:, :2], 0.7 * x0[:, :2] + 0.3 * x1[:, :2]) and plain.x_t[:, 2:].abs().max() == 0


def test_afm_learns_the_inverse_gain_map_including_sign_inversions(trained):
    task = _task()
    for gains in ((-1.0, 1.0), (1.0, -1.0), (2.5, 0.5), (-0.7, 1.2)):     # the last is not a training pair
        afm_error, identity_error = _map_error(trained[True], task, gains)
        assert afm_error < min(0.5 * identity_error, 0.3), (gains, afm_error, identity_error)
    nominal_error, _ = _map_error(trained[True], task, (1.0, 1.0))
    assert nominal_error < 0.2


def test_the_plain_flow_cannot_invert_a_sign(trained):
    """The paper's flow on the straight path is monotone per entry: flipping v averages to ~0 (bug flipped on)."""
    task = _task()
    plain_error, identity_error = _map_error(trained[False], task, (-1.0, 1.0))
    lifted_error, _ = _map_error(trained[True], task, (-1.0, 1.0))
    assert plain_error > 0.5 * identity_error and lifted_error < 0.5 * plain_error
    scaled_error, scaled_identity = _map_error(trained[False], task, (2.5, 0.5))     # positive gains it can do
    assert scaled_error < 0.9 * scaled_identity


def test_flow_from_the_plan_reaches_the_intended_action(trained):
    task = _task()
    planned = torch.tensor([0.6, -0.9])
    out = trained[True].transform(planned, _regime(task, (-1.0, 1.0)))
    assert out.shape == (2,) and torch.allclose(out, torch.tensor([-0.6, -0.9]), atol=0.2)


class _ConstantPlanner:
    def __init__(self, action):
        self.action = torch.tensor(action)

    def plan(self, state, goal):
        return self.action.clone()

    def reset(self):
        pass


def test_regime_detection_probes_on_a_large_error_and_registers_it():
    task = _task()
    afm = ActionFlowMatching(ActionFlowNet(2, 2, 3), seed=0)
    controller = AFMController(task, _ConstantPlanner([0.8, 0.4]), task.nominal_step, afm, online=False)
    state = np.array([0.0, 0.0, 0.0])
    controller.act(state, np.zeros(2))
    controller.observe(np.array([0.16 + 0.01, 0.0, 0.08]))          # within the threshold of the prediction
    assert not controller.probe_next and controller.probes == 0
    controller.act(state, np.zeros(2))
    controller.observe(np.array([-0.16, 0.0, 0.08]))                # v inverted: 0.32 m off
    assert controller.probe_next and controller.probes == 1
    probe = controller.act(state, np.zeros(2))
    assert np.allclose(probe, [0.8, 0.4])                            # executed raw
    controller.observe(np.array([-0.16, 0.0, 0.08]))
    assert controller.regimes_registered == 1
    assert torch.allclose(controller.regime.state_error, torch.tensor([-0.32, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(controller.regime.probe_action, torch.tensor([0.8, 0.4]))
    # Right after a registration a moderate error (a saturated correction) does not probe again; a large one does.
    controller.act(state, np.zeros(2))
    controller.observe(np.array([0.16 - 0.1, 0.0, 0.08]))
    assert not controller.probe_next
    controller.act(state, np.zeros(2))
    controller.observe(np.array([0.16 - 0.3, 0.0, 0.08]))
    assert controller.probe_next and controller.probes == 2


def test_online_learning_relabels_transitions_with_the_nominal_inverse():
    task = _task()
    afm = ActionFlowMatching(ActionFlowNet(2, 2, 3), seed=0)
    controller = AFMController(task, _ConstantPlanner([0.5, 0.5]), task.nominal_step, afm, online=True,
                               replay=lambda g: unicycle_afm_batch(task, 16, g))
    state = np.array([1.0, 2.0, 0.3])
    controller.act(state, np.zeros(2))                               # nominal regime: nothing to learn from
    controller.observe(task.nominal_step(torch.tensor(state[None], dtype=torch.float32),
                                         torch.tensor([[0.5, 0.5]]))[0].numpy())
    assert len(controller.buffer) == 0
    before = [p.detach().clone() for p in afm.net.parameters()]
    controller.probe_next = True                                     # a probe: raw action, new regime
    executed = controller.act(state, np.zeros(2))
    assert np.allclose(executed, [0.5, 0.5])
    realised = task.nominal_step(torch.tensor(state[None], dtype=torch.float32),
                                 torch.tensor(executed[None], dtype=torch.float32) * torch.tensor([-2.0, 0.5]))[0]
    controller.observe(realised.numpy())
    assert controller.regimes_registered == 1 and len(controller.buffer) == 1
    relabelled, stored_executed, regime = controller.buffer[-1]
    assert torch.allclose(relabelled, torch.tensor([-1.0, 0.25]), atol=1e-4)     # what the drifted robot did
    assert torch.allclose(stored_executed, torch.tensor([0.5, 0.5])) and regime is controller.regime
    assert any(not torch.equal(a, b) for a, b in zip(before, afm.net.parameters()))


def test_afm_controller_beats_the_misaligned_planner_under_an_inverted_gain(trained):
    def mission(controller_factory):
        task = UnicycleTask(circle_waypoints(12, 3.0), DriftSchedule({"v_gain": -1.0, "w_gain": 1.0}),
                            max_steps=200, seed=0)
        planner = MPPIPlanner(task.nominal_step, goal_distance_cost(task.position), task.action_low,
                              task.action_high, seed=0)
        return run_mission(task, controller_factory(task, planner))

    misaligned = mission(lambda task, planner: PlannerController(planner))
    afm = ActionFlowMatching(trained[True].net, lr=1e-3, seed=0)
    state = {k: v.clone() for k, v in afm.net.state_dict().items()}
    corrected = mission(lambda task, planner: AFMController(
        task, planner, task.nominal_step, afm, replay=lambda g: unicycle_afm_batch(task, 64, g, gains=TRAIN_GAINS)))
    afm.net.load_state_dict(state)                                   # leave the shared fixture as it was
    assert misaligned.success_rate < 0.5
    assert corrected.success_rate > misaligned.success_rate + 0.3


def test_bad_inputs_raise_clear_errors():
    net = ActionFlowNet(2, 2, 3)
    regime = Regime.nominal(2, 2, 3)
    with pytest.raises(ShapeError, match="actions of shape"):
        net(torch.zeros(4, 3), torch.zeros(4), **regime.batch(4))
    with pytest.raises(ShapeError, match="state_error"):
        net(torch.zeros(4, 4), torch.zeros(4), regime_state=torch.zeros(4, 2), probe_action=torch.zeros(4, 2),
            state_error=torch.zeros(4, 2))
    afm = ActionFlowMatching(net)
    with pytest.raises(ShapeError, match="actions of shape"):
        afm.transform(torch.zeros(5, 3), regime)
    with pytest.raises(ConfigError, match="ActionFlowNet"):
        ActionFlowMatching(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="positive sizes"):
        ActionFlowNet(0, 2, 3)
    task = _task()
    controller = AFMController(task, _ConstantPlanner([0.5, 0.5]), task.nominal_step, afm, online=False)
    with pytest.raises(ConfigError, match="act"):
        controller.observe(np.zeros(3))
    controller.act(np.zeros(3), np.zeros(2))
    with pytest.raises(ShapeError, match="next state"):
        controller.observe(np.zeros(4))
    with pytest.raises(ConfigError, match="threshold"):
        AFMController(task, _ConstantPlanner([0.5, 0.5]), task.nominal_step, afm, threshold=0.0)
    with pytest.raises(ConfigError, match="probe_interval"):
        AFMController(task, _ConstantPlanner([0.5, 0.5]), task.nominal_step, afm, probe_interval=0)
    with pytest.raises(ConfigError, match="gains"):
        unicycle_afm_batch(task, 4, torch.Generator(), gains=[(1.0, 2.0, 3.0)])
    with pytest.raises(ConfigError, match="tube"):
        LiftedPath(tube=-1.0)
    with pytest.raises(ShapeError, match="zero lift"):
        LiftedPath().sample(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ConfigError, match="missing"):
        afm.train_step({"x0": torch.zeros(2, 2), "x1": torch.zeros(2, 2)})
