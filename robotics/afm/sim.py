r"""Drifting-dynamics simulators for Action Flow Matching (Mallo et al., RSS 2025, arXiv 2504.18471).

Two waypoint-following tasks whose dynamics change mid-run, both behind one small interface
(:class:`WaypointTask`: ``state``, ``goal``, ``step(action)``, ``success``, ``result()``):

* :class:`UnicycleTask` — the paper's unmanned ground vehicle. State :math:`(x, y, \theta)`, action
  :math:`(v, \omega)` with :math:`v \in [-1, 1]`, :math:`\omega \in [-\pi/2, \pi/2]`; one step of
  :math:`\Delta t = 0.2` s applies control gains :math:`(g_v, g_\omega)`:

  .. math::  x' = x + g_v v \cos\theta\,\Delta t,\quad y' = y + g_v v \sin\theta\,\Delta t,\quad
             \theta' = \mathrm{wrap}(\theta + g_\omega \omega\,\Delta t),

  plus Gaussian noise of std σ = 1e-5 on every component. The paper's intervention (its code's ``ugv.py``): the
  gains change once more than 15 % of the waypoints are reached and return to (1, 1) once more than 80 % are;
  gains may invert a control (e.g. (−1, 1)). A waypoint counts as reached within 0.5 m; success = reached
  waypoints / total.
* :class:`PointMassTask` — a planar point mass on two slide joints driven by motors, built from an MJCF string
  with MuJoCo. Its body mass, viscous joint friction (damping) and actuator gain (gear) are scaled mid-run
  (:meth:`PointMassTask.set_dynamics`), on the same waypoint schedule or at given steps.

Each task also gives what a learned model and Action Flow Matching need, batched in torch: the model's input
features and target (state increments), the state error between a prediction and a realised state (angles
wrapped), the conditioning features of a dynamics regime (state features and the error as the flow sees it),
and the *nominal inverse* — the action that the
nominal dynamics would need to produce an observed transition — used to relabel the robot's own transitions.

Each simulator is its own module, and every name is importable from here: :class:`UnicycleTask` (this module),
:class:`PointMassTask` (:mod:`flowzoo.robotics.afm.point_mass`), and the shared :class:`WaypointTask`,
:class:`DriftSchedule`, :class:`MissionResult` and waypoint loops (:mod:`flowzoo.robotics.afm.waypoints`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_number
from flowzoo.robotics.afm.waypoints import DriftSchedule, WaypointTask, circle_waypoints, wrap_angle

__all__ = ["UnicycleTask"]

Tensor = torch.Tensor


class UnicycleTask(WaypointTask):
    """The paper's ground vehicle following a waypoint loop under drifting control gains.

    Args:
        waypoints: (N, 2) loop; the vehicle starts at the first point facing the second and must visit the
            others in order and return to the first.
        schedule: gain changes, e.g. ``DriftSchedule({"v_gain": -1.0, "w_gain": 1.0})``; None keeps (1, 1).
        dt: step length in seconds. noise_std: std of the Gaussian state noise. seed: noise seed.
        reach_radius: distance at which a waypoint counts as reached. max_steps: step budget.
    """

    state_dim, action_dim = 3, 2
    regime_state_dim = 2
    misalignment_threshold = 0.05

    def __init__(self, waypoints: np.ndarray | None = None, schedule: DriftSchedule | None = None, *,
                 dt: float = 0.2, noise_std: float = 1e-5, reach_radius: float = 0.5, max_steps: int = 1500,
                 seed: int = 0):
        self.action_low = np.array([-1.0, -math.pi / 2])
        self.action_high = np.array([1.0, math.pi / 2])
        self.dt, self.noise_std, self.reach_radius = float(dt), float(noise_std), float(reach_radius)
        if self.dt <= 0 or self.noise_std < 0 or self.reach_radius <= 0:
            raise ConfigError(expected("dt > 0, noise_std >= 0, reach_radius > 0",
                                       (dt, noise_std, reach_radius), "use dt=0.2, noise_std=1e-5, reach_radius=0.5"))
        if schedule is not None and not set(schedule.changed) <= {"v_gain", "w_gain"}:
            raise ConfigError(expected('a schedule over "v_gain" / "w_gain"', sorted(schedule.changed),
                                       'use DriftSchedule({"v_gain": g_v, "w_gain": g_w})'))
        loop = circle_waypoints() if waypoints is None else np.asarray(waypoints, dtype=np.float64)
        super().__init__(np.concatenate([loop[1:], loop[:1]]) if len(loop) > 1 else loop, schedule, max_steps)
        self._loop, self.seed = loop, seed
        self.v_gain = self.w_gain = 1.0
        self.reset(seed)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new mission at the loop's first point, facing the second; returns the state."""
        self._rng = np.random.default_rng(self.seed if seed is None else seed)
        start = self._loop[0]
        ahead = self._loop[1] - start if len(self._loop) > 1 else np.array([1.0, 0.0])
        self.v_gain = self.w_gain = 1.0
        return self._start(np.array([start[0], start[1], math.atan2(ahead[1], ahead[0])]))

    def set_dynamics(self, v_gain: float = 1.0, w_gain: float = 1.0) -> None:
        """Set the control gains (the paper's ``intervene``); gains may be negative (inverted control)."""
        self.v_gain, self.w_gain = check_number(v_gain, "v_gain"), check_number(w_gain, "w_gain")

    def _advance(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        v, w = action[0] * self.v_gain, action[1] * self.w_gain
        x, y, theta = state
        new = np.array([x + v * math.cos(theta) * self.dt, y + v * math.sin(theta) * self.dt,
                        theta + w * self.dt]) + self._rng.normal(0.0, self.noise_std, size=3)
        new[2] = wrap_angle(new[2])
        return new

    # ---- model adapters (batched torch)
    def model_input(self, states: Tensor, actions: Tensor) -> Tensor:
        """Inputs of a learned model: heading as (cos, sin) and the action; position does not matter."""
        return torch.cat([torch.cos(states[..., 2:3]), torch.sin(states[..., 2:3]), actions], dim=-1)

    def state_error(self, reference: Tensor, states: Tensor) -> Tensor:
        """``states − reference`` with the heading difference wrapped to [−π, π)."""
        diff = states - reference
        return torch.cat([diff[..., :2], wrap_angle(diff[..., 2:3])], dim=-1)

    def apply_delta(self, states: Tensor, delta: Tensor) -> Tensor:
        new = states + delta
        return torch.cat([new[..., :2], wrap_angle(new[..., 2:3])], dim=-1)

    def regime_features(self, states: Tensor) -> Tensor:
        """The state part of a dynamics regime: the heading (the error's xy rotates with it)."""
        return torch.cat([torch.cos(states[..., 2:3]), torch.sin(states[..., 2:3])], dim=-1)

    def regime_error(self, states: Tensor, errors: Tensor) -> Tensor:
        """State errors in the vehicle's frame at ``states`` (along, across, heading), as the flow sees them."""
        cos, sin = torch.cos(states[..., 2]), torch.sin(states[..., 2])
        along = cos * errors[..., 0] + sin * errors[..., 1]
        across = -sin * errors[..., 0] + cos * errors[..., 1]
        return torch.stack([along, across, errors[..., 2]], dim=-1)

    def nominal_step(self, states: Tensor, actions: Tensor, gains: Tensor | None = None) -> Tensor:
        """Noise-free batched step with gains (B, 2) (default nominal (1, 1))."""
        scaled = actions if gains is None else actions * gains
        theta = states[..., 2]
        delta = torch.stack([scaled[..., 0] * torch.cos(theta) * self.dt, scaled[..., 0] * torch.sin(theta) * self.dt,
                             scaled[..., 1] * self.dt], dim=-1)
        return self.apply_delta(states, delta)

    def nominal_inverse(self, states: Tensor, next_states: Tensor) -> Tensor:
        """The action that the nominal (1, 1) vehicle needs for each observed transition (least squares in xy)."""
        diff = self.state_error(states, next_states)
        heading = torch.stack([torch.cos(states[..., 2]), torch.sin(states[..., 2])], dim=-1)
        v = (diff[..., :2] * heading).sum(-1) / self.dt
        return torch.stack([v, diff[..., 2] / self.dt], dim=-1)
