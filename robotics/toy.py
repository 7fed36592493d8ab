r"""A 2-D point robot that must pass a round obstacle on the left or the right: the bimodal toy of MP1's claim.

Research notes §1(5), experiment E1a (after MP1, arXiv 2507.10543, and the multimodality argument of Diffusion
Policy, arXiv 2303.04137, §2.1): demonstrations go around the obstacle on the left or on the right with
probability 1/2, from the same start. A policy that regresses the *mean* action chunk — which is exactly what
one Euler step of flow matching returns, :math:`x_1 = x_0 + v(x_0, 0) = E[x_1]` — heads straight into the obstacle;
a policy that samples one mode (flow matching with enough steps, or a one-step MeanFlow map) passes.

World (units are arbitrary): start near (0, −0.9) (uniform jitter ±0.05 per coordinate), goal (0, 1), obstacle a
disc of radius 0.35 at the origin. An action is a velocity in [−1, 1]²; a step moves the robot by 0.1 × action.
An episode ends with **success** when the robot is within 0.1 of the goal, with a **collision** when it enters the
disc, or after ``max_episode_steps`` (40) steps. The observation is ``{"state": [x, y, goal_x, goal_y]}``.

Expert (:class:`ToyExpert`): at an episode start it picks a side ±1 at random, flies at full speed to the waypoint
(±0.6, 0) beside the obstacle and from there to the goal (slowing down within 0.1 of it); both legs stay ≥ 0.5
from the obstacle's centre. The mean of the two modes heads straight up and enters the disc within 8 steps.
The expert notices a new episode by the jump in position, so it works as a plain ``policy(raw_obs)`` for
:func:`flowzoo.robotics.envs.expert_policy`.

Importing this module registers the task ``"toy-obstacle"`` with :func:`flowzoo.robotics.envs.register_task`.
:func:`generate_toy_demos` collects demonstrations as a :class:`~flowzoo.robotics.data.DemoDataset` and
:func:`evaluate_toy` rolls a policy out in a batch of vectorised worlds (success, collision, left/right balance).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, MissingDependencyError, expected
from flowzoo.core.validation import check_positive_int
from flowzoo.robotics.data import DemoDataset
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.envs import register_task

__all__ = ["TASK", "ToyWorld", "ToyExpert", "toy_spec", "make_toy_env", "generate_toy_demos", "evaluate_toy",
           "ToyReport", "GOAL", "OBSTACLE_RADIUS"]

TASK = "toy-obstacle"
GOAL = np.array([0.0, 1.0])
START = np.array([0.0, -0.9])
START_JITTER = 0.05
OBSTACLE_RADIUS = 0.35
WAYPOINT_X = 0.6
STEP_SIZE = 0.1
GOAL_TOLERANCE = 0.1
MAX_STEPS = 40


def toy_spec(max_episode_steps: int = MAX_STEPS) -> EnvSpec:
    """The task's :class:`~flowzoo.robotics.envs.EnvSpec`: state (4,), action (2,) in [−1, 1]."""
    return EnvSpec(task=TASK, obs_mode="state", obs_shapes={"state": (4,)}, action_dim=2, action_low=(-1.0, -1.0),
                   action_high=(1.0, 1.0), max_episode_steps=max_episode_steps)


class ToyWorld:
    """B independent copies of the world, stepped together (NumPy)."""

    def __init__(self, batch: int, seed: int | None = 0):
        check_positive_int(batch, "batch", fix="pass e.g. 100")
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.reset()

    def reset(self) -> np.ndarray:
        self.position = START + self.rng.uniform(-START_JITTER, START_JITTER, size=(self.batch, 2))
        self.done = np.zeros(self.batch, dtype=bool)
        self.success = np.zeros(self.batch, dtype=bool)
        self.collided = np.zeros(self.batch, dtype=bool)
        self.steps = 0
        self.min_x = self.position[:, 0].copy()
        self.max_x = self.position[:, 0].copy()
        return self.observation()

    def observation(self) -> np.ndarray:
        return np.concatenate([self.position, np.broadcast_to(GOAL, self.position.shape)], axis=1).astype(np.float32)

    def step(self, action: np.ndarray) -> np.ndarray:
        """Move the worlds that are still running; finished ones stay where they ended."""
        action = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64), nan=0.0), -1.0, 1.0)
        running = ~self.done
        self.position[running] += STEP_SIZE * action[running]
        self.steps += 1
        self.min_x = np.minimum(self.min_x, self.position[:, 0])
        self.max_x = np.maximum(self.max_x, self.position[:, 0])
        hit = running & (np.linalg.norm(self.position, axis=1) < OBSTACLE_RADIUS)
        reached = running & ~hit & (np.linalg.norm(self.position - GOAL, axis=1) < GOAL_TOLERANCE)
        self.collided |= hit
        self.success |= reached
        self.done |= hit | reached
        return self.observation()


