"""What a policy was trained for, and whether an environment matches it: :class:`EnvSpec`.

:data:`OBS_MODES` are the observation modes every flowzoo task offers (``"state"``, ``"pointcloud"``) and
:func:`check_obs_options` validates the observation options of :func:`flowzoo.robotics.envs.make_env`. An
:class:`EnvSpec` names a task, its observation keys and shapes, the action size and limits and the episode
length. Datasets (:mod:`flowzoo.robotics.data`) and policy checkpoints store one; evaluation and the controller
compare it with the environment's (:meth:`EnvSpec.check_compatible`) before a policy runs. :func:`env_spec` reads
the spec of an environment made by :func:`flowzoo.robotics.envs.make_env`, or derives one from any environment
with a Dict observation space and a Box action space.

These names are also importable from :mod:`flowzoo.robotics.envs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_positive_int

__all__ = ["OBS_MODES", "EnvSpec", "env_spec", "check_obs_options"]

OBS_MODES = ("state", "pointcloud")


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


def env_spec(env: Any) -> EnvSpec:
    """The :class:`EnvSpec` of an environment from :func:`~flowzoo.robotics.envs.make_env` (or any env with dict
    observations: then derived from its Dict observation space and Box action space)."""
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


def check_obs_options(obs_mode: object, num_points: object, render_size: object) -> None:
    """Raise ConfigError unless ``obs_mode`` is in :data:`OBS_MODES`, ``num_points`` a positive int and
    ``render_size`` None or an int >= 8."""
    if obs_mode not in OBS_MODES:
        raise ConfigError(expected(f"obs_mode in {OBS_MODES}", repr(obs_mode), "pass 'state' or 'pointcloud'"))
    check_positive_int(num_points, "num_points", fix="use e.g. 512 or 256")
    if render_size is not None:
        check_int(render_size, "render_size (or None for automatic)", low=8, fix="use e.g. 84 or 128")
