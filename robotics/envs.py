"""Simulated tasks for robot policies: Meta-World v3 through gymnasium, plus tasks other modules register.

Meta-World (Yu et al., "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
Learning", arXiv 1910.10897; v3 tasks of the Farama ``metaworld`` 3.1 package) is what MP1 (arXiv 2507.10543)
and DP3 (arXiv 2403.03954) evaluate on. :func:`make_env` wraps ``gym.make("Meta-World/MT1", env_name=task)``
so that every flowzoo task looks the same to policies, the controller and evaluation:

* **Observations** are dicts of float32 arrays (see :class:`EnvSpec` for the shapes):

  - obs mode ``"state"``: ``{"state": (39,)}``, Meta-World's observation: hand xyz (0:3), gripper opening
    (3), object poses padded to 14 values (4:18), the same 18 values of the previous step (18:36) and the
    goal position (36:39; MT1 tasks expose it).
  - obs mode ``"pointcloud"``: ``{"point_cloud": (N, 3), "agent_pos": (4,)}``; the cloud is the depth
    camera's view back-projected to the world frame, cropped and farthest-point sampled
    (:mod:`flowzoo.robotics.pointcloud`); ``agent_pos`` is the proprioceptive state: **hand xyz and gripper
    opening, i.e. Meta-World obs[0:4]**. The goal of reach/push/pick-place is then not observed (it is a
    marker site, absent from depth images: measured, no cloud point within 18 cm of it), so those tasks can
    only be solved by chance; ``goal_visible=True`` appends it (obs[36:39]) to ``agent_pos`` (7 values).

* ``info["success"]`` is a float (1.0 once the task's success test passes at that step, else 0.0), and
  ``info["state"]`` is always the raw 39-d observation (the scripted experts read it).
* **Task variation.** Each reset draws new object and goal positions from the task's random range (Meta-World's
  frozen MT1 configurations are unfrozen, as in DP3). ``reset(seed=s)`` makes the draw (and everything after
  it) a function of ``s`` alone; ``reset()`` continues the stream that ``make_env(seed=...)`` started.
* **Time limit.** Episodes are truncated after ``max_episode_steps`` steps (Meta-World's own limit, 500, at
  most); they never terminate early, success or not (Meta-World's convention).
* ``env.render()`` returns an RGB frame (H, W, 3) uint8 for videos.

Other modules add tasks with :func:`register_task` (e.g. a 2-D toy); they then work with :func:`make_env`,
:func:`list_tasks` and :func:`expert_policy` like Meta-World tasks.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowzoo.core.errors import ConfigError, MissingDependencyError, NonFiniteError, ShapeError, expected
from flowzoo.robotics.pointcloud import METAWORLD_CAMERA, METAWORLD_WORKSPACE, DepthPointCloud, open_renderer

__all__ = [
    "OBS_MODES",
    "EnvSpec",
    "make_env",
    "make_env_like",
    "env_spec",
    "expert_policy",
    "list_tasks",
    "register_task",
]

OBS_MODES = ("state", "pointcloud")
_EXTRA_HINT = "pip install 'flowzoo[robotics]'"
_METAWORLD_MAX_STEPS = 500


def _auto_render_size(num_points: int) -> int:
    # An 84-px Meta-World depth image holds ~230 workspace points, a 128-px one ~560: enough for 512.
    return 128 if num_points > 200 else 84


@dataclass(frozen=True)
class EnvSpec:
    """What a policy was trained for: observation keys and shapes, action size and limits.

    Saved inside datasets and policy checkpoints (``to_dict`` is JSON-able) and compared with
    :meth:`check_compatible` before a policy runs in an environment.
    """

    task: str
    obs_mode: str
    obs_shapes: dict[str, tuple[int, ...]]
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ConfigError(expected(f"action_low and action_high with action_dim={self.action_dim} values",
                                       f"{len(self.action_low)} and {len(self.action_high)}",
                                       "give one limit per action dimension"))
        if any(hi < lo for lo, hi in zip(self.action_low, self.action_high)):
            raise ConfigError(expected("action_high >= action_low", (self.action_low, self.action_high),
                                       "fix the action limits"))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return {
            "task": self.task,
            "obs_mode": self.obs_mode,
            "obs_shapes": {key: list(shape) for key, shape in self.obs_shapes.items()},
            "action_dim": self.action_dim,
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            "max_episode_steps": self.max_episode_steps,
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EnvSpec":
        """Inverse of :meth:`to_dict`; raises ConfigError naming a missing or malformed field."""
        required = ("task", "obs_mode", "obs_shapes", "action_dim", "action_low", "action_high",
                    "max_episode_steps")
        if not isinstance(data, Mapping):
            raise ConfigError(expected("an EnvSpec dict", type(data).__name__, "pass EnvSpec.to_dict()"))
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(expected(f"EnvSpec fields {list(required)}", f"a dict without {missing}",
                                       "the file was not written by flowzoo or is damaged; recreate it"))
        try:
            return cls(
                task=str(data["task"]),
                obs_mode=str(data["obs_mode"]),
                obs_shapes={str(k): tuple(int(n) for n in v) for k, v in dict(data["obs_shapes"]).items()},
                action_dim=int(data["action_dim"]),
                action_low=tuple(float(v) for v in data["action_low"]),
                action_high=tuple(float(v) for v in data["action_high"]),
                max_episode_steps=int(data["max_episode_steps"]),
                extras=dict(data.get("extras", {})),
            )
        except (TypeError, ValueError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(expected("EnvSpec fields of the right types", f"{error}",
                                       "recreate the file with flowzoo")) from error

    def check_compatible(self, other: "EnvSpec", *, check_task: bool = True) -> None:
        """Raise ConfigError unless a policy made for ``self`` can run in an environment with spec ``other``.

        Compared: the task name (unless ``check_task=False``), observation keys and shapes, action size and
        limits. The episode length may differ.
        """
        def mismatch(what: str, mine: object, theirs: object, fix: str) -> ConfigError:
            return ConfigError(expected(f"{what} {mine} (the policy's)", f"{theirs} (the environment's)", fix))

        if check_task and self.task != other.task:
            raise mismatch("task", repr(self.task), repr(other.task),
                           f"evaluate on {self.task!r}, or train a policy for {other.task!r}")
        if set(self.obs_shapes) != set(other.obs_shapes):
            raise mismatch("observation keys", sorted(self.obs_shapes), sorted(other.obs_shapes),
                           f"make the environment with obs_mode={self.obs_mode!r}")
        for key, shape in self.obs_shapes.items():
            if tuple(shape) != tuple(other.obs_shapes[key]):
                raise mismatch(f"observation {key!r} of shape", tuple(shape), tuple(other.obs_shapes[key]),
                               "make the environment with the same num_points / observation settings")
        if self.action_dim != other.action_dim:
            raise mismatch("action_dim", self.action_dim, other.action_dim, "use a policy trained on this robot")
        for name, mine, theirs in (("action_low", self.action_low, other.action_low),
                                   ("action_high", self.action_high, other.action_high)):
            if not np.allclose(mine, theirs, rtol=0.0, atol=1e-6):
                raise mismatch(name, list(mine), list(theirs), "use a policy trained with these action limits")


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _RegisteredTask:
    factory: Callable[..., Any]
    expert: Callable[[], Callable[[np.ndarray], np.ndarray]] | None


_REGISTRY: dict[str, _RegisteredTask] = {}
# flowzoo's own non-Meta-World tasks, registered when their module is first imported (lazily, from here).
_BUILTIN_TASK_MODULES = {"toy-obstacle": "flowzoo.robotics.toy"}


def _ensure_registered(task: str) -> None:
    if task not in _REGISTRY and task in _BUILTIN_TASK_MODULES:
        importlib.import_module(_BUILTIN_TASK_MODULES[task])


def register_task(name: str, factory: Callable[..., Any],
                  expert: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None) -> None:
    """Make ``name`` a task of :func:`make_env`.

    Args:
        name: task name; must not be a Meta-World task's (checked once metaworld has been imported; a
            registered name takes precedence in :func:`make_env`). Registering a name again replaces it.
        factory: called as ``factory(obs_mode=..., seed=..., num_points=..., render_size=...,
            max_episode_steps=...)``; returns a gymnasium env whose observations are dicts following the
            flowzoo convention and whose ``info["success"]`` is a float. It may set ``spec_flowzoo`` (an
            :class:`EnvSpec`); otherwise :func:`env_spec` derives one from the spaces.
        expert: optional zero-argument callable returning ``policy(raw_obs) -> action`` for
            :func:`expert_policy`.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(expected("a non-empty task name", repr(name), "pass e.g. 'toy-obstacle'"))
    if not callable(factory):
        raise ConfigError(expected("a callable env factory", type(factory).__name__, "pass a function"))
    # Only check against Meta-World when it is loaded already: registering a toy task must stay cheap.
    if "metaworld" in sys.modules and name in _metaworld_tasks():
        raise ConfigError(expected("a name that is not a Meta-World task", repr(name), "choose another name"))
    _REGISTRY[name] = _RegisteredTask(factory, expert)