def _expert_action(position: np.ndarray, side: np.ndarray) -> np.ndarray:
    waypoint = np.stack([side * WAYPOINT_X, np.zeros_like(side)], axis=1)
    to_waypoint = waypoint - position
    passed = (np.linalg.norm(to_waypoint, axis=1) < 0.12) | (position[:, 1] > -0.02)
    target = np.where(passed[:, None], GOAL, waypoint)
    delta = target - position
    distance = np.linalg.norm(delta, axis=1, keepdims=True)
    speed = np.where(passed[:, None], np.minimum(1.0, distance / STEP_SIZE), 1.0)
    return (speed * delta / np.maximum(distance, 1e-9)).astype(np.float32)


class ToyExpert:
    """The bimodal scripted expert ``expert(raw_obs (4,) or (B, 4)) -> action`` (see the module docstring).

    Args:
        seed: seeds the side drawn at each episode start.
        side: −1 (left) or +1 (right) to always take that side; None draws it per episode.
    """

    def __init__(self, seed: int | None = None, side: float | None = None):
        if side not in (None, -1, 1):
            raise ConfigError(expected("side -1, +1 or None", repr(side), "pass -1 (left), 1 (right) or None"))
        self.rng = np.random.default_rng(seed)
        self.side = side
        self._side: np.ndarray | None = None
        self._last: np.ndarray | None = None

    def reset(self, batch: int = 1) -> None:
        self._side = self.rng.choice([-1.0, 1.0], size=batch) if self.side is None else np.full(batch, float(self.side))
        self._last = None

    def __call__(self, raw_obs: Any) -> np.ndarray:
        obs = np.asarray(raw_obs, dtype=np.float64)
        single = obs.ndim == 1
        position = obs.reshape(-1, obs.shape[-1])[:, :2]
        jumped = self._last is None or self._last.shape != position.shape or \
            np.any(np.linalg.norm(position - self._last, axis=1) > 2 * STEP_SIZE)
        if self._side is None or self._side.shape[0] != position.shape[0] or jumped:
            self.reset(position.shape[0])  # a new episode: draw the sides again
        self._last = position.copy()
        action = _expert_action(position, self._side)
        return action[0] if single else action


def _gym_env_class() -> type:
    try:
        import gymnasium as gym
        from gymnasium import spaces
    except ImportError as error:
        raise MissingDependencyError(expected("gymnasium for the toy environment", f"ImportError: {error}",
                                              "pip install 'flowzoo[robotics]'")) from error

    class ToyObstacleEnv(gym.Env):
        """Gymnasium view of one :class:`ToyWorld` (dict observation, ``info["success"]``)."""

        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

        def __init__(self, seed: int = 0, max_episode_steps: int = MAX_STEPS):
            super().__init__()
            self.observation_space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (4,), np.float32)})
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.max_episode_steps = max_episode_steps
            self.spec_flowzoo = toy_spec(max_episode_steps)
            self.world = ToyWorld(1, seed)
            self.render_mode = "rgb_array"

        def _info(self) -> dict[str, Any]:
            return {"success": float(self.world.success[0]), "collision": float(self.world.collided[0]),
                    "state": self.world.observation()[0]}

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            if seed is not None:
                self.world.rng = np.random.default_rng(seed)
            obs = self.world.reset()
            return {"state": obs[0]}, self._info()

        def step(self, action):
            obs = self.world.step(np.asarray(action, dtype=np.float64).reshape(1, 2))
            terminated = bool(self.world.done[0])
            truncated = not terminated and self.world.steps >= self.max_episode_steps
            return {"state": obs[0]}, float(self.world.success[0]), terminated, truncated, self._info()

        def render(self) -> np.ndarray:
            size = 96
            frame = np.full((size, size, 3), 255, dtype=np.uint8)
            grid = (np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1) + 0.5) / size * 3 - 1.5
            grid[..., 1] *= -1  # image rows grow downwards
            frame[np.linalg.norm(grid, axis=-1) < OBSTACLE_RADIUS] = (200, 60, 60)
            frame[np.linalg.norm(grid - GOAL, axis=-1) < GOAL_TOLERANCE] = (60, 160, 60)
            frame[np.linalg.norm(grid - self.world.position[0], axis=-1) < 0.05] = (40, 40, 200)
            return frame

    return ToyObstacleEnv


