"""ControlLoop: rate, deadlines, safety (clipping, NaN), ensembling by hand, history padding, callbacks, errors.

Timing assertions compare relative quantities with generous margins: the machine is a loaded 2-core box.
The fake policies sleep instead of computing, so they need no CPU.
"""

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.robotics.chunking import ActionPlan, ObservationHistory
from flowzoo.robotics.controller import ControlLoop, latency_summary

torch.set_num_threads(1)


def make_spec(obs_dim=3, action_dim=2, low=-1.0, high=1.0):
    return SimpleNamespace(task="fake", obs_mode="state", obs_shapes={"state": (obs_dim,)}, action_dim=action_dim,
                           action_low=(low,) * action_dim, action_high=(high,) * action_dim, max_episode_steps=40)


class FakePolicy:
    """Returns ``chunk_fn(call_index, last_state)`` (a (horizon, A) array) after sleeping ``delay`` seconds."""

    def __init__(self, chunk_fn=None, *, delay=0.0, horizon=4, n_obs_steps=2, n_action_steps=4, spec=None,
                 fail_on_call=None):
        self.spec = spec or make_spec()
        self.config = SimpleNamespace(n_obs_steps=n_obs_steps, n_action_steps=n_action_steps, horizon=horizon)
        self.chunk_fn = chunk_fn or (lambda call, state: np.full((horizon, self.spec.action_dim), 0.5))
        self.delay, self.fail_on_call = delay, fail_on_call
        self.calls, self.seen, self.resets = 0, [], 0

    def reset(self):
        self.resets += 1

    def predict_action_chunk(self, obs):
        self.calls += 1
        self.seen.append({k: v.clone() for k, v in obs.items()})
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise ValueError(f"boom on call {self.calls}")
        if self.delay:
            time.sleep(self.delay)
        state = obs["state"][:, -1].numpy()
        return torch.as_tensor(np.stack([self.chunk_fn(self.calls, s) for s in state]), dtype=torch.float32)


class FakeRobot:
    """Observation = (number of actions received so far, 0, 0); records every action it is sent."""

    def __init__(self):
        self.sent = []

    def read(self):
        return {"state": np.array([len(self.sent), 0.0, 0.0], dtype=np.float32)}

    def send(self, action):
        self.sent.append(np.array(action, copy=True))


def no_inference_threads():
    return not any(t.name == "flowzoo-policy-inference" and t.is_alive() for t in threading.enumerate())


# ------------------------------------------------------------------------------------------------------ timing
def test_holds_rate_with_slow_policy_and_counts_missed_deadlines():
    rate, delay = 40.0, 0.065  # inference takes ~2.6 control periods
    background = FakeRobot()
    report = ControlLoop(FakePolicy(delay=delay), rate_hz=rate).run(background.read, background.send, max_steps=50)
    inline = FakeRobot()
    blocking = ControlLoop(FakePolicy(delay=delay), rate_hz=rate, background=False).run(
        inline.read, inline.send, max_steps=50)
    assert report.steps == len(background.sent) == 50
    assert report.achieved_rate_hz == pytest.approx(rate, rel=0.2)
    assert report.chunks >= 4 and report.missed_deadlines == report.chunks - 1  # every chunk after the first
    assert report.held_actions > 0  # the loop sent the hold action instead of waiting
    assert report.inference_ms["p50"] > 1000.0 / rate
    # Inline inference stalls the loop: the achieved rate falls well below the background loop's.
    assert blocking.achieved_rate_hz < 0.8 * report.achieved_rate_hz
    assert blocking.overruns > 0 and blocking.missed_deadlines > 0
    assert no_inference_threads()


def test_chunks_that_expire_before_they_arrive_are_dropped_and_the_loop_goes_on():
    # Inference takes ~5 periods but a chunk covers 2 steps: every chunk is stale on arrival.
    robot = FakeRobot()
    policy = FakePolicy(lambda call, state: np.full((2, 2), 0.1 * call), delay=0.05, horizon=2, n_action_steps=2)
    report = ControlLoop(policy, rate_hz=100.0).run(robot.read, robot.send, max_steps=40)
    assert report.steps == 40 and report.chunks >= 3
    assert report.missed_deadlines == report.chunks - 1 and report.held_actions >= 40 - 2 - report.chunks
    np.testing.assert_allclose(np.stack(robot.sent)[:2], 0.1)


