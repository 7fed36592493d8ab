"""PDM-style open-loop metrics of planned trajectories (NAVSIM, arXiv 2406.15349; GoalFlow, arXiv 2503.05689).

A plan is ``(T, 3)`` poses ``(x, y, θ)`` at ``DT, 2·DT, ...`` in the ego frame (the current pose, the origin
with heading 0, is implicit). Per plan, as NAVSIM's PDM score (GoalFlow Eq. 18, its DDC term omitted)::

    score = NC × DAC × (5·TTC + 2·C + 5·EP) / 12

:func:`evaluate_plans` scores either the raw poses or, with ``tracked=True`` (NAVSIM's way), the states of a
kinematic bicycle that an LQR drives along the plan at 10 Hz from the ego's current state
(:func:`flowzoo.driving.lqr_tracking.simulate_plans`); then every test below runs on the 40 simulated poses and
the other vehicles' poses interpolated to the same times, velocities are the simulated speeds along the
simulated headings, and comfort is :func:`state_comfort`.

* **NC** (no at-fault collision): 0 if the moving ego's footprint overlaps another vehicle's box that is stopped
  or whose centre is not behind the ego's (NAVSIM's stopped-track and front/lateral collisions; a vehicle that
  runs into the ego from behind, or hits the ego standing still, is not the ego's fault); 0.5 instead of 0 for
  objects flagged ``static_objects`` (NAVSIM's non-agent obstacles: cones, barriers; a parked *vehicle* still
  scores 0); else 1. Simplification: NAVSIM counts a lateral collision only when the ego straddles lanes or
  leaves the drivable area; here every lateral one counts.
* **DAC** (drivable-area compliance): 1 if all four corners of the ego footprint lie in the drivable polygon at
  every pose.
* **TTC**: 0 if, from some pose, moving the ego and every vehicle in front of it on at constant velocity for
  :data:`TTC_HORIZONS` seconds makes them overlap; else 1.
* **C** (comfort): 1 if longitudinal/lateral acceleration, longitudinal and total jerk, yaw rate and yaw
  acceleration stay within NAVSIM's bounds (:data:`COMFORT_LIMITS`). Raw plans: second-order finite
  differences (``numpy.gradient``) of the 2 Hz poses with the current state prepended. Tracked states: NAVSIM's
  Savitzky-Golay estimates (:func:`state_comfort`).
* **EP** (ego progress): the plan's progress along its nearest candidate route divided by the best feasible
  progress of the scene (the farthest expert plan over its goals), clipped to [0, 1]; 1 when that reference is
  under :data:`MIN_PROGRESS` metres (nothing to gain).

Also minADE / minFDE over a set of sampled plans, and GoalFlow's shadow-vehicle test for goal points (the DAC
target of its goal scorer). All functions take numpy arrays and never modify them.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from flowzoo.core.errors import ShapeError, expected
from flowzoo.driving.geometry import (EGO_LENGTH, EGO_WIDTH, box_corners, boxes_overlap, points_inside,
                                      project_onto_polyline)
from flowzoo.driving.lqr_tracking import SIM_DT, simulate_plans
from flowzoo.driving.scenes import DT

__all__ = ["COMFORT_LIMITS", "TTC_HORIZONS", "MIN_PROGRESS", "pdm_score", "ego_boxes", "shadow_dac",
           "drivable_area_compliance", "no_collision", "time_to_collision", "kinematics", "comfort",
           "route_progress", "ego_progress", "state_comfort", "upsample_agents", "evaluate_plans", "min_ade_fde"]

COMFORT_LIMITS = {  # nuPlan / NAVSIM comfort bounds
    "max_lon_accel": 2.40, "min_lon_accel": -4.05, "max_abs_lat_accel": 4.89, "max_abs_yaw_rate": 0.95,
    "max_abs_yaw_accel": 1.93, "max_abs_lon_jerk": 4.13, "max_abs_mag_jerk": 8.37,
}
TTC_HORIZONS = (0.3, 0.6, 0.9)  # seconds, NAVSIM's forward projections within its 1 s TTC horizon
MIN_PROGRESS = 5.0  # metres
_STOPPED = 0.05  # m/s below which the ego counts as standing still


def _plans(plans: np.ndarray, name: str = "plans") -> np.ndarray:
    plans = np.asarray(plans, dtype=float)
    if plans.ndim == 2:
        plans = plans[None]
    if plans.ndim != 3 or plans.shape[-1] != 3 or plans.shape[1] < 2:
        raise ShapeError(expected(f"{name} of shape (P, T, 3) or (T, 3): poses (x, y, heading), T >= 2",
                                  f"shape {plans.shape}", "stack the plans' poses along the last axis"))
    return plans


def pdm_score(nc, dac, ttc, comfort, ep) -> np.ndarray:
    """``NC × DAC × (5·TTC + 2·C + 5·EP) / 12`` elementwise (GoalFlow Eq. 18 without DDC).

    Example:
        >>> float(pdm_score(1, 1, 0, 1, 0.5))
        0.375
    """
    nc, dac, ttc, comfort, ep = (np.asarray(v, dtype=float) for v in (nc, dac, ttc, comfort, ep))
    return nc * dac * (5 * ttc + 2 * comfort + 5 * ep) / 12


def ego_boxes(poses: np.ndarray) -> np.ndarray:
    """Ego footprints ``(..., 5)`` at poses ``(..., 3)``."""
    poses = np.asarray(poses, dtype=float)
    size = np.broadcast_to(np.array([EGO_LENGTH, EGO_WIDTH]), poses.shape[:-1] + (2,))
    return np.concatenate([poses, size], axis=-1)


def shadow_dac(goals: np.ndarray, drivable) -> np.ndarray:
    """GoalFlow's shadow-vehicle test: 1 where the ego footprint placed at goal pose ``(G, 3)`` has all four
    corners inside the drivable polygon (the DAC target of the goal scorer), else 0.

    Example:
        >>> from flowzoo.driving.geometry import polygon_from_vertices
        >>> road = polygon_from_vertices(np.array([[-10.0, -2], [50, -2], [50, 2], [-10, 2]]))
        >>> shadow_dac(np.array([[20.0, 0, 0], [20.0, 0, 0.5]]), road).tolist()
        [1.0, 0.0]
    """
    goals = np.asarray(goals, dtype=float).reshape(-1, 3)
    return points_inside(drivable, box_corners(ego_boxes(goals))).all(-1).astype(float)


def drivable_area_compliance(plans: np.ndarray, drivable) -> np.ndarray:
    """DAC per plan: 1 if every footprint corner at every pose lies in the drivable polygon."""
    plans = _plans(plans)
    return points_inside(drivable, box_corners(ego_boxes(plans))).all(axis=(-1, -2)).astype(float)


def _velocities(plans: np.ndarray, initial_speed: float | None, dt: float = DT) -> np.ndarray:
    """Velocity vectors ``(P, T + 1, 2)`` at the current time and every plan time."""
    xy = np.concatenate([np.zeros((len(plans), 1, 2)), plans[..., :2]], axis=1)
    velocity = np.gradient(xy, dt, axis=1, edge_order=2)
    if initial_speed is not None:
        velocity[:, 0] = (float(initial_speed), 0.0)
    return velocity


def _agent_boxes(agent_futures: np.ndarray, agent_sizes: np.ndarray) -> np.ndarray:
    futures = np.asarray(agent_futures, dtype=float).reshape(-1, *np.shape(agent_futures)[-2:])
    sizes = np.asarray(agent_sizes, dtype=float).reshape(-1, 2)
    return np.concatenate([futures, np.broadcast_to(sizes[:, None], futures.shape[:-1] + (2,))], axis=-1)


def _behind(ego_poses: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each point lies behind the ego pose it is paired with (negative coordinate along the heading)."""
    d = points - ego_poses[..., :2]
    return d[..., 0] * np.cos(ego_poses[..., 2]) + d[..., 1] * np.sin(ego_poses[..., 2]) < 0


