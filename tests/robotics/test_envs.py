"""Environments: EnvSpec, Meta-World through make_env (state and point-cloud observations), registered tasks."""

import json

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError
from flowzoo.robotics import envs
from flowzoo.robotics.spec import EnvSpec, env_spec
from flowzoo.robotics.envs import expert_policy, list_tasks, make_env, make_env_like, register_task

torch.set_num_threads(1)

SPEC = EnvSpec(task="push-v3", obs_mode="state", obs_shapes={"state": (39,)}, action_dim=4,
               action_low=(-1.0,) * 4, action_high=(1.0,) * 4, max_episode_steps=500)


def test_env_spec_round_trips_through_json():
    back = EnvSpec.from_dict(json.loads(json.dumps(SPEC.to_dict())))
    assert back == SPEC
    with pytest.raises(ConfigError, match="action_dim"):
        EnvSpec.from_dict({k: v for k, v in SPEC.to_dict().items() if k != "action_dim"})
    with pytest.raises(ConfigError):
        EnvSpec(task="t", obs_mode="state", obs_shapes={"state": (3,)}, action_dim=2, action_low=(-1.0,),
                action_high=(1.0,), max_episode_steps=10)


@pytest.mark.parametrize("change, word", [
    ({"task": "reach-v3"}, "task"),
    ({"obs_shapes": {"point_cloud": (512, 3), "agent_pos": (4,)}}, "observation keys"),
    ({"obs_shapes": {"state": (38,)}}, "'state' of shape"),
    ({"action_dim": 3, "action_low": (-1.0,) * 3, "action_high": (1.0,) * 3}, "action_dim"),
    ({"action_high": (1.0, 1.0, 1.0, 2.0)}, "action_high"),
])
def test_check_compatible_names_the_field_that_differs(change, word):
    other = EnvSpec.from_dict({**SPEC.to_dict(), **change})
    with pytest.raises(ConfigError, match=word):
        SPEC.check_compatible(other)
    SPEC.check_compatible(EnvSpec.from_dict({**SPEC.to_dict(), "max_episode_steps": 100}))  # length may differ


def test_state_env_observations_success_and_seeded_resets():
    env = make_env("reach-v3", "state", seed=0, max_episode_steps=5)
    spec = env_spec(env)
    assert spec.obs_shapes == {"state": (39,)} and spec.action_dim == 4 and spec.max_episode_steps == 5
    obs, info = env.reset(seed=11)
    assert set(obs) == {"state"} and obs["state"].shape == (39,) and obs["state"].dtype == np.float32
    np.testing.assert_array_equal(info["state"], obs["state"])
    # reset(seed=s) depends on s only, not on the env's own seed or earlier resets
    other = make_env("reach-v3", "state", seed=5)
    other.reset()
    other.reset()
    np.testing.assert_array_equal(other.reset(seed=11)[0]["state"], obs["state"])
    # without a seed each reset draws a new goal
    goals = {tuple(np.round(env.reset()[0]["state"][36:39], 5)) for _ in range(3)}
    assert len(goals) == 3
    truncated = [env.step(np.zeros(4))[3] for _ in range(5)]
    assert truncated == [False] * 4 + [True]
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert isinstance(info["success"], float) and isinstance(reward, float) and terminated is False
    with pytest.raises(NonFiniteError):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ShapeError):
        env.step(np.zeros(3))
    env.close()
    other.close()


def test_expert_solves_reach_and_success_is_reported():
    env = make_env("reach-v3", seed=0, max_episode_steps=150)
    expert = expert_policy("reach-v3")
    _, info = env.reset(seed=3)
    successes = []
    for _ in range(150):
        action = expert(info["state"])
        assert action.dtype == np.float32 and action.shape == (4,) and np.all(np.abs(action) <= 1.0)
        _, _, _, truncated, info = env.step(action)
        successes.append(info["success"])
        if truncated:
            break
    assert max(successes) == 1.0
    env.close()


