"""Meta-World v3 tasks adapted to flowzoo's environment convention (see :mod:`flowzoo.robotics.envs`).

Meta-World (Yu et al., "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
Learning", arXiv 1910.10897; v3 tasks of the Farama ``metaworld`` 3.1 package) is what MP1 (arXiv 2507.10543)
and DP3 (arXiv 2403.03954) evaluate on. :func:`make_metaworld_env` wraps ``gym.make("Meta-World/MT1",
env_name=task)`` so that it follows the convention :mod:`flowzoo.robotics.envs` documents: dict observations
(the 39-d state, or a depth point cloud from :mod:`flowzoo.robotics.pointcloud` with the proprioceptive
``agent_pos``), a float ``info["success"]`` and the raw state in ``info["state"]``, task variations drawn afresh
at every reset from a seeded stream (MT1's frozen configurations unfrozen, as in DP3), Meta-World's 500-step
limit and upright RGB frames from ``render()``.

Nothing here imports gymnasium, MuJoCo or Meta-World before an environment is made. Users normally call
:func:`flowzoo.robotics.envs.make_env`, which also knows the registered (non-Meta-World) tasks.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from flowzoo.core.errors import MissingDependencyError, NonFiniteError, ShapeError, expected
from flowzoo.core.validation import check_int
from flowzoo.robotics.pointcloud import METAWORLD_CAMERA, METAWORLD_WORKSPACE, DepthPointCloud, open_renderer
from flowzoo.robotics.spec import EnvSpec, check_obs_options

__all__ = ["METAWORLD_MAX_STEPS", "import_metaworld", "metaworld_tasks", "make_metaworld_env"]

METAWORLD_MAX_STEPS = 500
_EXTRA_HINT = "pip install 'flowzoo[robotics]'"


def _auto_render_size(num_points: int) -> int:
    # An 84-px Meta-World depth image holds ~230 workspace points, a 128-px one ~560: enough for 512.
    return 128 if num_points > 200 else 84


def import_metaworld() -> Any:
    """The ``metaworld`` module; raises MissingDependencyError naming the extra when it (or gymnasium) is missing."""
    try:
        import gymnasium  # noqa: F401
        import metaworld
    except ImportError as error:
        raise MissingDependencyError(expected("gymnasium, mujoco and metaworld for Meta-World tasks",
                                              f"ImportError: {error}", _EXTRA_HINT)) from error
    return metaworld


def metaworld_tasks() -> list[str]:
    """Meta-World v3 task names that have a scripted expert, sorted; empty when Meta-World is not installed."""
    try:
        metaworld = import_metaworld()
    except MissingDependencyError:
        return []
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(name for name in metaworld.ALL_V3_ENVIRONMENTS if name in ENV_POLICY_MAP)


def make_metaworld_env(task: str, obs_mode: str = "state", *, seed: int = 0, num_points: int = 512,
                       render_size: int | None = None, max_episode_steps: int | None = None,
                       goal_visible: bool = False, frame_size: int = 224) -> Any:
    """The Meta-World MT1 environment of ``task`` behind flowzoo's convention.

    The arguments are those of :func:`flowzoo.robotics.envs.make_env`, which is the usual way in (it also
    checks that ``task`` is a Meta-World task); ``max_episode_steps=None`` means Meta-World's limit,
    :data:`METAWORLD_MAX_STEPS`.

    Raises:
        ConfigError: an invalid observation option, seed or step limit.
        MissingDependencyError: gymnasium / mujoco / metaworld is not installed.
    """
    check_obs_options(obs_mode, num_points, render_size)
    check_int(seed, "seed", fix="pass e.g. seed=0")
    seed = int(seed)
    import_metaworld()
    import gymnasium as gym

    steps = METAWORLD_MAX_STEPS if max_episode_steps is None else max_episode_steps
    check_int(steps, "max_episode_steps (Meta-World's limit)", low=1, high=METAWORLD_MAX_STEPS,
              fix=f"pass at most {METAWORLD_MAX_STEPS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = gym.make("Meta-World/MT1", env_name=task, seed=seed, max_episode_steps=steps,
                         disable_env_checker=True)
    size = render_size if render_size is not None else _auto_render_size(num_points)
    return _wrap_metaworld(inner, task=task, obs_mode=obs_mode, seed=seed, num_points=num_points,
                           render_size=size, max_episode_steps=steps, goal_visible=bool(goal_visible),
                           frame_size=frame_size)


def _build_wrapper_class() -> type:
    # Built on first use so that importing this module does not import gymnasium.
    import gymnasium as gym
    from gymnasium import spaces

    class MetaWorldDictObs(gym.Wrapper):
        """Meta-World MT1 env with flowzoo's dict observations, float success and seeded variations."""

        def __init__(self, env: Any, *, task: str, obs_mode: str, seed: int, num_points: int, render_size: int,
                     max_episode_steps: int, goal_visible: bool, frame_size: int) -> None:
            super().__init__(env)
            _draw_fresh_variations(env, seed)
            self._obs_mode = obs_mode
            self._goal_visible = goal_visible
            self._frame_size = frame_size
            self._frame_renderer: Any = None
            self._cloud: DepthPointCloud | None = None
            low = np.asarray(env.action_space.low, dtype=np.float32)
            high = np.asarray(env.action_space.high, dtype=np.float32)
            self.action_space = spaces.Box(low, high, dtype=np.float32)
            self.spec_flowzoo = _metaworld_spec(task, obs_mode, num_points, render_size, max_episode_steps,
                                                goal_visible, low, high)
            self.observation_space = spaces.Dict({key: spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
                                                  for key, shape in self.spec_flowzoo.obs_shapes.items()})
            if obs_mode == "pointcloud":
                self._cloud = DepthPointCloud(self.unwrapped.model, METAWORLD_CAMERA, size=render_size,
                                              num_points=num_points, workspace=METAWORLD_WORKSPACE, seed=seed)

        def _observe(self, raw: np.ndarray) -> dict[str, np.ndarray]:
            raw = np.asarray(raw, dtype=np.float32)
            if self._cloud is None:
                return {"state": raw.copy()}
            agent_pos = np.concatenate([raw[:4], raw[36:39]]) if self._goal_visible else raw[:4].copy()
            return {"point_cloud": self._cloud(self.unwrapped.data), "agent_pos": agent_pos}

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
            if seed is not None:
                # Meta-World draws the new positions before gymnasium's reset would apply the seed.
                self.unwrapped.seed(int(seed))
            raw, info = self.env.reset(seed=seed, options=options)
            info = dict(info, state=np.asarray(raw, dtype=np.float32))
            return self._observe(raw), info

        def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
            action = np.asarray(action, dtype=np.float64).reshape(-1)
            if action.shape != self.action_space.shape:
                raise ShapeError(expected(f"an action of shape {self.action_space.shape}", tuple(action.shape),
                                          "send one action vector per step"))
            if not np.all(np.isfinite(action)):
                raise NonFiniteError(expected("a finite action", action.tolist(),
                                              "check the policy's output; a controller holds the last safe "
                                              "action instead of sending NaN"))
            action = np.clip(action, self.action_space.low, self.action_space.high)
            raw, reward, terminated, truncated, info = self.env.step(action)
            info = dict(info, success=float(info.get("success", 0.0)), state=np.asarray(raw, dtype=np.float32))
            return self._observe(raw), float(reward), bool(terminated), bool(truncated), info

        @property
        def render_mode(self) -> str:
            return "rgb_array"  # render() always returns a frame (gymnasium's video wrappers check this)

        def render(self) -> np.ndarray:
            if self._frame_renderer is None:
                self._frame_renderer, self._frame_camera = _video_renderer(self.unwrapped.model, self._frame_size)
            self._frame_renderer.update_scene(self.unwrapped.data, camera=self._frame_camera)
            return np.asarray(self._frame_renderer.render(), dtype=np.uint8).copy()

        def close(self) -> None:
            if self._cloud is not None:
                self._cloud.close()
                self._cloud = None
            if self._frame_renderer is not None:
                try:
                    self._frame_renderer.close()
                except Exception:  # the GL display may already be gone at interpreter exit
                    pass
                self._frame_renderer = None
            super().close()

    return MetaWorldDictObs


