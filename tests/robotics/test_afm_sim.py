"""Drifting-dynamics simulators: hand-computed steps, the intervention schedule, the MuJoCo scaling, bad input."""

import math

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError
from flowzoo.robotics.afm.waypoints import DriftSchedule, circle_waypoints, figure8_waypoints, wrap_angle
from flowzoo.robotics.afm.point_mass import PointMassTask
from flowzoo.robotics.afm.sim import UnicycleTask
from flowzoo.robotics.mppi import MPPIPlanner, goal_distance_cost

torch.set_num_threads(1)


def test_unicycle_step_matches_hand_computation():
    task = UnicycleTask(circle_waypoints(8, 2.0), noise_std=0.0)
    x, y, theta = task.state
    new = task.step([0.5, 1.0])
    assert np.allclose(new, [x + 0.5 * math.cos(theta) * 0.2, y + 0.5 * math.sin(theta) * 0.2, theta + 0.2])
    task.set_dynamics(v_gain=-2.0, w_gain=0.5)
    after = task.step([0.5, 1.0])
    assert np.allclose(after, [new[0] - 1.0 * math.cos(new[2]) * 0.2, new[1] - 1.0 * math.sin(new[2]) * 0.2,
                               wrap_angle(new[2] + 0.1)])


def test_unicycle_clips_actions_and_wraps_heading():
    task = UnicycleTask(circle_waypoints(8, 2.0), noise_std=0.0)
    task.state[2] = math.pi - 0.05
    new = task.step([5.0, 10.0])                       # saturates at v = 1, w = pi / 2
    assert np.isclose(new[2], wrap_angle(math.pi - 0.05 + math.pi / 2 * 0.2))
    assert -math.pi <= new[2] < math.pi


def test_schedule_switches_after_15_and_80_percent_of_waypoints():
    schedule = DriftSchedule({"v_gain": -1.0, "w_gain": 2.0})
    assert schedule.multipliers(3, 20, 0) == {"v_gain": 1.0, "w_gain": 1.0}      # 3 = 15 % of 20: not yet
    assert schedule.multipliers(4, 20, 0) == {"v_gain": -1.0, "w_gain": 2.0}
    assert schedule.multipliers(16, 20, 0) == {"v_gain": -1.0, "w_gain": 2.0}
    assert schedule.multipliers(17, 20, 0) == {"v_gain": 1.0, "w_gain": 1.0}
    ramp = DriftSchedule({"v_gain": 3.0}, ramp_waypoints=3)
    assert [ramp.multipliers(r, 20, 0)["v_gain"] for r in (4, 5, 6, 7, 8)] == [1.5, 2.0, 2.5, 3.0, 3.0]
    by_step = DriftSchedule({"v_gain": 0.5}, change_step=10, reset_step=20)
    assert [by_step.multipliers(0, 20, s)["v_gain"] for s in (9, 10, 19, 20)] == [1.0, 0.5, 0.5, 1.0]


def test_gain_change_is_applied_at_the_right_waypoint_during_a_mission():
    task = UnicycleTask(circle_waypoints(20, 4.0), DriftSchedule({"v_gain": 0.5, "w_gain": 1.0}), noise_std=0.0,
                        max_steps=400)
    oracle = MPPIPlanner(lambda s, a: task.nominal_step(s, a, torch.tensor([task.v_gain, task.w_gain])),
                         goal_distance_cost(task.position), task.action_low, task.action_high)
    reached_at_step, gains_at_step = [], []
    while not task.done:
        task.step(oracle.plan(task.state, task.goal).numpy())
        reached_at_step.append(task.reached)
        gains_at_step.append(task.v_gain)
    assert task.success == 1.0
    first_changed = gains_at_step.index(0.5)
    assert reached_at_step[first_changed] == 4 and reached_at_step[first_changed - 1] == 3
    assert task.change_step == first_changed + 1
    first_reset = first_changed + gains_at_step[first_changed:].index(1.0)
    assert reached_at_step[first_reset] == 17 and task.reset_step == first_reset + 1
    result = task.result()
    assert result.steps_to_finish == task.steps and result.positions.shape == (task.steps + 1, 2)