def test_pointcloud_env_shapes_spec_and_frames():
    env = make_env("push-v3", "pointcloud", seed=0, num_points=64, render_size=48, max_episode_steps=20,
                   frame_size=32)
    spec = env_spec(env)
    assert spec.obs_shapes == {"point_cloud": (64, 3), "agent_pos": (4,)} and spec.obs_mode == "pointcloud"
    assert spec.extras["render_size"] == 48 and spec.extras["camera"]
    obs, info = env.reset(seed=1)
    assert obs["point_cloud"].shape == (64, 3) and obs["point_cloud"].dtype == np.float32
    assert np.all(np.isfinite(obs["point_cloud"]))
    np.testing.assert_array_equal(obs["agent_pos"], info["state"][:4])
    obs, *_ = env.step(np.array([0.5, 0.0, 0.0, 0.0]))
    assert obs["point_cloud"].shape == (64, 3)
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()
    env.close()
    goal_env = make_env("push-v3", "pointcloud", num_points=16, render_size=32, goal_visible=True)
    obs, info = goal_env.reset(seed=2)
    np.testing.assert_array_equal(obs["agent_pos"], np.concatenate([info["state"][:4], info["state"][36:39]]))
    # an environment rebuilt from the spec alone observes the same things
    twin = make_env_like(env_spec(goal_env), seed=9)
    assert env_spec(twin) == env_spec(goal_env)
    goal_env.close()
    twin.close()
    with pytest.raises(ConfigError, match="agent_pos"):  # the spec says 7 values; a plain env gives 4
        make_env_like(env_spec(twin), goal_visible=False)


def test_bad_task_and_options_are_clear_errors():
    with pytest.raises(ConfigError, match="push-v3") as caught:
        make_env("psh-v3")
    assert "received 'psh-v3'" in str(caught.value)
    with pytest.raises(ConfigError, match="obs_mode"):
        make_env("push-v3", "rgb")
    with pytest.raises(ConfigError, match="max_episode_steps"):
        make_env("push-v3", max_episode_steps=501)
    with pytest.raises(ConfigError, match="num_points"):
        make_env("push-v3", "pointcloud", num_points=0)
    with pytest.raises(ConfigError):
        expert_policy("nope-v3")


def test_observation_options_are_checked_before_any_simulator_is_made():
    from flowzoo.robotics.metaworld_env import make_metaworld_env
    from flowzoo.robotics.spec import check_obs_options

    check_obs_options("pointcloud", 512, None)
    for bad, word in (({"obs_mode": "rgb"}, "obs_mode"), ({"num_points": True}, "num_points"),
                      ({"render_size": 4}, "render_size")):
        options = {"obs_mode": "state", "num_points": 8, "render_size": None, **bad}
        with pytest.raises(ConfigError, match=word):
            check_obs_options(**options)
        with pytest.raises(ConfigError, match=word):
            make_metaworld_env("reach-v3", **options)
    with pytest.raises(ConfigError, match="seed"):
        make_metaworld_env("reach-v3", seed="0")


def test_registered_tasks_plug_into_make_env(monkeypatch):
    import gymnasium as gym
    from gymnasium import spaces

    monkeypatch.setattr(envs, "_REGISTRY", {})

    class Toy(gym.Env):
        observation_space = spaces.Dict({"state": spaces.Box(-1, 1, (2,), np.float32)})
        action_space = spaces.Box(-2, 2, (2,), np.float32)

        def __init__(self, **options):
            self.options = options

        def reset(self, *, seed=None, options=None):
            return {"state": np.zeros(2, np.float32)}, {}

    register_task("toy-test", Toy, expert=lambda: (lambda obs: np.zeros(2, np.float32)))
    assert "toy-test" in list_tasks() and "push-v3" in list_tasks()
    env = make_env("toy-test", seed=4, num_points=8)
    assert env.options["seed"] == 4 and env.options["num_points"] == 8 and env.options["obs_mode"] == "state"
    spec = env_spec(env)
    assert spec.obs_shapes == {"state": (2,)} and spec.action_low == (-2.0, -2.0) and spec.obs_mode == "state"
    assert expert_policy("toy-test")(np.zeros(2)).shape == (2,)
    register_task("toy-no-expert", Toy)
    with pytest.raises(ConfigError, match="expert"):
        expert_policy("toy-no-expert")
    list_tasks()  # loads metaworld, so that names are checked against its tasks
    with pytest.raises(ConfigError):
        register_task("push-v3", Toy)
    with pytest.raises(ConfigError):
        register_task("", Toy)
