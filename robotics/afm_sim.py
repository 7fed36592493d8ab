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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, MissingDependencyError, NonFiniteError, ShapeError, expected

__all__ = [
    "DriftSchedule", "MissionResult", "WaypointTask", "UnicycleTask", "PointMassTask",
    "circle_waypoints", "figure8_waypoints", "wrap_angle",
]

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


def _check_gain(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(expected(f"{name} as a finite number", repr(value), f"pass a float {name}"))
    return float(value)


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
        self.v_gain, self.w_gain = _check_gain("v_gain", v_gain), _check_gain("w_gain", w_gain)

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


_POINT_MASS_XML = """
<mujoco model="flowzoo_point_mass">
  <option timestep="{timestep}" integrator="Euler" gravity="0 0 0"/>
  <worldbody>
    <body name="mass">
      <joint name="slide_x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="slide_y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom type="sphere" size="0.03" mass="{mass}" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="slide_x" gear="{gear}" ctrllimited="true" ctrlrange="-1 1"/>
    <motor joint="slide_y" gear="{gear}" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


def _import_mujoco():
    try:
        import mujoco
    except ImportError as error:
        raise MissingDependencyError(expected("the mujoco package for PointMassTask", f"ImportError: {error}",
                                              "pip install 'flowzoo[robotics]'")) from error
    return mujoco


class PointMassTask(WaypointTask):
    """A MuJoCo planar point mass reaching a sequence of targets while its mass, friction and gain change.

    State (x, y, vx, vy); action: the two motor commands in [−1, 1] (force = gear × command). The slide joints
    carry viscous friction (damping), so with nominal values the top speed is gear / damping = 1 m/s and the
    velocity time constant mass / damping = 0.2 s. One control step is ``frame_skip`` physics steps.

    Args:
        waypoints: (N, 2) targets (default: 12 points on a 0.4 m circle); the mass starts at the origin.
        schedule: e.g. ``DriftSchedule({"mass": 2.0, "friction": 2.0, "gain": -1.0})`` (multipliers of the
            nominal values); None keeps them nominal. :meth:`set_dynamics` changes them by hand.
        mass, friction, gear: nominal values. timestep, frame_skip: physics step and steps per action.
        reach_radius, max_steps: as in :class:`UnicycleTask`.
    """

    state_dim, action_dim = 4, 2
    regime_state_dim = 2
    misalignment_threshold = 0.05

    def __init__(self, waypoints: np.ndarray | None = None, schedule: DriftSchedule | None = None, *,
                 mass: float = 1.0, friction: float = 5.0, gear: float = 5.0, timestep: float = 0.01,
                 frame_skip: int = 5, reach_radius: float = 0.06, max_steps: int = 600):
        mujoco = _import_mujoco()
        for name, value in (("mass", mass), ("friction", friction), ("gear", gear), ("timestep", timestep)):
            if _check_gain(name, value) <= 0:
                raise ConfigError(expected(f"{name} > 0", value, f"pass a positive {name}"))
        if schedule is not None and not set(schedule.changed) <= {"mass", "friction", "gain"}:
            raise ConfigError(expected('a schedule over "mass" / "friction" / "gain"', sorted(schedule.changed),
                                       'use DriftSchedule({"mass": 2.0, "gain": -1.0})'))
        xml = _POINT_MASS_XML.format(timestep=timestep, damping=friction, mass=mass, gear=gear)
        self._mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "mass")
        self._nominal = (float(self.model.body_mass[self._body]), self.model.dof_damping.copy(),
                         self.model.actuator_gear[:, 0].copy())
        self.frame_skip, self.dt = int(frame_skip), float(timestep) * int(frame_skip)
        self.action_low, self.action_high = -np.ones(2), np.ones(2)
        self.reach_radius = float(reach_radius)
        self.multipliers = {"mass": 1.0, "friction": 1.0, "gain": 1.0}
        targets = circle_waypoints(12, 0.4) if waypoints is None else waypoints
        super().__init__(targets, schedule, max_steps)
        self._nominal_linear = self.linear_model()
        self.reset()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start at rest at the origin with nominal dynamics (the task is deterministic; ``seed`` is unused)."""
        self.set_dynamics()
        return self._start(np.zeros(4))

    def set_dynamics(self, mass: float = 1.0, friction: float = 1.0, gain: float = 1.0) -> None:
        """Scale the body mass, the joints' viscous friction and the actuator gain (gear) from now on.

        Multipliers are relative to the nominal values; ``gain`` may be negative (inverted motors).
        """
        mass, friction, gain = (_check_gain(n, v) for n, v in (("mass", mass), ("friction", friction), ("gain", gain)))
        if mass <= 0 or friction < 0:
            raise ConfigError(expected("mass multiplier > 0 and friction multiplier >= 0", (mass, friction),
                                       "scale by positive factors"))
        base_mass, base_damping, base_gear = self._nominal
        self.model.body_mass[self._body] = base_mass * mass
        self.model.dof_damping[:] = base_damping * friction
        self.model.actuator_gear[:, 0] = base_gear * gain
        # The joint-space mass matrix is built from constants derived at compile time; refresh them.
        self._mujoco.mj_setConst(self.model, self.data)
        self.multipliers = {"mass": mass, "friction": friction, "gain": gain}

    def _simulate(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        self.data.qpos[:] = state[:2]
        self.data.qvel[:] = state[2:]
        self.data.ctrl[:] = action
        for _ in range(self.frame_skip):
            self._mujoco.mj_step(self.model, self.data)
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def _advance(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return self._simulate(state, action)

    def linear_model(self, mass: float = 1.0, friction: float = 1.0,
                     gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Identify ``next = A state + B action`` of one control step from the simulator (exact: it is linear).

        The multipliers give the regime; the task's current multipliers are restored afterwards.
        """
        saved = dict(self.multipliers)
        self.set_dynamics(mass, friction, gain)
        try:
            base = self._simulate(np.zeros(4), np.zeros(2))
            a_matrix = np.stack([self._simulate(e, np.zeros(2)) - base for e in np.eye(4)], axis=1)
            b_matrix = np.stack([self._simulate(np.zeros(4), e) - base for e in np.eye(2)], axis=1)
        finally:
            self.set_dynamics(**saved)
        return a_matrix, b_matrix

    # ---- model adapters (batched torch)
    def model_input(self, states: Tensor, actions: Tensor) -> Tensor:
        """Inputs of a learned model: velocity and action (the dynamics do not depend on position)."""
        return torch.cat([states[..., 2:], actions], dim=-1)

    def state_error(self, reference: Tensor, states: Tensor) -> Tensor:
        return states - reference

    def apply_delta(self, states: Tensor, delta: Tensor) -> Tensor:
        return states + delta

    def regime_features(self, states: Tensor) -> Tensor:
        return states[..., 2:]

    def regime_error(self, states: Tensor, errors: Tensor) -> Tensor:
        return errors

    def nominal_step(self, states: Tensor, actions: Tensor) -> Tensor:
        """Batched nominal step through the identified linear map."""
        a_matrix, b_matrix = (torch.as_tensor(m, dtype=states.dtype) for m in self._nominal_linear)
        return states @ a_matrix.T + actions @ b_matrix.T

    def nominal_inverse(self, states: Tensor, next_states: Tensor) -> Tensor:
        """Least-squares action that the nominal dynamics need to move each state to its next state."""
        a_matrix, b_matrix = (torch.as_tensor(m, dtype=states.dtype) for m in self._nominal_linear)
        residual = next_states - states @ a_matrix.T
        return residual @ torch.linalg.pinv(b_matrix).T