def _draw_fresh_variations(env: Any, seed: int) -> None:
    """Fix ``env`` (an MT1 env) on its task and let every reset draw fresh object/goal positions.

    One MT1 task sets the task's constants; then the positions are unfrozen so that every reset draws new ones
    from the env's seeded generator (as DP3's wrapper does), instead of cycling through MT1's 50 precomputed
    configurations.
    """
    env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
    env.unwrapped.set_task(env.get_wrapper_attr("tasks")[0])
    env.unwrapped._freeze_rand_vec = False
    env.unwrapped.seeded_rand_vec = True
    env.unwrapped.seed(seed)


def _metaworld_spec(task: str, obs_mode: str, num_points: int, render_size: int, max_episode_steps: int,
                    goal_visible: bool, low: np.ndarray, high: np.ndarray) -> EnvSpec:
    """The :class:`EnvSpec` of a wrapped task: observation shapes, action limits and the point-cloud settings."""
    if obs_mode == "state":
        shapes = {"state": (39,)}
    else:
        shapes = {"point_cloud": (num_points, 3), "agent_pos": (7,) if goal_visible else (4,)}
    extras = {"camera": METAWORLD_CAMERA, "render_size": render_size,
              "workspace": [list(METAWORLD_WORKSPACE[0]), list(METAWORLD_WORKSPACE[1])],
              "goal_visible": goal_visible} if obs_mode == "pointcloud" else {}
    return EnvSpec(task=task, obs_mode=obs_mode, obs_shapes=shapes, action_dim=len(low),
                   action_low=tuple(float(v) for v in low), action_high=tuple(float(v) for v in high),
                   max_episode_steps=max_episode_steps, extras=extras)


def _video_renderer(model: Any, size: int) -> tuple[Any, Any]:
    """An offscreen renderer of ``size`` pixels for ``model`` and the free camera that video frames use."""
    import mujoco

    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
    model.vis.global_.offheight = max(model.vis.global_.offheight, size)
    renderer = open_renderer(model, size)
    # Meta-World's corner cameras are rolled upside down; a free camera gives upright videos.
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = (0.0, 0.65, 0.1)
    camera.distance = 1.2
    camera.azimuth, camera.elevation = 155.0, -30.0
    return renderer, camera


_WRAPPER_CLASS: type | None = None


def _wrap_metaworld(env: Any, **kwargs: Any) -> Any:
    global _WRAPPER_CLASS
    if _WRAPPER_CLASS is None:
        _WRAPPER_CLASS = _build_wrapper_class()
    return _WRAPPER_CLASS(env, **kwargs)
