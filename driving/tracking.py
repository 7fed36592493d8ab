"""A trajectory tracker for closed-loop driving: pure pursuit and a speed loop, at the simulator's rate.

GoalFlow (arXiv 2503.05689) plans 8 poses at 2 Hz (4 s) in the ego frame; NAVSIM tracks such a plan with an LQR
at 10 Hz. :class:`Tracker` follows a plan with pure pursuit for the steering (Coulter, CMU-RI-TR-92-01,
curvature ``κ = 2 sin α / L_d`` of the arc through the look-ahead point) inverted through highway-env's kinematic
bicycle (heading rate ``v sin β / (ℓ/2)``, slip ``β = atan(tan δ / 2)``, so ``δ = atan(2 tan β)`` with
``sin β = κ ℓ / 2``) and a feed-forward + proportional speed controller on the plan's speed profile. Poses are
world poses ``(x, y, θ)`` in flowzoo's right-handed frame; time is simulation seconds (plans have no diffusion
time). Rationale: the simplest controller whose steering is exact for the simulator's own vehicle model.

Example:
    >>> float(Tracker().plan_speeds(np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)]), 10.0)[-1])
    10.0
    >>> bicycle_step(np.array([0.0, 0.0, 0.0, 10.0]), 1.0, 0.0, 0.1).tolist()
    [1.0, 0.0, 0.0, 10.1]
"""

from __future__ import annotations

import numpy as np

from flowzoo.core.errors import ShapeError, expected
from flowzoo.driving.scenes import DT

__all__ = ["ACCEL_LIMIT", "STEER_LIMIT", "bicycle_step", "Tracker"]

ACCEL_LIMIT = 6.0  # m/s², IDMVehicle.ACC_MAX
STEER_LIMIT = np.pi / 3  # rad, ControlledVehicle.MAX_STEERING_ANGLE


def bicycle_step(state: np.ndarray, accel: float, steering: float, dt: float, length: float = 5.0) -> np.ndarray:
    """One step of highway-env's kinematic bicycle (``Vehicle.step``) on ``(x, y, θ, v)``: the model that
    :class:`Tracker` inverts, for tests and offline checks.

    Example:
        >>> bicycle_step(np.array([0.0, 0.0, 0.0, 10.0]), 1.0, 0.0, 0.1).tolist()
        [1.0, 0.0, 0.0, 10.1]
    """
    x, y, theta, v = np.asarray(state, dtype=float)
    beta = np.arctan(0.5 * np.tan(steering))
    return np.array([x + v * np.cos(theta + beta) * dt, y + v * np.sin(theta + beta) * dt,
                     theta + v * np.sin(beta) / (length / 2) * dt, v + accel * dt])


class Tracker:
    """Follows a planned trajectory: pure-pursuit steering and a feed-forward + P speed controller (see the
    module docstring). Poses are world poses in flowzoo's (right-handed) frame.

    Args:
        length: vehicle length ℓ of the bicycle model (highway-env: 5 m).
        lookahead_time, min_lookahead: look-ahead distance ``L_d = max(min_lookahead, lookahead_time · v)``.
        speed_gain: 1/s on the speed error; ``position_gain``: 1/s² on the along-track position error.
    """

    def __init__(self, *, length: float = 5.0, lookahead_time: float = 0.6, min_lookahead: float = 4.0,
                 speed_gain: float = 1.5, position_gain: float = 0.3):
        self.length, self.lookahead_time, self.min_lookahead = length, lookahead_time, min_lookahead
        self.speed_gain, self.position_gain = speed_gain, position_gain
        self.path = None

    @staticmethod
    def plan_speeds(plan: np.ndarray, speed: float) -> np.ndarray:
        """Speeds ``(T + 1,)`` at the plan times 0, DT, ..., the current ``speed`` first (central differences of
        the arc length between)."""
        xy = np.concatenate([np.zeros((1, 2)), np.asarray(plan, dtype=float)[:, :2]])
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        v = np.gradient(s, DT)
        v[0] = speed
        return v

    def set_plan(self, plan: np.ndarray, pose: np.ndarray, speed: float, time: float) -> None:
        """Follow ``plan`` ``(T, 3)`` (ego frame of world ``pose``, made at simulation ``time``) from now on."""
        plan = np.asarray(plan, dtype=float)
        if plan.ndim != 2 or plan.shape[1] < 2 or not np.isfinite(plan[:, :2]).all():
            raise ShapeError(expected("a finite plan of shape (T, 3)", f"shape {plan.shape}",
                                      "return (x, y, heading) poses from the planner"))
        c, s = np.cos(pose[2]), np.sin(pose[2])
        world = pose[:2] + plan[:, :2] @ np.array([[c, s], [-s, c]])
        self.path = np.concatenate([pose[None, :2], world])
        self.arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.path, axis=0), axis=1))])
        self.speeds = self.plan_speeds(plan, speed)
        self.times = DT * np.arange(len(self.path))
        self.start = time

    def _project(self, xy: np.ndarray) -> float:
        start, direction = self.path[:-1], np.diff(self.path, axis=0)
        length2 = np.maximum((direction ** 2).sum(-1), 1e-12)
        u = np.clip(((xy - start) * direction).sum(-1) / length2, 0.0, 1.0)
        dist = np.linalg.norm(start + u[:, None] * direction - xy, axis=1)
        best = int(dist.argmin())
        return float(self.arc[best] + u[best] * np.sqrt(length2[best]))

    def _point_at(self, s: float) -> np.ndarray:
        if s <= self.arc[-1] or self.arc[-1] < 1e-6:
            return np.array([np.interp(s, self.arc, self.path[:, 0]), np.interp(s, self.arc, self.path[:, 1])])
        tail = self.path[-1] - self.path[-2] if np.linalg.norm(self.path[-1] - self.path[-2]) > 1e-6 else \
            self.path[-1] - self.path[0]
        return self.path[-1] + tail / max(np.linalg.norm(tail), 1e-9) * (s - self.arc[-1])  # past the end: extend

    def control(self, pose: np.ndarray, speed: float, time: float) -> tuple[float, float]:
        """(acceleration m/s², steering rad) at world ``pose`` and ``speed``, ``time`` seconds into the run."""
        if self.path is None:
            return 0.0, 0.0
        tau = float(np.clip(time - self.start, 0.0, self.times[-1]))
        s_now = self._project(np.asarray(pose[:2], dtype=float))
        v_ref = float(np.interp(tau, self.times, self.speeds))
        a_ff = float(np.interp(tau, self.times[:-1] + DT / 2, np.diff(self.speeds) / DT))
        s_ref = float(np.interp(tau, self.times, self.arc))
        accel = a_ff + self.speed_gain * (v_ref - speed) + self.position_gain * float(np.clip(s_ref - s_now, -5, 5))
        if v_ref < 0.05 and speed < 0.3:  # the plan stops: hold still instead of creeping on the position term
            accel = -speed / 0.2
        lookahead = max(self.min_lookahead, self.lookahead_time * abs(speed))
        target = self._point_at(s_now + lookahead) - pose[:2]
        alpha = np.arctan2(target[1], target[0]) - pose[2]
        curvature = 2 * np.sin(alpha) / max(np.linalg.norm(target), 1e-6)
        beta = np.arcsin(np.clip(curvature * self.length / 2, -1.0, 1.0))
        steering = float(np.clip(np.arctan(2 * np.tan(beta)), -STEER_LIMIT, STEER_LIMIT))
        return float(np.clip(accel, -ACCEL_LIMIT, ACCEL_LIMIT)), steering