def _agent_speeds(agents: np.ndarray, dt: float) -> np.ndarray:
    """Speeds ``(A, T)`` of agent boxes ``(A, T, 5)`` by central differences (0 for a single pose)."""
    if agents.shape[1] < 2:
        return np.zeros(agents.shape[:2])
    return np.linalg.norm(np.gradient(agents[..., :2], dt, axis=1), axis=-1)


def no_collision(plans: np.ndarray, agent_futures: np.ndarray, agent_sizes: np.ndarray, *,
                 initial_speed: float | None = None, dt: float = DT, velocities: np.ndarray | None = None,
                 static_objects: np.ndarray | None = None, stopped_at_fault: bool = False) -> np.ndarray:
    """NC per plan against other vehicles' future boxes.

    Args:
        plans: ``(P, T, 3)`` ego poses at ``dt, 2·dt, ...``.
        agent_futures: ``(A, T, 3)`` the other vehicles' poses at the same times.
        agent_sizes: ``(A, 2)`` their (length, width).
        initial_speed: the ego's current speed, for the standing-still test at the first pose.
        dt: the interval of the poses (s).
        velocities: ``(P, T, 2)`` the ego's velocities (default: finite differences of the poses).
        static_objects: ``(A,)`` bool, non-agent obstacles: a collision with one scores 0.5 (NAVSIM), not 0.
        stopped_at_fault: NAVSIM's rule that hitting a stopped vehicle is at fault wherever its centre is; off
            (the default), only vehicles whose centre is not behind the ego count.

    Example:
        >>> plan = np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)])
        >>> parked = np.tile([[22.0, 0.0, 0.0]], (8, 1))[None]
        >>> no_collision(plan, parked, np.array([[4.5, 2.0]])).tolist()
        [0.0]
        >>> no_collision(plan, parked, np.array([[4.5, 2.0]]), static_objects=np.array([True])).tolist()
        [0.5]
    """
    plans = _plans(plans)
    agents = _agent_boxes(agent_futures, agent_sizes)
    if len(agents) == 0:
        return np.ones(len(plans))
    if velocities is None:
        velocities = _velocities(plans, initial_speed, dt)[:, 1:]
    speed = np.linalg.norm(velocities, axis=-1)  # (P, T)
    hit = boxes_overlap(ego_boxes(plans)[:, None], agents[None])  # (P, A, T)
    their_fault = _behind(plans[:, None], agents[None, ..., :2])
    if stopped_at_fault:
        their_fault &= (_agent_speeds(agents, dt) >= _STOPPED)[None]
    at_fault = (hit & (speed[:, None] >= _STOPPED) & ~their_fault).any(axis=2)  # (P, A)
    static = np.zeros(len(agents), bool) if static_objects is None else np.asarray(static_objects, bool).reshape(-1)
    if len(static) != len(agents):
        raise ShapeError(expected(f"static_objects of shape ({len(agents)},), one flag per agent",
                                  f"shape {np.shape(static_objects)}", "pass one bool per agent row"))
    return np.where(at_fault, np.where(static, 0.5, 0.0)[None], 1.0).min(axis=1, initial=1.0)


