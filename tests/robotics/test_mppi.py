"""MPPI and the dynamics ensemble: a known linear system, learning and continual learning, bad input."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError
from flowzoo.robotics.mppi import (GaussianEnsemble, LearnedDynamics, MPPIConfig, MPPIPlanner, PlannerController,
                                   goal_distance_cost, run_mission)

torch.set_num_threads(1)


class _LinearTask:
    """A 2-D single integrator x' = x + 0.1 * G a (G = gain matrix) with the adapters LearnedDynamics needs."""

    state_dim, action_dim = 2, 2

    def __init__(self, gain=None):
        self.gain = torch.eye(2) if gain is None else torch.as_tensor(gain, dtype=torch.float32)

    def step(self, states, actions):
        return states + 0.1 * actions @ self.gain.T

    def model_input(self, states, actions):
        return torch.cat([states, actions], dim=-1)

    def state_error(self, reference, states):
        return states - reference

    def apply_delta(self, states, delta):
        return states + delta


def _drive(planner, dynamics, goal, steps):
    state = torch.zeros(2)
    for _ in range(steps):
        state = dynamics(state[None], planner.plan(state, goal)[None])[0]
    return state


def test_mppi_drives_a_linear_system_to_the_goal():
    task = _LinearTask()
    goal = torch.tensor([1.5, -1.0])
    planner = MPPIPlanner(task.step, goal_distance_cost(lambda s: s), [-1, -1], [1, 1], seed=0)
    final = _drive(planner, task.step, goal, 30)
    assert torch.linalg.vector_norm(final - goal) < 0.05
    # The same planner without re-weighting (gamma -> 0 averages random samples) does not get there.
    blind = MPPIPlanner(task.step, goal_distance_cost(lambda s: s), [-1, -1], [1, 1],
                        MPPIConfig(gamma=1e-9), seed=0)
    assert torch.linalg.vector_norm(_drive(blind, task.step, goal, 30) - goal) > 0.5


def test_mppi_respects_bounds_and_is_deterministic_given_the_seed():
    task = _LinearTask()
    plans = [MPPIPlanner(task.step, goal_distance_cost(lambda s: s), [-0.2, -0.3], [0.2, 0.3], seed=3)
             .plan(torch.zeros(2), torch.tensor([10.0, -10.0])) for _ in range(2)]
    assert torch.equal(plans[0], plans[1])
    assert -0.2 <= plans[0][0] <= 0.2 and -0.3 <= plans[0][1] <= 0.3
    assert plans[0][0] > 0.15 and plans[0][1] < -0.2          # pushes towards the far goal, near the bounds


def _transitions(task, n, seed):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(n, 2, generator=generator)
    actions = torch.rand(n, 2, generator=generator) * 2 - 1
    return states, actions, task.step(states, actions)


def test_ensemble_learns_dynamics_and_soft_clamps_log_variance():
    task = _LinearTask()
    learner = LearnedDynamics(GaussianEnsemble(4, 2, members=2, hidden=64), task, lr=3e-3)
    states, actions, next_states = _transitions(task, 2000, 0)
    learner.fit(states, actions, next_states, steps=400)
    test = _transitions(task, 200, 1)
    error = (learner(test[0], test[1]) - test[2]).norm(dim=-1).mean()
    assert error < 0.01                                     # steps are up to 0.14 long
    _, logvar = learner.ensemble(torch.randn(50, 4) * 100)
    assert logvar.min() >= -10.0 and logvar.max() <= 0.5


def test_fast_learn_adapts_to_changed_dynamics():
    nominal, changed = _LinearTask(), _LinearTask([[-1.0, 0.0], [0.0, 1.0]])   # first control inverted
    learner = LearnedDynamics(GaussianEnsemble(4, 2, members=2, hidden=64), nominal, lr=3e-3)
    learner.fit(*_transitions(nominal, 2000, 0), steps=400)
    test = _transitions(changed, 200, 2)
    before = (learner(test[0], test[1]) - test[2]).norm(dim=-1).mean()
    stream = _transitions(changed, 300, 3)
    for i in range(300):
        learner.fast_learn(stream[0][max(0, i - 15):i + 1], stream[1][max(0, i - 15):i + 1],
                           stream[2][max(0, i - 15):i + 1])
    after = (learner(test[0], test[1]) - test[2]).norm(dim=-1).mean()
    assert after < 0.5 * before
    assert len(learner.loss_history) == 300


class _GoalTask:
    """Minimal waypoint task over the linear system for run_mission."""

    max_steps = 60

    def __init__(self):
        self.state, self.steps, self.goal = np.zeros(2), 0, np.array([1.0, 1.0])

    @property
    def done(self):
        return self.steps >= self.max_steps or np.linalg.norm(self.state - self.goal) < 0.05

    def step(self, action):
        self.state = self.state + 0.1 * np.asarray(action)
        self.steps += 1
        return self.state.copy()

    def result(self):
        return self.steps


def test_planner_controller_with_online_refit_runs_a_mission():
    task = _LinearTask()
    learner = LearnedDynamics(GaussianEnsemble(4, 2, members=2, hidden=32), task, lr=1e-3)
    learner.fit(*_transitions(task, 1000, 0), steps=200)
    controller = PlannerController(MPPIPlanner(learner, goal_distance_cost(lambda s: s), [-1, -1], [1, 1]),
                                   learner, window=4)
    steps = run_mission(_GoalTask(), controller)
    assert steps < 40 and len(learner.loss_history) == steps


def test_bad_inputs_raise_clear_errors():
    task = _LinearTask()
    with pytest.raises(ConfigError, match="horizon"):
        MPPIConfig(horizon=0)
    with pytest.raises(ConfigError, match="beta"):
        MPPIConfig(beta=1.5)
    with pytest.raises(ConfigError, match="action_low"):
        MPPIPlanner(task.step, goal_distance_cost(lambda s: s), [1, 1], [-1, -1])
    planner = MPPIPlanner(task.step, goal_distance_cost(lambda s: s), [-1, -1], [1, 1])
    with pytest.raises(ShapeError, match="one state"):
        planner.plan(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(NonFiniteError):
        planner.plan(torch.tensor([float("nan"), 0.0]), torch.zeros(2))
    learner = LearnedDynamics(GaussianEnsemble(4, 2, hidden=8), task)
    with pytest.raises(ShapeError, match="features"):
        learner.ensemble(torch.zeros(5, 3))
    with pytest.raises(ShapeError, match="states"):
        learner.fast_learn(torch.zeros(4, 2), torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(NonFiniteError):
        learner.fast_learn(torch.zeros(1, 2), torch.full((1, 2), float("inf")), torch.zeros(1, 2))
    with pytest.raises(ConfigError, match="act"):
        PlannerController(planner).observe(np.zeros(2))
