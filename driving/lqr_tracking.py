"""NAVSIM's plan simulation: an LQR tracker on a kinematic bicycle at 10 Hz (NAVSIM, arXiv 2406.15349, §3; the
nuPlan devkit's ``LQRTracker`` and ``KinematicBicycleModel``).

NAVSIM does not score a plan's raw 2 Hz poses: it interpolates the plan to 10 Hz, lets a controller drive a
kinematic bicycle along it from the ego's current state for the 4 s horizon, and scores the simulated states.
This module does the same, vectorised over a batch of plans (numpy):

1. :func:`interpolate_plans`: the current pose (origin, heading 0) prepended, poses linearly interpolated to
   ``SIM_DT`` (headings unwrapped first).
2. :func:`fit_speed_curvature`: speed and curvature profiles of the interpolated poses by regularised least
   squares, ``Δxy_k ≈ dt·v_k·(cos θ_k, sin θ_k)`` with ``v_k = v_0 + dt·Σ_{i<k} a_i`` and a jerk penalty on
   ``a_{i+1} − a_i``; then ``Δθ_k ≈ dt·v_k·κ_k`` with ``κ_k = κ_0 + dt·Σ_{i<k} κ̇_i`` and a penalty on ``κ̇``.
3. :class:`LQRTracker`: per 10 Hz step, a one-step LQR on the speed ``v_N = v + N·dt·a`` towards the reference
   speed ``N`` steps ahead (longitudinal), and a one-step LQR on the lateral error ``e``, heading error ``ψ``
   and steering angle ``δ`` with dynamics ``ė = v ψ``, ``ψ̇ = v (δ / L − κ)``, ``δ̇ = u``, linearised about the
   planned speeds and curvatures over the next ``N`` steps (time-varying, Euler-discretised); a proportional
   stopping controller when both the speed and the reference are below ``stopping_speed``.
4. The bicycle (reference point: the plan's pose point; NAVSIM's is the rear axle): first-order lags on the
   commanded acceleration (0.2 s) and steering angle (0.05 s), ``ẋ = v cos θ``, ``ẏ = v sin θ``,
   ``θ̇ = v tan δ / L``, ``v̇ = a``, the steering angle clamped to ``±MAX_STEERING``.

Time here is driving time in seconds from the current frame (plans have no flow time). Rationale: comfort, TTC
and collisions of the *driven* path, as NAVSIM scores them, rather than finite differences of 8 sparse poses.

Example:
    >>> plan = np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)])
    >>> states = simulate_plans(plan, speed=10.0)
    >>> states["poses"].shape, round(float(states["poses"][0, -1, 0]), 3), round(float(states["speed"][0, -1]), 3)
    ((1, 41, 3), 40.0, 10.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowzoo.core.errors import ShapeError, expected
from flowzoo.core.validation import check_number, check_positive
from flowzoo.driving.scenes import DT

__all__ = ["SIM_DT", "WHEEL_BASE", "MAX_STEERING", "interpolate_plans", "fit_speed_curvature", "LQRTracker",
           "simulate_plans"]

SIM_DT = 0.1  # s, NAVSIM's simulation and scoring interval
WHEEL_BASE = 3.089  # m, nuPlan's Chrysler Pacifica
MAX_STEERING = np.pi / 3  # rad, nuPlan's kinematic bicycle


def _wrap(angle: np.ndarray) -> np.ndarray:
    return np.arctan2(np.sin(angle), np.cos(angle))


def interpolate_plans(plans: np.ndarray, *, plan_dt: float = DT, sim_dt: float = SIM_DT) -> np.ndarray:
    """Plans ``(P, T, 3)`` at ``plan_dt, 2·plan_dt, ...`` -> poses ``(P, N + 1, 3)`` at ``0, sim_dt, ...,
    T·plan_dt`` with the current pose (origin, heading 0) first.

    Example:
        >>> interpolate_plans(np.array([[[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]]))[0, :3, 0].round(2).tolist()
        [0.0, 0.2, 0.4]
    """
    plans = np.asarray(plans, dtype=float)
    if plans.ndim == 2:
        plans = plans[None]
    if plans.ndim != 3 or plans.shape[-1] != 3 or plans.shape[1] < 1 or not np.isfinite(plans).all():
        raise ShapeError(expected("finite plans of shape (P, T, 3) or (T, 3): poses (x, y, heading)",
                                  f"shape {plans.shape}" + ("" if np.isfinite(plans).all() else " with NaN/inf"),
                                  "pass the planner's poses in the ego frame"))
    poses = np.concatenate([np.zeros((len(plans), 1, 3)), plans], axis=1)
    poses[..., 2] = np.unwrap(poses[..., 2], axis=1)
    known = plan_dt * np.arange(poses.shape[1])
    steps = int(round(known[-1] / sim_dt))
    times = sim_dt * np.arange(steps + 1)
    out = np.empty((len(plans), steps + 1, 3))
    for p in range(len(plans)):
        for c in range(3):
            out[p, :, c] = np.interp(times, known, poses[p, :, c])
    return out


def _integrate(initial: np.ndarray, rates: np.ndarray, dt: float) -> np.ndarray:
    """Profile ``(P, M + 1)`` from initial values ``(P,)`` and rates ``(P, M)``."""
    return initial[:, None] + np.concatenate([np.zeros((len(rates), 1)), np.cumsum(rates * dt, axis=1)], axis=1)


def fit_speed_curvature(poses: np.ndarray, dt: float = SIM_DT, *, jerk_penalty: float = 1e-4,
                        curvature_rate_penalty: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Speed and curvature profiles ``(P, N)`` (at the first N of the N + 1 poses) that explain poses
    ``(P, N + 1, 3)`` sampled every ``dt``, by the two regularised least-squares fits of the module docstring.

    Example:
        >>> poses = interpolate_plans(np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)]))
        >>> v, k = fit_speed_curvature(poses)
        >>> round(float(v.mean()), 4), round(float(abs(k).max()), 4)
        (10.0, 0.0)
    """
    poses = np.asarray(poses, dtype=float)
    n = poses.shape[1] - 1
    step = np.diff(poses, axis=1)
    heading = poses[:, :-1, 2]
    direction = np.stack([np.cos(heading), np.sin(heading)], axis=-1)  # (P, n, 2)
    # unknowns (v_0, a_0 .. a_{n-2}); displacement k uses v_0 and a_i for i < k
    lower = np.tril(np.ones((n, n - 1)), k=-1)
    design = np.concatenate([dt * np.ones((n, 1)), dt ** 2 * lower], axis=1)  # (n, n)
    a_matrix = direction[..., None] * design[None, :, None, :]  # (P, n, 2, n)
    a_matrix = a_matrix.reshape(len(poses), 2 * n, n)
    jerk = np.zeros((max(n - 2, 0), n))
    jerk[np.arange(n - 2), np.arange(1, n - 1)], jerk[np.arange(n - 2), np.arange(2, n)] = -1.0, 1.0
    lhs = np.einsum("pki,pkj->pij", a_matrix, a_matrix) + jerk_penalty * jerk.T @ jerk
    rhs = np.einsum("pki,pk->pi", a_matrix, step[..., :2].reshape(len(poses), -1))
    solution = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    speed = _integrate(solution[:, 0], solution[:, 1:], dt)  # (P, n)
    # unknowns (κ_0, κ̇_0 .. κ̇_{n-2}); heading change k = dt·v_k·κ_k
    b_matrix = speed[..., None] * np.concatenate([dt * np.ones((n, 1)), dt ** 2 * lower], axis=1)[None]
    penalty = curvature_rate_penalty * np.eye(n)
    penalty[0, 0] = 1e-10  # keeps the system regular when the plan starts at rest
    lhs = np.einsum("pki,pkj->pij", b_matrix, b_matrix) + penalty
    rhs = np.einsum("pki,pk->pi", b_matrix, _wrap(step[..., 2]))
    solution = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    return speed, _integrate(solution[:, 0], solution[:, 1:], dt)


@dataclass(frozen=True)
class LQRTracker:
    """The decoupled LQR tracker and the bicycle it drives (module docstring); defaults are nuPlan's / NAVSIM's.

    Args:
        q_speed, r_accel: longitudinal weights on the speed error and the acceleration.
        q_lateral: weights on (lateral error, heading error, steering angle); ``r_steering_rate`` on its input.
        horizon: look-ahead steps N of both one-step problems.
        stopping_gain, stopping_speed: the proportional stopping controller (1/s, m/s).
        wheel_base, max_steering: bicycle parameters; ``accel_lag``, ``steering_lag``: first-order time constants.
    """

    q_speed: float = 10.0
    r_accel: float = 1.0
    q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0)
    r_steering_rate: float = 1.0
    horizon: int = 10
    stopping_gain: float = 0.5
    stopping_speed: float = 0.2
    wheel_base: float = WHEEL_BASE
    max_steering: float = MAX_STEERING
    accel_lag: float = 0.2
    steering_lag: float = 0.05

    def _lateral_rate(self, error: np.ndarray, speeds: np.ndarray, curvatures: np.ndarray, dt: float) -> np.ndarray:
        """Steering rate minimising the lateral state N steps ahead: ``x_N = A x_0 + B u + g`` composed over the
        time-varying Euler steps, then the one-step LQR ``u = −(BᵀQB + R)⁻¹ BᵀQ (A x_0 + g)``."""
        batch = len(error)
        a_total = np.broadcast_to(np.eye(3), (batch, 3, 3)).copy()
        b_total, g_total = np.zeros((batch, 3)), np.zeros((batch, 3))
        b_step = np.array([0.0, 0.0, dt])
        for k in range(self.horizon):
            step = np.broadcast_to(np.eye(3), (batch, 3, 3)).copy()
            step[:, 0, 1] = speeds[:, k] * dt
            step[:, 1, 2] = speeds[:, k] * dt / self.wheel_base
            affine = np.zeros((batch, 3))
            affine[:, 1] = -speeds[:, k] * curvatures[:, k] * dt
            a_total = np.einsum("bij,bjk->bik", step, a_total)
            b_total = np.einsum("bij,bj->bi", step, b_total) + b_step
            g_total = np.einsum("bij,bj->bi", step, g_total) + affine
        free = np.einsum("bij,bj->bi", a_total, error) + g_total
        free[:, 1:] = _wrap(free[:, 1:])
        q = np.asarray(self.q_lateral)
        return -(b_total * q * free).sum(-1) / ((b_total * q * b_total).sum(-1) + self.r_steering_rate)

    def commands(self, state: dict[str, np.ndarray], reference: np.ndarray, speed_ref: np.ndarray,
                 curvature_ref: np.ndarray, index: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """(acceleration, steering rate) ``(P,)`` at simulation step ``index`` for the bicycle ``state``."""
        last = speed_ref.shape[1] - 1
        ahead = min(index + self.horizon, last)
        v_target = speed_ref[:, ahead]
        curvatures = np.concatenate([curvature_ref[:, index:ahead],
                                     np.repeat(curvature_ref[:, ahead:ahead + 1], self.horizon - (ahead - index), 1)],
                                    axis=1)
        v = state["speed"]
        stop = (v_target <= self.stopping_speed) & (v <= self.stopping_speed)
        gain = self.horizon * dt
        accel = -gain * self.q_speed * (v - v_target) / (gain ** 2 * self.q_speed + self.r_accel)
        accel = np.where(stop, -self.stopping_gain * (v - v_target), accel)
        ref = reference[:, index]
        dx, dy = state["x"] - ref[:, 0], state["y"] - ref[:, 1]
        error = np.stack([-dx * np.sin(ref[:, 2]) + dy * np.cos(ref[:, 2]), _wrap(state["heading"] - ref[:, 2]),
                          state["steering"]], axis=-1)
        speeds = v[:, None] + accel[:, None] * dt * np.arange(self.horizon)
        rate = self._lateral_rate(error, speeds, curvatures, dt)
        return accel, np.where(stop, 0.0, rate)

    def propagate(self, state: dict[str, np.ndarray], accel_cmd: np.ndarray, rate_cmd: np.ndarray,
                  dt: float) -> dict[str, np.ndarray]:
        """One Euler step of the lagged kinematic bicycle (module docstring, item 4)."""
        accel = state["accel"] + dt / (dt + self.accel_lag) * (accel_cmd - state["accel"])
        wanted = state["steering"] + dt * rate_cmd
        steering = state["steering"] + dt / (dt + self.steering_lag) * (wanted - state["steering"])
        v, heading = state["speed"], state["heading"]
        new_speed = v + accel * dt
        new_steering = np.clip(steering, -self.max_steering, self.max_steering)
        return {"x": state["x"] + v * np.cos(heading) * dt, "y": state["y"] + v * np.sin(heading) * dt,
                "heading": heading + v * np.tan(state["steering"]) / self.wheel_base * dt, "speed": new_speed,
                "accel": accel, "steering": new_steering,
                "yaw_rate": new_speed * np.tan(new_steering) / self.wheel_base}


def simulate_plans(plans: np.ndarray, *, speed: float, accel: float = 0.0, yaw_rate: float = 0.0,
                   plan_dt: float = DT, sim_dt: float = SIM_DT, tracker: LQRTracker | None = None
                   ) -> dict[str, np.ndarray]:
    """Drive a kinematic bicycle along each plan with the LQR tracker, NAVSIM's way (module docstring).

    Args:
        plans: ``(P, T, 3)`` or ``(T, 3)`` poses at ``plan_dt, 2·plan_dt, ...`` in the ego frame.
        speed, accel, yaw_rate: the ego's current state (m/s, m/s², rad/s); the initial steering angle is the one
            that produces ``yaw_rate`` at ``speed``.
        plan_dt, sim_dt: the plan's and the simulation's intervals (s).
        tracker: the controller and bicycle parameters (default: NAVSIM's).

    Returns:
        ``{"times": (N + 1,), "poses": (P, N + 1, 3), "speed", "accel", "steering", "yaw_rate": (P, N + 1)}``,
        the current state first.
    """
    tracker = tracker or LQRTracker()
    speed = check_number(speed, "speed", low=0.0)
    accel, yaw_rate = check_number(accel, "accel"), check_number(yaw_rate, "yaw_rate")
    plan_dt, sim_dt = check_positive(plan_dt, "plan_dt"), check_positive(sim_dt, "sim_dt")
    reference = interpolate_plans(plans, plan_dt=plan_dt, sim_dt=sim_dt)
    speed_ref, curvature_ref = fit_speed_curvature(reference, sim_dt)
    count, steps = reference.shape[0], reference.shape[1] - 1
    steering0 = float(np.arctan(yaw_rate * tracker.wheel_base / speed)) if speed > 0.1 else 0.0
    steering0 = float(np.clip(steering0, -tracker.max_steering, tracker.max_steering))
    state = {"x": np.zeros(count), "y": np.zeros(count), "heading": np.zeros(count), "speed": np.full(count, speed),
             "accel": np.full(count, accel), "steering": np.full(count, steering0),
             "yaw_rate": np.full(count, speed * np.tan(steering0) / tracker.wheel_base)}
    history = [state]
    for index in range(steps):
        accel_cmd, rate_cmd = tracker.commands(state, reference, speed_ref, curvature_ref, index, sim_dt)
        state = tracker.propagate(state, accel_cmd, rate_cmd, sim_dt)
        history.append(state)
    stacked = {key: np.stack([h[key] for h in history], axis=1) for key in state}
    poses = np.stack([stacked.pop("x"), stacked.pop("y"), stacked.pop("heading")], axis=-1)
    return {"times": sim_dt * np.arange(steps + 1), "poses": poses, **stacked}