def make_toy_env(obs_mode: str = "state", seed: int = 0, max_episode_steps: int | None = None, **_: Any):
    """The gymnasium environment of the task (the factory given to ``register_task``); state observations only."""
    if obs_mode != "state":
        raise ConfigError(expected("obs_mode 'state' for the toy task", repr(obs_mode), "use obs_mode='state'"))
    return _gym_env_class()(seed=seed, max_episode_steps=max_episode_steps or MAX_STEPS)


def generate_toy_demos(episodes: int = 100, seed: int = 0, action_noise: float = 0.0) -> DemoDataset:
    """Roll the expert out in ``episodes`` worlds; successful episodes become a DemoDataset (all of them, noise-free).

    Args:
        episodes: number of episodes to run (each a fresh start and side).
        seed: seeds starts, sides and noise.
        action_noise: std of Gaussian noise added to the executed (and recorded) actions.
    """
    check_positive_int(episodes, "episodes", fix="pass e.g. 100")
    world = ToyWorld(episodes, seed)
    expert = ToyExpert(seed + 1)
    expert.reset(episodes)
    noise_rng = np.random.default_rng(seed + 2)
    states, actions, alive = [], [], []
    obs = world.observation()
    for _ in range(MAX_STEPS):
        running = ~world.done
        if not running.any():
            break
        action = expert(obs)
        if action_noise > 0:
            action = np.clip(action + action_noise * noise_rng.standard_normal(action.shape), -1, 1).astype(np.float32)
        states.append(obs)
        actions.append(action)
        alive.append(running)
        obs = world.step(action)
    kept = [i for i in range(episodes) if world.success[i]]
    records = []
    for i in kept:
        length = int(sum(a[i] for a in alive))
        records.append({"state": np.stack([s[i] for s in states[:length]]),
                        "action": np.stack([a[i] for a in actions[:length]]).astype(np.float32)})
    sides = np.sign(world.max_x + world.min_x)[kept]
    info = {"collection": {"task": TASK, "episodes": episodes, "seed": seed, "action_noise": action_noise},
            "episode_success": [True] * len(kept), "left_fraction": float(np.mean(sides < 0)) if kept else 0.0}
    return DemoDataset.from_episodes(records, toy_spec(), info=info)


@dataclass
class ToyReport:
    """Outcome of :func:`evaluate_toy` (fractions of episodes)."""

    success_rate: float
    collision_rate: float
    left_fraction: float   # among successes: passed on the left (0.5 = both modes kept)
    mean_steps: float      # steps of the successful episodes

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


@torch.no_grad()
def evaluate_toy(policy: Any, episodes: int = 200, seed: int = 0) -> ToyReport:
    """Roll ``policy`` out in ``episodes`` vectorised worlds (receding horizon, ``n_action_steps`` per chunk).

    ``policy`` needs ``predict_action_chunk(obs) -> (B, horizon, 2)``, ``config.n_obs_steps`` and
    ``config.n_action_steps`` (e.g. a :class:`~flowzoo.robotics.policy.FlowPolicy`).
    """
    world = ToyWorld(episodes, seed)
    # a FlowPolicy draws its noise from a seeded generator; other chunk policies are called with obs alone
    accepts_generator = "generator" in inspect.signature(policy.predict_action_chunk).parameters
    extra = {"generator": torch.Generator().manual_seed(seed)} if accepts_generator else {}
    n_obs, n_act = policy.config.n_obs_steps, policy.config.n_action_steps
    history = [world.observation()] * n_obs
    finished_at = np.full(episodes, -1)
    while world.steps < MAX_STEPS and not world.done.all():
        obs = {"state": torch.from_numpy(np.stack(history[-n_obs:], axis=1))}
        chunk = np.asarray(torch.as_tensor(policy.predict_action_chunk(obs, **extra)).cpu())
        for k in range(n_act):
            if world.steps >= MAX_STEPS:
                break
            was_done = world.done.copy()
            history.append(world.step(chunk[:, k]))
            finished_at[~was_done & world.done] = world.steps
    success = world.success
    left = (world.min_x + world.max_x) < 0
    return ToyReport(success_rate=float(success.mean()), collision_rate=float(world.collided.mean()),
                     left_fraction=float(left[success].mean()) if success.any() else float("nan"),
                     mean_steps=float(finished_at[success].mean()) if success.any() else float("nan"))


register_task(TASK, make_toy_env, expert=lambda: ToyExpert())
