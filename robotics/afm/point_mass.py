r"""A MuJoCo planar point mass whose mass, friction and actuator gain drift mid-mission (an Action Flow Matching
simulator; Mallo et al., RSS 2025, arXiv 2504.18471).

:class:`PointMassTask` is a point mass on two slide joints driven by motors, built from an MJCF string with
MuJoCo. Its body mass, viscous joint friction (damping) and actuator gain (gear) are scaled mid-run
(:meth:`PointMassTask.set_dynamics`), on a :class:`~flowzoo.robotics.afm.waypoints.DriftSchedule`'s waypoint
schedule or at given steps. The dynamics are linear, so :meth:`PointMassTask.linear_model` identifies one
control step exactly as ``s' = A s + B a``; the nominal map gives the batched model adapters (nominal step and
nominal inverse) that Action Flow Matching and the planners use.

MuJoCo is imported only when a task is made; :class:`PointMassTask` is also importable from
:mod:`flowzoo.robotics.afm.sim`.
"""

from __future__ import annotations

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, MissingDependencyError, expected
from flowzoo.core.validation import check_number, check_positive
from flowzoo.robotics.afm.waypoints import DriftSchedule, WaypointTask, circle_waypoints

__all__ = ["PointMassTask"]

Tensor = torch.Tensor


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
            check_positive(value, name)
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
        mass, friction, gain = (check_number(v, n) for n, v in (("mass", mass), ("friction", friction), ("gain", gain)))
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