def _import_metaworld() -> Any:
    try:
        import gymnasium  # noqa: F401
        import metaworld
    except ImportError as error:
        raise MissingDependencyError(expected("gymnasium, mujoco and metaworld for Meta-World tasks",
                                              f"ImportError: {error}", _EXTRA_HINT)) from error
    return metaworld


def _metaworld_tasks() -> list[str]:
    try:
        metaworld = _import_metaworld()
    except MissingDependencyError:
        return []
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(name for name in metaworld.ALL_V3_ENVIRONMENTS if name in ENV_POLICY_MAP)


def list_tasks() -> list[str]:
    """Every task :func:`make_env` accepts: Meta-World v3 tasks that have a scripted expert, then registered ones."""
    for task in _BUILTIN_TASK_MODULES:
        _ensure_registered(task)
    return _metaworld_tasks() + sorted(_REGISTRY)


def _unknown_task(task: object) -> ConfigError:
    tasks = list_tasks()
    hint = "" if tasks else f" (no Meta-World tasks found: {_EXTRA_HINT})"
    return ConfigError(expected(f"a task name, one of {tasks}{hint}", repr(task),
                                "pick one of the listed tasks or register_task() your own"))


# --------------------------------------------------------------------------------------------- Meta-World
def _check_options(obs_mode: object, num_points: object, render_size: object) -> None:
    if obs_mode not in OBS_MODES:
        raise ConfigError(expected(f"obs_mode in {OBS_MODES}", repr(obs_mode), "pass 'state' or 'pointcloud'"))
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise ConfigError(expected("num_points as a positive int", repr(num_points), "use e.g. 512 or 256"))
    if render_size is not None and (isinstance(render_size, bool) or not isinstance(render_size, int)
                                    or render_size < 8):
        raise ConfigError(expected("render_size as an int >= 8 (or None for automatic)", repr(render_size),
                                   "use e.g. 84 or 128"))


