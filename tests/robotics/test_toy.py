"""The bimodal obstacle toy: the task and its expert, and MP1's claim — 1-step FM averages the modes and collides,
MP1 at 1 NFE keeps both modes and succeeds, 10-step FM succeeds too (same small network, same data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.robotics.data import WindowDataset
from flowzoo.robotics.spec import env_spec
from flowzoo.robotics.envs import expert_policy, list_tasks, make_env
from flowzoo.robotics.mp1 import mp1_config
from flowzoo.robotics.policy import FlowPolicy
from flowzoo.robotics.policy_config import PolicyConfig
from flowzoo.robotics.toy import (OBSTACLE_RADIUS, TASK, ToyExpert, ToyWorld, evaluate_toy, generate_toy_demos,
                                  toy_spec)

torch.set_num_threads(1)

# One U-Net level keeps the test fast (the per-call overhead of a CPU step dominates at this size).
TOY_NET = dict(n_obs_steps=1, horizon=8, n_action_steps=8, down_dims=(32,), time_dim=32, state_dim=32,
               state_hidden=(64,))


def test_expert_demonstrations_are_bimodal_and_safe():
    demos = generate_toy_demos(80, seed=0)
    assert demos.episodes == 80  # the expert always succeeds
    assert 0.3 < demos.info["left_fraction"] < 0.7
    positions = demos.arrays["state"][:, :2]
    assert np.linalg.norm(positions, axis=1).min() > OBSTACLE_RADIUS + 0.05
    assert demos.spec == toy_spec()


def test_mean_of_the_two_modes_collides():
    """The chunk a 1-step FM policy returns is the conditional mean: replaying it from the start hits the disc."""
    chunks = []
    for side in (-1, 1):  # the expert's 8-step chunk on each side, from the same 50 starts
        world, expert, actions = ToyWorld(50, seed=1), ToyExpert(side=side), []
        for _ in range(8):
            actions.append(expert(world.observation()))
            world.step(actions[-1])
        assert not world.collided.any()
        chunks.append(np.stack(actions))
    world = ToyWorld(50, seed=1)
    for action in 0.5 * (chunks[0] + chunks[1]):
        world.step(action)
    assert world.collided.all()


def test_registered_gym_task_runs_the_expert_to_success():
    assert TASK in list_tasks()
    env = make_env(TASK, seed=3)
    assert env_spec(env) == toy_spec()
    expert = expert_policy(TASK)
    obs, info = env.reset(seed=3)
    assert obs["state"].shape == (4,) and info["success"] == 0.0
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(expert(info["state"]))
        if terminated or truncated:
            break
    assert terminated and info["success"] == 1.0 and info["collision"] == 0.0
    assert env.render().shape == (96, 96, 3)
    obs, info = env.reset()
    for _ in range(40):  # straight up: a collision ends the episode as a failure
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0]))
        if terminated:
            break
    assert terminated and info["collision"] == 1.0 and info["success"] == 0.0
    with pytest.raises(ConfigError, match="obs_mode"):
        make_env(TASK, obs_mode="pointcloud")
    with pytest.raises(ConfigError, match="episodes"):
        generate_toy_demos(0)


def _train(config: PolicyConfig, demos, steps: int, batch: int = 64, lr: float = 2e-3) -> FlowPolicy:
    torch.manual_seed(0)
    windows = WindowDataset(demos, config.n_obs_steps, config.horizon)
    data = torch.utils.data.default_collate([windows[i] for i in range(len(windows))])
    policy = FlowPolicy(demos.spec, demos.normalizer, config)
    opt = torch.optim.Adam(policy.parameters(), lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(windows), (batch,), generator=generator)
        loss, _ = policy.loss({"obs": {"state": data["obs"]["state"][index]}, "action": data["action"][index]},
                              generator=generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


@pytest.fixture(scope="module")
def trained():
    demos = generate_toy_demos(100, seed=0)
    # MeanFlow steps cost ~4x flow-matching steps on a CPU; FM gets more of them so that its 1-step failure is
    # not blamed on under-training (10-step FM from the same network succeeds).
    return _train(PolicyConfig(method="fm", **TOY_NET), demos, 600), _train(mp1_config(**TOY_NET), demos, 400)


def test_one_step_fm_collides_while_mp1_keeps_both_modes(trained):
    fm, mp1 = trained
    fm.config.sample_steps = 1
    fm_one = evaluate_toy(fm, episodes=200, seed=0)
    fm.config.sample_steps = 10
    fm_ten = evaluate_toy(fm, episodes=200, seed=0)
    mp1_one = evaluate_toy(mp1, episodes=200, seed=0)
    assert mp1.nfe == 1
    assert fm_one.collision_rate > 0.5 and fm_one.success_rate < 0.5, fm_one
    assert mp1_one.success_rate > 0.7 and mp1_one.collision_rate < 0.25, mp1_one
    assert 0.15 < mp1_one.left_fraction < 0.85, mp1_one  # both modes, not one learned side
    assert fm_ten.success_rate > 0.7, fm_ten


@pytest.mark.slow
def test_meanflow_without_distinct_time_pairs_loses_the_one_step_map():
    """Flip a bug on: with distinct_fraction = 0 every pair has s = t, so MP1 trains plain flow matching and its
    single jump from noise degrades towards the averaged, colliding chunk (measured: success 0.52, collisions 0.40
    against 0.84 / 0.13 for MP1)."""
    demos = generate_toy_demos(100, seed=0)
    broken = evaluate_toy(_train(mp1_config(distinct_fraction=0.0, **TOY_NET), demos, 400), episodes=200, seed=0)
    assert broken.success_rate < 0.7 and broken.collision_rate > 0.25, broken


def test_evaluate_toy_takes_any_chunk_policy():
    class Scripted:  # replays the right-hand expert open loop, chunk by chunk: no collisions, all on the right
        class config:
            n_obs_steps, n_action_steps = 2, 4

        def __init__(self):
            self.expert = ToyExpert(side=1)

        def predict_action_chunk(self, obs):
            state = np.asarray(obs["state"])[:, -1]
            return torch.as_tensor(np.repeat(self.expert(state)[:, None], 4, axis=1))

    report = evaluate_toy(Scripted(), episodes=20, seed=0)
    assert report.success_rate == 1.0 and report.left_fraction == 0.0 and report.collision_rate == 0.0