def time_to_collision(plans: np.ndarray, agent_futures: np.ndarray, agent_sizes: np.ndarray, *,
                      initial_speed: float | None = None, horizons: tuple[float, ...] = TTC_HORIZONS,
                      dt: float = DT, velocities: np.ndarray | None = None) -> np.ndarray:
    """TTC per plan: 0 if a constant-velocity projection from some pose collides with a vehicle in front within
    ``horizons`` seconds (pairs already overlapping at that pose are NC's business), else 1. ``dt`` and
    ``velocities`` as in :func:`no_collision`."""
    plans = _plans(plans)
    agents = _agent_boxes(agent_futures, agent_sizes)
    if len(agents) == 0:
        return np.ones(len(plans))
    ego_velocity = _velocities(plans, initial_speed, dt)[:, 1:] if velocities is None else velocities  # (P, T, 2)
    agent_velocity = np.gradient(agents[..., :2], dt, axis=1) if agents.shape[1] > 1 else 0 * agents[..., :2]
    ego = ego_boxes(plans)[:, None]  # (P, 1, T, 5)
    moving = (np.linalg.norm(ego_velocity, axis=-1) >= _STOPPED)[:, None]
    ahead = ~_behind(plans[:, None], agents[None, ..., :2])
    already = boxes_overlap(ego, agents[None])
    danger = np.zeros(already.shape, dtype=bool)
    for delta in horizons:
        ego_next, agents_next = ego.copy(), agents.copy()
        ego_next[..., :2] += delta * ego_velocity[:, None]
        agents_next[..., :2] += delta * agent_velocity
        danger |= boxes_overlap(ego_next, agents_next[None])
    return (~(danger & ~already & ahead & moving).any(axis=(1, 2))).astype(float)


