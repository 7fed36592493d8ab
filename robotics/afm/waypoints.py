r"""Waypoint missions with drifting dynamics, the shared part of the Action Flow Matching simulators.

Action Flow Matching (Mallo et al., RSS 2025, arXiv 2504.18471) is evaluated on a robot that follows waypoints
while its dynamics change mid-run. This module holds what every such simulator shares
(the simulators themselves are in :mod:`flowzoo.robotics.afm.sim` and :mod:`flowzoo.robotics.afm.point_mass`):

* :class:`WaypointTask` — the interface (``state``, ``goal``, ``step(action)``, ``success``, ``result()``) and
  the bookkeeping: a waypoint counts as reached within ``reach_radius``; success = reached waypoints / total;
  actions are validated and clipped to the limits (actuators saturate).
* :class:`DriftSchedule` — when the dynamics change. The paper's intervention (its code's ``ugv.py``): the
  change applies once more than 15 % of the waypoints are reached and the nominal dynamics return once more
  than 80 % are; fixed steps or a gradual ramp are options.
* :class:`MissionResult` — the outcome of a mission; :func:`circle_waypoints`, :func:`figure8_waypoints` —
  waypoint loops; :func:`wrap_angle`.

All names are also importable from :mod:`flowzoo.robotics.afm.sim`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected

__all__ = ["DriftSchedule", "MissionResult", "WaypointTask", "circle_waypoints", "figure8_waypoints", "wrap_angle"]

Tensor = torch.Tensor


def wrap_angle(angle):
    """Wrap angles (numpy or torch) to [−π, π)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def circle_waypoints(count: int = 24, radius: float = 4.0, center: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``count`` points evenly spaced counter-clockwise on a circle, starting at angle 0; shape (count, 2)."""
    if count < 2:
        raise ConfigError(expected("at least 2 waypoints", count, "pass count >= 2"))
    angles = 2 * math.pi * np.arange(count) / count
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def figure8_waypoints(count: int = 60, scale: float = 6.0) -> np.ndarray:
    r"""``count`` points on the lemniscate of Gerono :math:`(s\sin u, s\sin u\cos u)`; shape (count, 2)."""
    if count < 4:
        raise ConfigError(expected("at least 4 waypoints", count, "pass count >= 4"))
    u = 2 * math.pi * np.arange(count) / count
    return np.stack([scale * np.sin(u), scale * np.sin(u) * np.cos(u)], axis=1)


@dataclass
class DriftSchedule:
    """When the dynamics change: named parameter multipliers that switch on and back off during a mission.

    By default (the paper's intervention) ``changed`` applies once more than ``change_fraction`` of the
    waypoints are reached and the nominal values return once more than ``reset_fraction`` are. Give
    ``change_step`` / ``reset_step`` to switch at fixed steps instead. ``ramp_waypoints`` > 0 makes the change
    a drift: the multipliers move linearly from nominal to ``changed`` over that many further waypoints.

    Args:
        changed: parameter name -> multiplier while changed, e.g. ``{"v_gain": -1.0, "w_gain": 1.0}``.
        change_fraction, reset_fraction: waypoint fractions (0 <= change < reset <= 1).
        change_step, reset_step: step numbers that override the fractions when given.
        ramp_waypoints: waypoints over which the change ramps in (0: at once).

    Example:
        >>> schedule = DriftSchedule({"v_gain": -1.0, "w_gain": 1.0})
        >>> [schedule.multipliers(reached, 20, step=0)["v_gain"] for reached in (3, 4, 16, 17)]
        [1.0, -1.0, -1.0, 1.0]
    """

    changed: Mapping[str, float]
    change_fraction: float = 0.15
    reset_fraction: float = 0.8
    change_step: int | None = None
    reset_step: int | None = None
    ramp_waypoints: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.changed, Mapping) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in self.changed.values()):
            raise ConfigError(expected("changed as a mapping name -> finite multiplier", self.changed,
                                       'pass e.g. {"v_gain": -1.0, "w_gain": 1.0}'))
        if not 0.0 <= self.change_fraction < self.reset_fraction <= 1.0:
            raise ConfigError(expected("0 <= change_fraction < reset_fraction <= 1",
                                       (self.change_fraction, self.reset_fraction), "use e.g. 0.15 and 0.8"))
        if self.ramp_waypoints < 0:
            raise ConfigError(expected("ramp_waypoints >= 0", self.ramp_waypoints, "use 0 for an abrupt change"))

    def multipliers(self, reached: int, total: int, step: int) -> dict[str, float]:
        """The multipliers in force after ``reached`` of ``total`` waypoints at step ``step``."""
        if self.change_step is not None or self.reset_step is not None:
            active = (self.change_step is not None and step >= self.change_step
                      and (self.reset_step is None or step < self.reset_step))
            amount = 1.0 if active else 0.0
        else:
            active = self.change_fraction * total < reached <= self.reset_fraction * total
            first = math.floor(self.change_fraction * total) + 1   # smallest count with reached > fraction * total
            amount = min(1.0, (reached - first + 1) / (self.ramp_waypoints + 1)) if active else 0.0
        return {name: 1.0 + amount * (value - 1.0) for name, value in self.changed.items()}


@dataclass
class MissionResult:
    """Outcome of one mission: success = reached / total; ``steps_to_finish`` is None when unfinished."""

    success_rate: float
    reached: int
    total: int
    steps: int
    steps_to_finish: int | None
    change_step: int | None
    reset_step: int | None
    positions: np.ndarray = field(repr=False)
    waypoints: np.ndarray = field(repr=False)


class WaypointTask:
    """Shared waypoint bookkeeping; subclasses implement the physics (``_advance``) and the model adapters.

    A subclass sets ``state_dim``, ``action_dim``, ``action_low``, ``action_high``, ``dt``, ``reach_radius``
    and ``misalignment_threshold`` (a state-error norm that signals changed dynamics).
    """

    state_dim: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    dt: float
    reach_radius: float
    misalignment_threshold: float

    def __init__(self, waypoints: np.ndarray, schedule: DriftSchedule | None, max_steps: int):
        waypoints = np.asarray(waypoints, dtype=np.float64)
        if waypoints.ndim != 2 or waypoints.shape[1] != 2 or len(waypoints) == 0:
            raise ShapeError(expected("waypoints of shape (N, 2) with N >= 1", waypoints.shape,
                                      "use circle_waypoints() or figure8_waypoints()"))
        if not np.isfinite(waypoints).all():
            raise NonFiniteError(expected("finite waypoints", "NaN or Inf", "check the waypoint array"))
        if max_steps < 1:
            raise ConfigError(expected("max_steps >= 1", max_steps, "pass a positive step budget"))
        self.waypoints, self.schedule, self.max_steps = waypoints, schedule, int(max_steps)
        self.reached = self.steps = 0
        self.change_step: int | None = None
        self.reset_step: int | None = None
        self.state = np.zeros(self.state_dim)
        self._positions: list[np.ndarray] = []

    @property
    def goal(self) -> np.ndarray:
        """The next waypoint (the last one once all are reached)."""
        return self.waypoints[min(self.reached, len(self.waypoints) - 1)]

    @property
    def done(self) -> bool:
        return self.reached >= len(self.waypoints) or self.steps >= self.max_steps

    @property
    def success(self) -> float:
        """Fraction of the waypoints reached so far."""
        return self.reached / len(self.waypoints)

    def _start(self, state: np.ndarray) -> np.ndarray:
        self.state = np.asarray(state, dtype=np.float64).copy()
        self.reached = self.steps = 0
        self.change_step = self.reset_step = None
        self._positions = [self.position_np(self.state)]
        self._apply_schedule()
        return self.state.copy()

    def _apply_schedule(self) -> None:
        if self.schedule is None:
            return
        multipliers = self.schedule.multipliers(self.reached, len(self.waypoints), self.steps)
        changed = any(abs(m - 1.0) > 0 for m in multipliers.values())
        if changed and self.change_step is None:
            self.change_step = self.steps
        if not changed and self.change_step is not None and self.reset_step is None:
            self.reset_step = self.steps
        self.set_dynamics(**multipliers)

    def check_action(self, action) -> np.ndarray:
        """Validate one action and clip it to the limits (actuators saturate)."""
        action = np.asarray(action.detach().cpu() if isinstance(action, Tensor) else action, dtype=np.float64)
        if action.shape != (self.action_dim,):
            raise ShapeError(expected(f"one action of shape ({self.action_dim},)", action.shape,
                                      "pass a single action vector, not a batch"))
        if not np.isfinite(action).all():
            raise NonFiniteError(expected("a finite action", action, "check the controller's output"))
        return np.clip(action, self.action_low, self.action_high)

    def step(self, action) -> np.ndarray:
        """Apply one action for ``dt`` seconds; returns the new state. A waypoint within ``reach_radius`` counts."""
        if self.done:
            raise ConfigError(expected("a mission that is not done", f"reached {self.reached}, step {self.steps}",
                                       "call reset() to start a new mission"))
        self.state = self._advance(self.state, self.check_action(action))
        self.steps += 1
        if np.linalg.norm(self.position_np(self.state) - self.goal) < self.reach_radius:
            self.reached += 1
        self._positions.append(self.position_np(self.state))
        self._apply_schedule()
        return self.state.copy()

    def result(self) -> MissionResult:
        finished = self.reached >= len(self.waypoints)
        return MissionResult(self.success, self.reached, len(self.waypoints), self.steps,
                             self.steps if finished else None, self.change_step, self.reset_step,
                             np.array(self._positions), self.waypoints.copy())

    # ---- what subclasses provide
    def position_np(self, state: np.ndarray) -> np.ndarray:
        return state[:2]

    def position(self, states: Tensor) -> Tensor:
        """Planar positions (B, 2) of a batch of states (B, state_dim)."""
        return states[..., :2]

    def set_dynamics(self, **multipliers: float) -> None:
        raise NotImplementedError

    def _advance(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        raise NotImplementedError