def test_fast_policy_meets_its_deadlines():
    robot = FakeRobot()
    report = ControlLoop(FakePolicy(), rate_hz=50.0, budget_ms=250.0).run(robot.read, robot.send, max_steps=30)
    assert report.missed_deadlines == 0 and report.held_actions == 0
    assert report.chunks >= 30 // 4
    assert all(np.allclose(a, 0.5) for a in robot.sent)


def test_background_chunks_are_aligned_to_the_step_they_were_predicted_from():
    # The policy's chunk from the observation of step k holds the value k + i at index i, so a correctly
    # aligned loop sends exactly the step number at every step it does not hold.
    policy = FakePolicy(lambda call, state: np.repeat(state[0] + np.arange(4.0)[:, None], 2, axis=1),
                        delay=0.03, spec=make_spec(low=-1e6, high=1e6))
    robot = FakeRobot()
    report = ControlLoop(policy, rate_hz=60.0).run(robot.read, robot.send, max_steps=40)
    values = np.array([a[0] for a in robot.sent])
    aligned = values == np.arange(len(values))
    assert report.held_actions == int((~aligned).sum())
    assert aligned.sum() >= 10


# ------------------------------------------------------------------------------------------------------ safety
def test_non_finite_actions_are_never_sent():
    def chunk(call, state):
        rows = np.full((4, 2), 0.25 * call)
        rows[1] = np.nan
        rows[3, 0] = np.inf
        return rows

    robot = FakeRobot()
    report = ControlLoop(FakePolicy(chunk), rate_hz=200.0, background=False).run(robot.read, robot.send,
                                                                               max_steps=8)
    sent = np.stack(robot.sent)
    assert np.all(np.isfinite(sent))
    # Steps 1, 3, 5, 7 get a non-finite row: blocked, and the last safe action (row 0 or 2 of the chunk) is held.
    assert report.non_finite_blocked == 4 and report.held_actions == 4
    np.testing.assert_allclose(sent[:, 0], [0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5])


def test_all_nan_policy_sends_the_hold_action():
    robot = FakeRobot()
    hold = np.array([0.0, -0.3])
    report = ControlLoop(FakePolicy(lambda c, s: np.full((4, 2), np.nan)), rate_hz=200.0,
                         hold_action=hold).run(robot.read, robot.send, max_steps=10)
    np.testing.assert_allclose(np.stack(robot.sent), np.tile(hold, (10, 1)))
    assert report.non_finite_blocked == 10 and report.held_actions == 10


def test_actions_are_clipped_to_the_limits():
    robot = FakeRobot()
    policy = FakePolicy(lambda c, s: np.tile([5.0, -0.2], (4, 1)))
    report = ControlLoop(policy, rate_hz=200.0, background=False).run(robot.read, robot.send, max_steps=6)
    np.testing.assert_allclose(np.stack(robot.sent), np.tile([1.0, -0.2], (6, 1)))
    assert report.clipped_actions == 6
    robot = FakeRobot()
    ControlLoop(policy, rate_hz=200.0, action_low=[-0.5, -0.1], action_high=0.5).run(robot.read, robot.send,
                                                                                       max_steps=3)
    np.testing.assert_allclose(np.stack(robot.sent), np.tile([0.5, -0.1], (3, 1)))


# ----------------------------------------------------------------------------------------------- planning math
def test_temporal_ensemble_matches_hand_computation():
    m = 0.5
    plan = ActionPlan(temporal_ensemble=m)
    plan.add(0, np.array([[10.0], [11.0], [12.0]]))
    plan.add(1, np.array([[20.0], [21.0], [22.0]]))
    plan.add(2, np.array([[30.0], [31.0], [32.0]]))
    action, dropped = plan.action_for(2)  # proposals, oldest first: 12, 21, 30
    weights = [1.0, math.exp(-0.5), math.exp(-1.0)]
    expected_action = (12 * weights[0] + 21 * weights[1] + 30 * weights[2]) / sum(weights)
    assert not dropped and action[0] == pytest.approx(expected_action)
    action, _ = plan.action_for(3)  # the chunk from step 0 no longer covers step 3: proposals 22, 31
    assert action[0] == pytest.approx((22 + 31 * math.exp(-0.5)) / (1 + math.exp(-0.5)))
    newest = ActionPlan()
    newest.add(0, np.array([[1.0], [2.0]]))
    newest.add(1, np.array([[5.0], [6.0]]))
    assert newest.action_for(1)[0][0] == 5.0 and newest.action_for(3)[0] is None
    assert newest.newest_origin == 1  # remembered after every chunk has run out