def kinematics(plans: np.ndarray, *, initial_speed: float | None = None,
               initial_yaw_rate: float | None = None) -> dict[str, np.ndarray]:
    """Longitudinal/lateral acceleration, jerks, yaw rate and yaw acceleration ``(P, T + 1)`` of each plan, the
    current state (origin, heading 0, ``initial_speed``, ``initial_yaw_rate``) prepended."""
    plans = _plans(plans)
    velocity = _velocities(plans, initial_speed)
    heading = np.unwrap(np.concatenate([np.zeros((len(plans), 1)), plans[..., 2]], axis=1), axis=1)
    accel = np.gradient(velocity, DT, axis=1, edge_order=2)
    jerk = np.gradient(accel, DT, axis=1, edge_order=2)
    along = np.stack([np.cos(heading), np.sin(heading)], -1)
    left = np.stack([-np.sin(heading), np.cos(heading)], -1)
    lon_accel = (accel * along).sum(-1)
    yaw_rate = np.gradient(heading, DT, axis=1, edge_order=2)
    if initial_yaw_rate is not None:
        yaw_rate[:, 0] = float(initial_yaw_rate)
    return {"lon_accel": lon_accel, "lat_accel": (accel * left).sum(-1),
            "lon_jerk": np.gradient(lon_accel, DT, axis=1, edge_order=2),
            "mag_jerk": np.linalg.norm(jerk, axis=-1), "yaw_rate": yaw_rate,
            "yaw_accel": np.gradient(yaw_rate, DT, axis=1, edge_order=2)}


def comfort(plans: np.ndarray, *, initial_speed: float | None = None, initial_yaw_rate: float | None = None,
            limits: dict[str, float] | None = None) -> np.ndarray:
    """C per plan: 1 if every quantity of :func:`kinematics` stays within ``limits`` (NAVSIM's by default).

    Example:
        >>> smooth = np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)])
        >>> jerky = smooth.copy(); jerky[3, 0] += 2.0
        >>> comfort(np.stack([smooth, jerky]), initial_speed=10.0).tolist()
        [1.0, 0.0]
    """
    k = kinematics(plans, initial_speed=initial_speed, initial_yaw_rate=initial_yaw_rate)
    lim = dict(COMFORT_LIMITS, **(limits or {}))
    ok = ((k["lon_accel"] <= lim["max_lon_accel"]) & (k["lon_accel"] >= lim["min_lon_accel"])
          & (np.abs(k["lat_accel"]) <= lim["max_abs_lat_accel"]) & (np.abs(k["yaw_rate"]) <= lim["max_abs_yaw_rate"])
          & (np.abs(k["yaw_accel"]) <= lim["max_abs_yaw_accel"]) & (np.abs(k["lon_jerk"]) <= lim["max_abs_lon_jerk"])
          & (k["mag_jerk"] <= lim["max_abs_mag_jerk"]))
    return ok.all(axis=1).astype(float)


