"""Simulated tasks for robot policies: Meta-World v3 through gymnasium, plus tasks other modules register.

Meta-World (Yu et al., "Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement
Learning", arXiv 1910.10897; v3 tasks of the Farama ``metaworld`` 3.1 package) is what MP1 (arXiv 2507.10543)
and DP3 (arXiv 2403.03954) evaluate on. :func:`make_env` wraps ``gym.make("Meta-World/MT1", env_name=task)``
(the wrapper is :mod:`flowzoo.robotics.metaworld_env`) so that every flowzoo task looks the same to policies,
the controller and evaluation:

* **Observations** are dicts of float32 arrays (see :class:`EnvSpec` for the shapes):

  - obs mode ``"state"``: ``{"state": (39,)}``, Meta-World's observation: hand xyz (0:3), gripper opening
    (3), object poses padded to 14 values (4:18), the same 18 values of the previous step (18:36) and the
    goal position (36:39; MT1 tasks expose it).
  - obs mode ``"pointcloud"``: ``{"point_cloud": (N, 3), "agent_pos": (4,)}``; the cloud is the depth
    camera's view back-projected to the world frame, cropped and farthest-point sampled
    (:mod:`flowzoo.robotics.pointcloud`); ``agent_pos`` is the proprioceptive state: **hand xyz and gripper
    opening, i.e. Meta-World obs[0:4]**. The goal of reach/push/pick-place is then not observed (it is a
    marker site, absent from depth images: no cloud point lies near it), so those tasks can
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

:class:`EnvSpec`, :func:`env_spec` and :data:`OBS_MODES` live in :mod:`flowzoo.robotics.spec` and are
re-exported here.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int
from flowzoo.robotics.metaworld_env import import_metaworld, make_metaworld_env, metaworld_tasks
from flowzoo.robotics.spec import EnvSpec, check_obs_options, env_spec

__all__ = ["make_env", "make_env_like", "expert_policy", "list_tasks", "register_task"]

_EXTRA_HINT = "pip install 'flowzoo[robotics]'"


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
    if "metaworld" in sys.modules and name in metaworld_tasks():
        raise ConfigError(expected("a name that is not a Meta-World task", repr(name), "choose another name"))
    _REGISTRY[name] = _RegisteredTask(factory, expert)


def list_tasks() -> list[str]:
    """Every task :func:`make_env` accepts: Meta-World v3 tasks that have a scripted expert, then registered ones."""
    for task in _BUILTIN_TASK_MODULES:
        _ensure_registered(task)
    return metaworld_tasks() + sorted(_REGISTRY)


def _unknown_task(task: object) -> ConfigError:
    import difflib

    tasks = list_tasks()
    hint = "" if tasks else f" (no Meta-World tasks found: {_EXTRA_HINT})"
    # The full list is ~50 names: name the closest ones and where the list is, so the error stays one line.
    close = difflib.get_close_matches(str(task), tasks, n=3, cutoff=0.75)
    shown = f"e.g. {', '.join(tasks[:4])}, ..." if len(tasks) > 6 else ", ".join(tasks)
    return ConfigError(expected(f"a task name ({len(tasks)} known: {shown}){hint}", repr(task),
                                (f"did you mean {' or '.join(close)}? " if close else "") +
                                "flowzoo.robotics.envs.list_tasks() lists them all; register_task() adds your own"))


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
    check_obs_options(obs_mode, num_points, render_size)
    check_int(seed, "seed", fix="pass e.g. seed=0")
    _ensure_registered(task)
    if task in _REGISTRY:
        return _REGISTRY[task].factory(obs_mode=obs_mode, seed=int(seed), num_points=num_points,
                                       render_size=render_size, max_episode_steps=max_episode_steps)
    if not isinstance(task, str) or task not in metaworld_tasks():
        import_metaworld()  # a missing extra is the real problem, not the name
        raise _unknown_task(task)
    return make_metaworld_env(task, obs_mode, seed=int(seed), num_points=num_points, render_size=render_size,
                              max_episode_steps=max_episode_steps, goal_visible=bool(goal_visible),
                              frame_size=frame_size)


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
    if not isinstance(task, str) or task not in metaworld_tasks():
        import_metaworld()
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