def test_temporal_ensemble_inside_the_loop():
    # Replan every step; the chunk of call c (made at step c - 1) proposes 10 c + i at index i.
    policy = FakePolicy(lambda call, state: 10.0 * call + np.repeat(np.arange(3.0)[:, None], 2, axis=1),
                        horizon=3, spec=make_spec(low=-1e3, high=1e3))
    robot = FakeRobot()
    ControlLoop(policy, rate_hz=200.0, temporal_ensemble=0.5, replan_every=1, background=False).run(
        robot.read, robot.send, max_steps=4)
    w = np.exp(-0.5 * np.arange(3))
    expected = [10.0, (11 + 20 * w[1]) / w[:2].sum(), (12 + 21 * w[1] + 30 * w[2]) / w.sum(),
                (22 + 31 * w[1] + 40 * w[2]) / w.sum()]
    np.testing.assert_allclose([a[0] for a in robot.sent], expected)


def test_observation_history_pads_by_repeating_the_first_frame():
    history = ObservationHistory(3, {"state": (2,)})
    history.push({"state": np.array([1.0, 1.0])})
    np.testing.assert_array_equal(history.stacked()["state"], [[1, 1], [1, 1], [1, 1]])
    history.push({"state": torch.tensor([2.0, 2.0])})
    np.testing.assert_array_equal(history.stacked()["state"], [[1, 1], [1, 1], [2, 2]])
    for value in (3.0, 4.0):
        history.push(np.array([value, value]))  # a bare array goes under the only key
    np.testing.assert_array_equal(history.stacked()["state"], [[2, 2], [3, 3], [4, 4]])
    assert history.stacked()["state"].dtype == np.float32


def test_policy_sees_a_padded_history_at_the_first_step():
    policy = FakePolicy(n_obs_steps=3)
    robot = FakeRobot()
    ControlLoop(policy, rate_hz=200.0, background=False).run(robot.read, robot.send, max_steps=5)
    first, second = policy.seen[0]["state"][0, :, 0], policy.seen[1]["state"][0, :, 0]
    assert first.tolist() == [0.0, 0.0, 0.0]
    assert second.tolist() == [2.0, 3.0, 4.0]  # replanned at step 4 from the observations of steps 2..4
    assert policy.resets == 1


# ----------------------------------------------------------------------------------------------- entry points
def test_callbacks_mode_stops_on_duration_or_request():
    robot = FakeRobot()
    report = ControlLoop(FakePolicy(), rate_hz=50.0).run(robot.read, robot.send, duration_s=0.3)
    assert report.stop_reason == "duration" and 8 <= report.steps <= 16 and len(robot.sent) == report.steps
    robot = FakeRobot()
    report = ControlLoop(FakePolicy(), rate_hz=200.0).run(robot.read, robot.send,
                                                          should_stop=lambda: len(robot.sent) >= 7)
    assert report.stop_reason == "stopped" and report.steps == 7


def test_run_env_reports_return_and_success():
    gym = pytest.importorskip("gymnasium")

    class Line(gym.Env):
        """Move a point toward 1.0; success once within 0.1."""

        observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-10, 10, (3,), np.float32)})
        action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.x, self.t = 0.0, 0
            return {"state": np.array([self.x, 0, 0], np.float32)}, {}

        def step(self, action):
            self.x += 0.1 * float(action[0])
            self.t += 1
            obs = {"state": np.array([self.x, 0, 0], np.float32)}
            return obs, -abs(1 - self.x), False, self.t >= 15, {"success": float(abs(1 - self.x) < 0.1)}

    report = ControlLoop(FakePolicy(lambda c, s: np.ones((4, 2))), rate_hz=500.0).run_env(Line(), seed=0)
    assert report.steps == 15 and report.stop_reason == "truncated" and report.success is True
    assert report.episode_return == pytest.approx(-sum(abs(1 - 0.1 * k) for k in range(1, 16)))
    report = ControlLoop(FakePolicy(lambda c, s: np.zeros((4, 2))), rate_hz=500.0).run_env(Line(), max_steps=5)
    assert report.steps == 5 and report.stop_reason == "max_steps" and report.success is False


def test_exception_in_the_policy_thread_propagates_and_the_thread_is_joined():
    robot = FakeRobot()
    with pytest.raises(ValueError, match="boom on call 3"):
        ControlLoop(FakePolicy(fail_on_call=3), rate_hz=100.0).run(robot.read, robot.send, max_steps=100)
    assert no_inference_threads()
    assert 0 < len(robot.sent) < 100


