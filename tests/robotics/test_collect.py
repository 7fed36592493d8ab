"""Collecting expert demonstrations: state and point-cloud episodes, metadata, failures, the command line."""

import json

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError
from flowzoo.robotics import envs
from flowzoo.robotics.collect import collect_demos, episode_seed, main
from flowzoo.robotics.data import DemoDataset, WindowDataset

torch.set_num_threads(1)


def test_collect_two_state_episodes_of_reach(tmp_path):
    out = tmp_path / "reach"
    demos = collect_demos("reach-v3", 2, "state", out, seed=0, extra_steps=5, progress=False)
    assert demos.episodes == 2 and demos.spec.obs_shapes == {"state": (39,)}
    info = demos.info
    assert info["episode_success"] == [True, True]
    assert info["episode_seeds"] == [episode_seed(0, 0), episode_seed(0, 1)]
    for index in range(2):
        episode = demos.episode(index)
        steps = len(episode["action"])
        assert episode["state"].shape == (steps, 39) and episode["action"].shape == (steps, 4)
        first = info["episode_first_success"][index]
        assert episode["success"][first] == 1.0 and not episode["success"][:first].any()
        assert steps == first + 1 + 5  # stops extra_steps after the first success
        assert np.all(np.abs(episode["action"]) <= 1.0)
    collection = info["collection"]
    assert collection["kept"] == 2 and collection["failed"] == 0 and collection["expert_success_rate"] == 1.0
    assert collection["seconds_per_episode"] > 0
    loaded = DemoDataset.load(out)
    np.testing.assert_array_equal(loaded.arrays["action"], demos.arrays["action"])
    assert loaded.info["collection"]["task"] == "reach-v3"
    # the stored seed and actions replay the episode exactly
    from flowzoo.robotics.envs import make_env

    env = make_env("reach-v3", seed=123)
    obs, _ = env.reset(seed=info["episode_seeds"][1])
    replayed = [obs["state"]]
    for action in demos.episode(1)["action"][:-1]:
        replayed.append(env.step(action)[0]["state"])
    env.close()
    np.testing.assert_allclose(np.stack(replayed), demos.episode(1)["state"], atol=1e-6)
    windows = WindowDataset(loaded, n_obs_steps=2, horizon=4)
    assert len(windows) == demos.num_steps and windows[0]["obs"]["state"].shape == (2, 39)
    assert windows[0]["action"].abs().max() <= 1.0 + 1e-6


def test_collect_one_short_pointcloud_episode(tmp_path):
    demos = collect_demos("reach-v3", 1, "pointcloud", tmp_path / "pc", seed=1, num_points=32, render_size=40,
                          max_steps=80, extra_steps=0, progress=False)
    steps = demos.num_steps
    assert demos.spec.obs_shapes == {"point_cloud": (32, 3), "agent_pos": (4,)}
    assert demos.arrays["point_cloud"].shape == (steps, 32, 3) and demos.arrays["agent_pos"].shape == (steps, 4)
    assert "state" not in demos.arrays and demos.episode(0)["success"][-1] == 1.0
    meta = json.loads((tmp_path / "pc" / "meta.json").read_text())
    assert meta["spec"]["extras"]["render_size"] == 40 and meta["normalizer"].keys() == {"action", "agent_pos"}
    # the hand moves, so the clouds change over the episode
    assert np.abs(demos.arrays["point_cloud"][0] - demos.arrays["point_cloud"][-1]).max() > 0.01
    batch = WindowDataset(demos, n_obs_steps=2, horizon=4).batch([0, steps - 1])
    assert batch["obs"]["point_cloud"].shape == (2, 2, 32, 3) and batch["obs"]["agent_pos"].shape == (2, 2, 4)
    # clouds are not normalised: the stored world coordinates come back unchanged
    np.testing.assert_array_equal(batch["obs"]["point_cloud"][0, 1].numpy(), demos.arrays["point_cloud"][0])