def _make_metaworld(task: str, obs_mode: str, seed: int, num_points: int, render_size: int | None,
                    max_episode_steps: int | None, goal_visible: bool, frame_size: int) -> Any:
    import gymnasium as gym

    steps = _METAWORLD_MAX_STEPS if max_episode_steps is None else max_episode_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= _METAWORLD_MAX_STEPS:
        raise ConfigError(expected(f"max_episode_steps an int in [1, {_METAWORLD_MAX_STEPS}] (Meta-World's limit)",
                                   repr(max_episode_steps), f"pass at most {_METAWORLD_MAX_STEPS}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = gym.make("Meta-World/MT1", env_name=task, seed=seed, max_episode_steps=steps,
                         disable_env_checker=True)
    size = render_size if render_size is not None else _auto_render_size(num_points)
    return _wrap_metaworld(inner, task=task, obs_mode=obs_mode, seed=seed, num_points=num_points,
                           render_size=size, max_episode_steps=steps, goal_visible=goal_visible,
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
            # One MT1 task sets the task's constants; then the object/goal positions are unfrozen so that
            # every reset draws fresh ones from the env's seeded generator (as DP3's wrapper does), instead
            # of cycling through MT1's 50 precomputed configurations.
            env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
            self.unwrapped.set_task(env.get_wrapper_attr("tasks")[0])
            self.unwrapped._freeze_rand_vec = False
            self.unwrapped.seeded_rand_vec = True
            self.unwrapped.seed(seed)
            self._obs_mode = obs_mode
            self._goal_visible = goal_visible
            self._frame_size = frame_size
            self._frame_renderer: Any = None
            self._cloud: DepthPointCloud | None = None
            low = np.asarray(env.action_space.low, dtype=np.float32)
            high = np.asarray(env.action_space.high, dtype=np.float32)
            self.action_space = spaces.Box(low, high, dtype=np.float32)
            if obs_mode == "state":
                shapes = {"state": (39,)}
            else:
                shapes = {"point_cloud": (num_points, 3), "agent_pos": (7,) if goal_visible else (4,)}
                self._cloud = DepthPointCloud(self.unwrapped.model, METAWORLD_CAMERA, size=render_size,
                                              num_points=num_points, workspace=METAWORLD_WORKSPACE, seed=seed)
            self.observation_space = spaces.Dict({key: spaces.Box(-np.inf, np.inf, shape, dtype=np.float32)
                                                  for key, shape in shapes.items()})
            extras = {"camera": METAWORLD_CAMERA, "render_size": render_size,
                      "workspace": [list(METAWORLD_WORKSPACE[0]), list(METAWORLD_WORKSPACE[1])],
                      "goal_visible": goal_visible} if obs_mode == "pointcloud" else {}
            self.spec_flowzoo = EnvSpec(task=task, obs_mode=obs_mode, obs_shapes=shapes, action_dim=len(low),
                                        action_low=tuple(float(v) for v in low),
                                        action_high=tuple(float(v) for v in high),
                                        max_episode_steps=max_episode_steps, extras=extras)

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
            import mujoco

            if self._frame_renderer is None:
                model = self.unwrapped.model
                model.vis.quality.offsamples = 0
                model.vis.global_.offwidth = max(model.vis.global_.offwidth, self._frame_size)
                model.vis.global_.offheight = max(model.vis.global_.offheight, self._frame_size)
                self._frame_renderer = open_renderer(model, self._frame_size)
                # Meta-World's corner cameras are rolled upside down; a free camera gives upright videos.
                self._frame_camera = mujoco.MjvCamera()
                self._frame_camera.type = mujoco.mjtCamera.mjCAMERA_FREE
                self._frame_camera.lookat[:] = (0.0, 0.65, 0.1)
                self._frame_camera.distance = 1.2
                self._frame_camera.azimuth, self._frame_camera.elevation = 155.0, -30.0
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


_WRAPPER_CLASS: type | None = None


def _wrap_metaworld(env: Any, **kwargs: Any) -> Any:
    global _WRAPPER_CLASS
    if _WRAPPER_CLASS is None:
        _WRAPPER_CLASS = _build_wrapper_class()
    return _WRAPPER_CLASS(env, **kwargs)


# --------------------------------------------------------------------------------------------- public API
def make_env(task: str, obs_mode: str = "state", *, seed: int = 0, num_points: int = 512,
             render_size: int | None = None, max_episode_steps: int | None = None, goal_visible: bool = False,
             frame_size: int = 224) -> Any:
    """Create a task's gymnasium environment with flowzoo's observation dict.

    Args:
        task: a name from :func:`list_tasks` (e.g. ``"push-v3"``, or a registered task).
        obs_mode: ``"state"`` or ``"pointcloud"``.
        seed: seeds the task variations drawn by ``reset()`` and the point sampler.
        num_points: N, points per cloud (pointcloud mode).
        render_size: depth image size in pixels; None picks 128 for N > 200, else 84 (an 84-px image holds
            only ~230 workspace points, so larger clouds would repeat points).
        max_episode_steps: truncation limit (Meta-World: at most and by default 500).
        goal_visible: pointcloud mode only: append the goal position to ``agent_pos`` (7 values, not 4).
        frame_size: size of the RGB frames ``render()`` returns.

    Returns:
        A ``gymnasium.Env``; :func:`env_spec` gives its :class:`EnvSpec`.

    Raises:
        ConfigError: unknown task (the message lists the valid ones) or invalid option.
        MissingDependencyError: gymnasium / mujoco / metaworld is not installed.
    """
    _check_options(obs_mode, num_points, render_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(expected("seed as an int", repr(seed), "pass e.g. seed=0"))
    _ensure_registered(task)
    if task in _REGISTRY:
        return _REGISTRY[task].factory(obs_mode=obs_mode, seed=int(seed), num_points=num_points,
                                       render_size=render_size, max_episode_steps=max_episode_steps)
    if not isinstance(task, str) or task not in _metaworld_tasks():
        _import_metaworld()  # a missing extra is the real problem, not the name
        raise _unknown_task(task)
    return _make_metaworld(task, obs_mode, int(seed), num_points, render_size, max_episode_steps,
                           bool(goal_visible), frame_size)


def make_env_like(spec: EnvSpec, *, seed: int = 0, max_episode_steps: int | None = None, **options: Any) -> Any:
    """An environment whose observations match ``spec`` (e.g. a policy's): same task, obs mode, cloud size,
    depth image size and ``agent_pos`` content; checked with :meth:`EnvSpec.check_compatible`.

    Args:
        spec: the spec to reproduce (from a dataset or a policy checkpoint).
        seed: the environment's seed.
        max_episode_steps: time limit (default ``spec.max_episode_steps``).
        **options: other :func:`make_env` options (e.g. ``frame_size``).
    """
    kwargs: dict[str, Any] = dict(options)
    _ensure_registered(spec.task)
    if spec.obs_mode == "pointcloud" and "point_cloud" in spec.obs_shapes:
        kwargs.setdefault("num_points", int(spec.obs_shapes["point_cloud"][0]))
        if spec.task not in _REGISTRY:
            kwargs.setdefault("render_size", spec.extras.get("render_size"))
            kwargs.setdefault("goal_visible", bool(spec.extras.get("goal_visible", False)))
    limit = max_episode_steps if max_episode_steps is not None else (spec.max_episode_steps or None)
    env = make_env(spec.task, spec.obs_mode, seed=seed, max_episode_steps=limit, **kwargs)
    try:
        spec.check_compatible(env_spec(env))
    except ConfigError:
        env.close()
        raise
    return env


def env_spec(env: Any) -> EnvSpec:
    """The :class:`EnvSpec` of an environment from :func:`make_env` (or any env with dict observations)."""
    try:
        spec = env.get_wrapper_attr("spec_flowzoo")
    except AttributeError:
        spec = getattr(env, "spec_flowzoo", None)
    if isinstance(spec, EnvSpec):
        return spec
    observation_space, action_space = env.observation_space, env.action_space
    shapes = getattr(observation_space, "spaces", None)
    if not isinstance(shapes, Mapping) or not hasattr(action_space, "low"):
        raise ConfigError(expected("an env with a Dict observation space and a Box action space",
                                   f"{type(observation_space).__name__} / {type(action_space).__name__}",
                                   "create it with flowzoo.robotics.make_env or set env.spec_flowzoo"))
    low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
    limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    return EnvSpec(task=getattr(getattr(env, "spec", None), "id", None) or "unknown",
                   obs_mode="pointcloud" if "point_cloud" in shapes else "state",
                   obs_shapes={key: tuple(space.shape) for key, space in shapes.items()},
                   action_dim=int(low.size), action_low=tuple(low.tolist()), action_high=tuple(high.tolist()),
                   max_episode_steps=int(limit) if limit else 0)


def expert_policy(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The task's scripted expert: ``policy(raw_obs) -> action`` (float32, clipped to [-1, 1]).

    For Meta-World ``raw_obs`` is the 39-d observation (``info["state"]`` of a flowzoo env).
    """
    _ensure_registered(task)
    if task in _REGISTRY:
        expert = _REGISTRY[task].expert
        if expert is None:
            raise ConfigError(expected(f"a registered expert for task {task!r}", "none",
                                       "pass expert= to register_task"))
        return expert()
    if not isinstance(task, str) or task not in _metaworld_tasks():
        _import_metaworld()
        raise _unknown_task(task)
    from metaworld.policies import ENV_POLICY_MAP

    scripted = ENV_POLICY_MAP[task]()

    def act(raw_obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # The scripted experts' gains saturate the [-1, 1] actions on purpose; the warning says so each call.
            warnings.simplefilter("ignore", UserWarning)
            action = scripted.get_action(np.asarray(raw_obs, dtype=np.float64))
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    return act