def test_exception_in_send_stops_the_worker():
    def send(action):
        raise RuntimeError("robot disconnected")

    with pytest.raises(RuntimeError, match="disconnected"):
        ControlLoop(FakePolicy(delay=0.05), rate_hz=100.0).run(FakeRobot().read, send, max_steps=10)
    assert no_inference_threads()


def test_inference_worker_returns_chunks_with_their_origin_and_reraises_policy_errors():
    from flowzoo.robotics.inference_worker import InferenceWorker

    def infer(stacked):
        if stacked["state"][0, 0] < 0:
            raise ValueError("negative state")
        return stacked["state"] * 2.0

    worker = InferenceWorker(infer)
    worker.submit(7, {"state": np.ones((2, 3))})
    with pytest.raises(ConfigError, match="one pending inference request"):
        worker.submit(8, {"state": np.ones((2, 3))})
    deadline = time.monotonic() + 10.0
    done = []
    while not done and time.monotonic() < deadline:
        done = worker.poll()
        time.sleep(0.001)
    (origin, chunk, latency_s), = done
    assert origin == 7 and np.array_equal(chunk, np.full((2, 3), 2.0)) and latency_s >= 0 and not worker.busy
    worker.submit(8, {"state": -np.ones((2, 3))})
    with pytest.raises(ValueError, match="negative state"):
        while time.monotonic() < deadline:
            worker.poll()
            time.sleep(0.001)
    assert worker.close(5.0) and no_inference_threads()


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError, match="rate_hz"):
        ControlLoop(FakePolicy(), rate_hz=0)
    with pytest.raises(ConfigError, match="budget_ms"):
        ControlLoop(FakePolicy(), rate_hz=10, budget_ms=-1)
    with pytest.raises(ConfigError, match="action_low"):
        ControlLoop(FakePolicy(), rate_hz=10, action_low=[0, 0, 0])
    with pytest.raises(ConfigError, match="temporal_ensemble"):
        ControlLoop(FakePolicy(), rate_hz=10, temporal_ensemble=float("nan"))
    with pytest.raises(ConfigError, match="predict_action_chunk"):
        ControlLoop(object(), rate_hz=10)
    with pytest.raises(ConfigError, match="max_steps, duration_s or should_stop"):
        ControlLoop(FakePolicy(), rate_hz=10).run(FakeRobot().read, FakeRobot().send)
    with pytest.raises(ConfigError, match="replan_every"):
        ControlLoop(FakePolicy(), rate_hz=100, replan_every=6).run(FakeRobot().read, FakeRobot().send, max_steps=3)


def test_bad_observations_and_outputs_are_refused():
    robot = FakeRobot()
    with pytest.raises(ShapeError, match="shape"):
        ControlLoop(FakePolicy(), rate_hz=100).run(lambda: {"state": np.zeros(5)}, robot.send, max_steps=3)
    with pytest.raises(ShapeError, match="observation key 'state'"):
        ControlLoop(FakePolicy(), rate_hz=100).run(lambda: {"pos": np.zeros(3)}, robot.send, max_steps=3)
    with pytest.raises(ShapeError, match=r"\(1, horizon, 2\)"):
        ControlLoop(FakePolicy(lambda c, s: np.zeros((4, 3))), rate_hz=100).run(robot.read, robot.send,
                                                                                max_steps=3)
    assert robot.sent == []  # nothing was sent before the first chunk was checked


def test_latency_summary():
    summary = latency_summary([1.0, 2.0, 3.0, 4.0])
    assert summary["mean"] == 2.5 and summary["max"] == 4.0 and summary["p50"] == 2.5
    assert math.isnan(latency_summary([])["p90"])


def test_run_env_on_metaworld_reach_with_the_scripted_expert():
    pytest.importorskip("metaworld")
    from flowzoo.robotics.spec import env_spec
    from flowzoo.robotics.envs import expert_policy, make_env

    env = make_env("reach-v3", "state", seed=0)
    expert = expert_policy("reach-v3")
    policy = FakePolicy(spec=env_spec(env), horizon=1, n_obs_steps=2, n_action_steps=1)
    policy.predict_action_chunk = lambda obs: torch.as_tensor(expert(obs["state"][0, -1].numpy()))[None, None]
    report = ControlLoop(policy, rate_hz=400.0, background=False, budget_ms=1000.0).run_env(env, max_steps=150,
                                                                                             seed=3)
    env.close()
    assert report.success is True and report.steps == 150 and report.non_finite_blocked == 0
    assert report.missed_deadlines == 0