def test_goal_visible_collection_appends_the_goal_to_agent_pos(tmp_path):
    demos = collect_demos("reach-v3", 1, "pointcloud", tmp_path / "pc", seed=1, num_points=16, render_size=32,
                          max_steps=80, extra_steps=0, goal_visible=True, progress=False)
    assert demos.spec.obs_shapes["agent_pos"] == (7,) and demos.info["collection"]["goal_visible"] is True
    goal = demos.arrays["agent_pos"][:, 4:7]
    assert np.allclose(goal, goal[0]) and np.abs(goal[0]).max() > 0.01  # one fixed, non-zero goal per episode


def test_action_noise_changes_the_actions_and_is_seeded():
    clean = collect_demos("reach-v3", 1, seed=2, progress=False, extra_steps=0)
    noisy = collect_demos("reach-v3", 1, seed=2, action_noise=0.2, progress=False, extra_steps=0)
    again = collect_demos("reach-v3", 1, seed=2, action_noise=0.2, progress=False, extra_steps=0)
    np.testing.assert_array_equal(clean.arrays["state"][0], noisy.arrays["state"][0])  # same start
    assert not np.allclose(clean.arrays["action"][:5], noisy.arrays["action"][:5])
    np.testing.assert_array_equal(noisy.arrays["action"], again.arrays["action"])


def test_failures_are_counted_and_all_failures_is_an_error(tmp_path):
    with pytest.raises(EmptyInputError, match="0 successes in 2 attempts"):
        collect_demos("push-v3", 1, out=tmp_path / "none", max_steps=3, max_attempts=2, progress=False)
    assert not (tmp_path / "none").exists()


def test_bad_arguments_fail_before_collecting(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError):
        collect_demos("reach-v3", 1, out=tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
    with pytest.raises(ConfigError, match="reach-v3"):
        collect_demos("rech-v3", 1, progress=False)
    with pytest.raises(ConfigError):
        collect_demos("reach-v3", 0, progress=False)
    with pytest.raises(ConfigError):
        collect_demos("reach-v3", 1, "rgb", progress=False)
    with pytest.raises(ConfigError):
        collect_demos("reach-v3", 1, action_noise=-0.1, progress=False)


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    assert "--episodes" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert main(["--task", "reach-v3", "--episodes", "1", "--obs", "state", "--out", str(out),
                 "--progress", "false"]) == 0
    assert "1 episodes" in capsys.readouterr().out
    assert DemoDataset.load(out).episodes == 1
    with pytest.raises(ConfigError):
        main(["--task", "reach-v3", "--episodez", "1"])
    before = (out / "data.npz").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):  # an existing dataset is never replaced unasked
        main(["--task", "reach-v3", "--episodes", "1", "--seed", "1", "--out", str(out), "--progress", "false"])
    assert (out / "data.npz").read_bytes() == before
    assert main(["--task", "reach-v3", "--episodes", "1", "--seed", "1", "--out", str(out), "--overwrite",
                 "--progress", "false"]) == 0
    assert (out / "data.npz").read_bytes() != before


def test_collect_from_a_registered_task(monkeypatch):
    import gymnasium as gym
    from gymnasium import spaces

    monkeypatch.setattr(envs, "_REGISTRY", {})

    class LineWorld(gym.Env):
        """Walk right from x = 0 to x >= 1; reports success there; the expert always steps +0.5."""
        observation_space = spaces.Dict({"state": spaces.Box(-5, 5, (1,), np.float32)})
        action_space = spaces.Box(-1, 1, (1,), np.float32)

        def __init__(self, max_episode_steps=None, **_):
            self.limit = max_episode_steps or 20

        def reset(self, *, seed=None, options=None):
            self.x, self.t = 0.0, 0
            return {"state": np.array([self.x], np.float32)}, {"success": 0.0}

        def step(self, action):
            self.x += float(action[0])
            self.t += 1
            return ({"state": np.array([self.x], np.float32)}, 0.0, False, self.t >= self.limit,
                    {"success": float(self.x >= 1.0)})

    envs.register_task("line-test", LineWorld, expert=lambda: (lambda obs: np.array([0.5], np.float32)))
    demos = collect_demos("line-test", 2, seed=0, extra_steps=1, progress=False)
    assert demos.episodes == 2 and demos.num_steps == 2 * 3
    np.testing.assert_array_equal(demos.episode(0)["state"][:, 0], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(demos.episode(1)["success"], [0.0, 1.0, 1.0])