def test_waypoint_generators_shapes():
    assert circle_waypoints(10, 1.0).shape == (10, 2)
    eight = figure8_waypoints(60, 6.0)
    assert eight.shape == (60, 2) and np.allclose(eight[0], 0.0)


def test_point_mass_linear_model_matches_simulation_and_scaling_acts():
    task = PointMassTask()
    a_matrix, b_matrix = task.linear_model()
    state, action = np.array([0.1, -0.2, 0.3, -0.4]), np.array([0.5, -1.0])
    task.state = state.copy()
    assert np.allclose(task._advance(state, action), a_matrix @ state + b_matrix @ action, atol=1e-9)
    push = np.array([1.0, 0.0])
    nominal_dv = (b_matrix @ push)[2]
    assert nominal_dv > 0
    _, inverted = task.linear_model(gain=-1.0)
    _, heavy = task.linear_model(mass=2.0)
    slow_a, _ = task.linear_model(friction=3.0)
    assert np.isclose((inverted @ push)[2], -nominal_dv)
    assert 0 < (heavy @ push)[2] < nominal_dv
    assert slow_a[2, 2] < a_matrix[2, 2]                       # more friction: velocity decays faster
    assert task.multipliers == {"mass": 1.0, "friction": 1.0, "gain": 1.0}   # identification restores them


def test_point_mass_changes_at_a_given_step():
    task = PointMassTask(schedule=DriftSchedule({"gain": -1.0, "mass": 2.0}, change_step=3))
    for _ in range(3):
        task.step([1.0, 0.0])
    speed_before = task.state[2]
    assert task.multipliers == {"mass": 2.0, "friction": 1.0, "gain": -1.0} and task.change_step == 3
    task.step([1.0, 0.0])
    assert task.state[2] < speed_before                        # the inverted motor now brakes


def test_nominal_inverse_recovers_the_action():
    unicycle = UnicycleTask(circle_waypoints(8, 2.0))
    states = torch.tensor([[0.0, 0.0, 0.3], [1.0, 2.0, -2.0]])
    actions = torch.tensor([[0.7, -0.4], [-0.2, 1.2]])
    assert torch.allclose(unicycle.nominal_inverse(states, unicycle.nominal_step(states, actions)), actions, atol=1e-5)
    mass = PointMassTask()
    states = torch.tensor([[0.0, 0.0, 0.3, -0.2]])
    assert torch.allclose(mass.nominal_inverse(states, mass.nominal_step(states, actions[:1])), actions[:1], atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    task = UnicycleTask(circle_waypoints(8, 2.0), max_steps=1)
    with pytest.raises(ShapeError, match="one action of shape"):
        task.step([[0.1, 0.2]])
    with pytest.raises(NonFiniteError):
        task.step([float("nan"), 0.0])
    task.step([0.1, 0.0])
    with pytest.raises(ConfigError, match="reset"):
        task.step([0.1, 0.0])
    with pytest.raises(ShapeError, match="waypoints"):
        UnicycleTask(np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="v_gain"):
        UnicycleTask(circle_waypoints(8, 2.0), DriftSchedule({"mass": 2.0}))
    with pytest.raises(ConfigError, match="change_fraction"):
        DriftSchedule({"v_gain": 2.0}, change_fraction=0.9, reset_fraction=0.5)
    with pytest.raises(ConfigError, match="mass multiplier"):
        PointMassTask().set_dynamics(mass=-1.0)
    with pytest.raises(ConfigError, match="gain"):
        PointMassTask(schedule=DriftSchedule({"v_gain": 2.0}))


def test_missing_mujoco_names_the_extra(monkeypatch):
    import sys

    from flowzoo.core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "mujoco", None)            # makes `import mujoco` fail
    with pytest.raises(MissingDependencyError, match=r"flowzoo\[robotics\]"):
        PointMassTask()