def route_progress(points: np.ndarray, routes: list[np.ndarray]) -> np.ndarray:
    """Progress (m) of ``(P, 2)`` end points along the nearest route (routes start at the ego; negative -> 0)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if not routes:
        return np.zeros(len(points))
    projected = [project_onto_polyline(points, r) for r in routes]
    s = np.stack([p[0] for p in projected]), np.stack([p[1] for p in projected])
    return np.maximum(s[0][s[1].argmin(0), np.arange(len(points))], 0.0)


def ego_progress(plans: np.ndarray, routes: list[np.ndarray], reference_progress: float) -> np.ndarray:
    """EP per plan: progress of its last pose over ``reference_progress`` clipped to [0, 1]; all ones when the
    reference is under :data:`MIN_PROGRESS`."""
    plans = _plans(plans)
    if reference_progress < MIN_PROGRESS:
        return np.ones(len(plans))
    return np.clip(route_progress(plans[:, -1, :2], routes) / reference_progress, 0.0, 1.0)


def _within(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return ((values > low) & (values < high)).all(axis=-1)


def state_comfort(states: dict[str, np.ndarray], *, limits: dict[str, float] | None = None) -> np.ndarray:
    """C per simulated plan from :func:`flowzoo.driving.lqr_tracking.simulate_plans` states, NAVSIM's way:
    Savitzky-Golay estimates over the whole simulated horizon (quadratic over all states for the accelerations,
    their time derivative for the jerks; over 5 states for the yaw rate and yaw acceleration), each strictly
    within ``limits``. The lateral acceleration is ``v · yaw rate`` (NAVSIM's simulated state carries none, so
    its lateral test never fails; this one is slightly stricter).

    Example:
        >>> from flowzoo.driving.lqr_tracking import simulate_plans
        >>> plan = np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)])
        >>> state_comfort(simulate_plans(plan, speed=10.0)).tolist()
        [1.0]
    """
    lim = dict(COMFORT_LIMITS, **(limits or {}))
    n = states["speed"].shape[1]
    dt = float(states["times"][1] - states["times"][0])
    window = n if n % 2 else n - 1
    lon = savgol_filter(states["accel"], window, 2, axis=-1)
    lat = savgol_filter(states["speed"] * states["yaw_rate"], window, 2, axis=-1)
    jerk = lambda accel: savgol_filter(savgol_filter(accel, min(8, n), 2, axis=-1), window, 2,  # noqa: E731
                                       deriv=1, delta=dt, axis=-1)
    heading = np.unwrap(states["poses"][..., 2], axis=-1)
    yaw_rate = savgol_filter(heading, min(5, window), 2, deriv=1, delta=dt, axis=-1)
    yaw_accel = savgol_filter(heading, min(5, window), 3, deriv=2, delta=dt, axis=-1)
    ok = (_within(lon, lim["min_lon_accel"], lim["max_lon_accel"])
          & _within(lat, -lim["max_abs_lat_accel"], lim["max_abs_lat_accel"])
          & _within(jerk(np.hypot(states["accel"], states["speed"] * states["yaw_rate"])), -lim["max_abs_mag_jerk"],
                    lim["max_abs_mag_jerk"])
          & _within(jerk(states["accel"]), -lim["max_abs_lon_jerk"], lim["max_abs_lon_jerk"])
          & _within(yaw_rate, -lim["max_abs_yaw_rate"], lim["max_abs_yaw_rate"])
          & _within(yaw_accel, -lim["max_abs_yaw_accel"], lim["max_abs_yaw_accel"]))
    return ok.astype(float)


def upsample_agents(agent_futures: np.ndarray, agent_now: np.ndarray | None = None, *, plan_dt: float = DT,
                    sim_dt: float = SIM_DT) -> np.ndarray:
    """Agents' poses ``(A, T, 3)`` at ``plan_dt, 2·plan_dt, ...`` -> ``(A, N, 3)`` at ``sim_dt, 2·sim_dt, ...``
    by linear interpolation from their current poses ``agent_now`` ``(A, 3)`` (default: extrapolated back from the
    first two future poses).

    Example:
        >>> out = upsample_agents(np.array([[[5.0, 0, 0], [10.0, 0, 0]]]), np.array([[0.0, 0, 0]]))
        >>> out[0, :6, 0].round(6).tolist()
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    """
    futures = np.asarray(agent_futures, dtype=float).reshape(-1, *np.shape(agent_futures)[-2:])
    if agent_now is None:
        agent_now = 2 * futures[:, 0] - futures[:, 1] if futures.shape[1] > 1 else futures[:, 0]
    poses = np.concatenate([np.asarray(agent_now, dtype=float).reshape(-1, 1, 3), futures], axis=1)
    poses[..., 2] = np.unwrap(poses[..., 2], axis=1)
    known = plan_dt * np.arange(poses.shape[1])
    times = sim_dt * np.arange(1, int(round(known[-1] / sim_dt)) + 1)
    out = np.empty((len(poses), len(times), 3))
    for a in range(len(poses)):
        for c in range(3):
            out[a, :, c] = np.interp(times, known, poses[a, :, c])
    return out


def evaluate_plans(plans: np.ndarray, *, drivable, agent_futures: np.ndarray, agent_sizes: np.ndarray,
                   routes: list[np.ndarray], reference_progress: float, initial_speed: float | None = None,
                   initial_yaw_rate: float | None = None, initial_accel: float = 0.0, tracked: bool = False,
                   agent_now: np.ndarray | None = None, static_objects: np.ndarray | None = None
                   ) -> dict[str, np.ndarray]:
    """Every PDM-style sub-score and the score, each ``(P,)``, for plans in one scene (see the module docstring).

    Args:
        plans: ``(P, T, 3)`` or ``(T, 3)`` plans at ``DT, 2·DT, ...``.
        drivable, routes, reference_progress: the scene's drivable polygon, candidate routes and EP reference.
        agent_futures, agent_sizes: the other vehicles' future poses ``(A, T, 3)`` and sizes ``(A, 2)``.
        initial_speed, initial_yaw_rate, initial_accel: the ego's current state.
        tracked: score the 10 Hz states of the LQR-tracked bicycle (NAVSIM) instead of the raw poses; the
            raw plan's comfort and score are then returned too.
        agent_now: ``(A, 3)`` the vehicles' current poses (for the 10 Hz interpolation when ``tracked``).
        static_objects: ``(A,)`` bool: non-agent obstacles (a collision scores NC 0.5).

    Returns:
        ``{"nc", "dac", "ttc", "comfort", "ep", "score"}`` and, when ``tracked``, ``"raw_comfort"`` and
        ``"raw_score"``.
    """
    plans = _plans(plans)
    rules = {"static_objects": static_objects, "stopped_at_fault": True}
    raw_c = comfort(plans, initial_speed=initial_speed, initial_yaw_rate=initial_yaw_rate)
    if not tracked:
        nc = no_collision(plans, agent_futures, agent_sizes, initial_speed=initial_speed, **rules)
        dac = drivable_area_compliance(plans, drivable)
        ttc = time_to_collision(plans, agent_futures, agent_sizes, initial_speed=initial_speed)
        ep = ego_progress(plans, routes, reference_progress)
        return {"nc": nc, "dac": dac, "ttc": ttc, "comfort": raw_c, "ep": ep,
                "score": pdm_score(nc, dac, ttc, raw_c, ep)}
    states = simulate_plans(plans, speed=max(float(initial_speed or 0.0), 0.0), accel=initial_accel,
                            yaw_rate=float(initial_yaw_rate or 0.0))
    poses = states["poses"][:, 1:]
    heading = poses[..., 2]
    velocity = states["speed"][:, 1:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    agents = upsample_agents(agent_futures, agent_now) if len(np.asarray(agent_futures).reshape(-1)) else \
        np.zeros((0, poses.shape[1], 3))
    nc = no_collision(poses, agents, agent_sizes, dt=SIM_DT, velocities=velocity, **rules)
    dac = drivable_area_compliance(poses, drivable)
    ttc = time_to_collision(poses, agents, agent_sizes, dt=SIM_DT, velocities=velocity)
    c = state_comfort(states)
    ep = ego_progress(poses, routes, reference_progress)
    raw = evaluate_plans(plans, drivable=drivable, agent_futures=agent_futures, agent_sizes=agent_sizes, routes=routes,
                         reference_progress=reference_progress, initial_speed=initial_speed,
                         initial_yaw_rate=initial_yaw_rate, static_objects=static_objects)
    return {"nc": nc, "dac": dac, "ttc": ttc, "comfort": c, "ep": ep, "score": pdm_score(nc, dac, ttc, c, ep),
            "raw_comfort": raw_c, "raw_score": raw["score"]}


def min_ade_fde(samples: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """minADE and minFDE (m, on x and y) of sampled plans ``(S, T, 2+)`` against the true ``(T, 2+)``.

    Example:
        >>> truth = np.zeros((8, 3)); samples = np.stack([truth + 1.0, truth + [3.0, 4.0, 0.0]])
        >>> min_ade_fde(samples, truth)
        (1.4142135623730951, 1.4142135623730951)
    """
    samples, truth = np.asarray(samples, dtype=float), np.asarray(truth, dtype=float)
    if samples.ndim == 2:
        samples = samples[None]
    if samples.shape[1:2] != truth.shape[:1] or samples.shape[-1] < 2 or truth.shape[-1] < 2:
        raise ShapeError(expected("samples (S, T, 2+) and truth (T, 2+) with the same T",
                                  f"{samples.shape} and {truth.shape}", "compare plans of the same length"))
    error = np.linalg.norm(samples[..., :2] - truth[None, :, :2], axis=-1)
    return float(error.mean(1).min()), float(error[:, -1].min())
