"""The expert planner of the synthetic scenes: one smooth, safe 4-second plan per feasible route.

GoalFlow (arXiv 2503.05689) learns a multimodal distribution of plans; the expert therefore plans every
candidate route of a scene (keep the lane, change lanes, a junction's exits), keeps those it can drive safely,
and the data set records one of them drawn at random. For a route the plan is the route's centreline path
travelled with a speed profile ``v(t) = v₀ + (v_end − v₀)·h(t/T)`` (``h`` the cubic smoothstep, so the
acceleration starts and ends at zero): the expert tries the route's speed limit, the speeds of vehicles ahead on
the path, slower speeds and a smooth stop before the first vehicle that blocks the path, and keeps the profile
with the most progress whose plan passes the scene's own metrics (:mod:`flowzoo.driving.metrics`): no
collision with vehicles' boxes grown by a safety margin, no time-to-collision violation, every footprint corner
in the drivable area, and NAVSIM's comfort bounds. Poses are NAVSIM's: ``HORIZON`` = 8 poses at ``DT`` = 0.5 s,
the first at 0.5 s, in the ego frame.

Example:
    >>> import numpy as np
    >>> from flowzoo.driving.scenes import sample_scene
    >>> scene = sample_scene(np.random.default_rng(3), kind="straight")
    >>> plans = plan_routes(scene)
    >>> plans[0].poses.shape, all(p.progress > 0 for p in plans)
    ((8, 3), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowzoo.core.errors import EmptyInputError, expected
from flowzoo.driving.geometry import EGO_LENGTH, EGO_WIDTH, poses_along, project_onto_polyline
from flowzoo.driving.metrics import comfort, drivable_area_compliance, no_collision, time_to_collision
from flowzoo.driving.scenes import DT, HORIZON, Scene

__all__ = ["ExpertPlan", "speed_profile", "plan_route", "plan_routes", "choose_plan"]

_ACCEL, _DECEL, _JERK = 1.8, 2.8, 3.0  # design limits, inside NAVSIM's comfort bounds
_SAFETY_LENGTH, _SAFETY_WIDTH = 3.0, 0.6  # metres added to other vehicles' boxes when the expert checks a plan
_GAP = 2.5  # metres the expert stops behind a blocking vehicle


@dataclass(frozen=True)
class ExpertPlan:
    """A feasible plan along one route.

    Attributes:
        route: index of the route in ``scene.routes``.
        poses: ``(HORIZON, 3)`` poses ``(x, y, θ)`` at ``DT, 2·DT, ...``.
        progress: metres travelled along the route at the last pose.
    """

    route: int
    poses: np.ndarray
    progress: float


def speed_profile(v0: float, v_end: float, ramp: float, times: np.ndarray) -> np.ndarray:
    """Distance travelled at ``times`` when the speed goes from ``v0`` to ``v_end`` over ``ramp`` seconds along a
    cubic smoothstep and stays there.

    Example:
        >>> speed_profile(10.0, 0.0, 2.0, np.array([1.0, 2.0, 4.0])).tolist()
        [8.125, 10.0, 10.0]
    """
    times = np.asarray(times, dtype=float)
    tau = np.clip(times / ramp, 0.0, 1.0)
    during = v0 * np.minimum(times, ramp) + (v_end - v0) * ramp * (tau ** 3 - tau ** 4 / 2)
    return during + v_end * np.maximum(times - ramp, 0.0)


def _ramp(dv: float) -> float:
    limit = _ACCEL if dv > 0 else _DECEL
    return max(1.5 * abs(dv) / limit, float(np.sqrt(6 * abs(dv) / _JERK)), 1.0)


def _path_agents(scene: Scene, path: np.ndarray) -> tuple[float, list[float]]:
    """The arc length before which the ego must stop (inf if nothing blocks) and the along-path speeds of the
    vehicles on the path."""
    stop, speeds = np.inf, []
    if len(scene.agent_boxes) == 0:
        return stop, speeds
    times = DT * np.arange(HORIZON + 1)
    for box, future in zip(scene.agent_boxes, scene.agent_futures):
        track = np.concatenate([box[None, :2], future[:, :2]])
        s, lateral = project_onto_polyline(track, path)
        on_path = (lateral < (EGO_WIDTH + box[4]) / 2 + 0.5) & (s > 0)
        if on_path.any():
            stop = min(stop, float(s[on_path].min() - (EGO_LENGTH + box[3]) / 2 - _GAP))
            speeds.append(max(float(np.polyfit(times, s, 1)[0]), 0.0))
    return stop, speeds


def plan_route(scene: Scene, route: int) -> ExpertPlan | None:
    """The expert's plan along ``scene.routes[route]``, or None when no speed profile drives it safely."""
    path, limit = scene.routes[route].path, scene.routes[route].speed_limit
    times = DT * np.arange(1, HORIZON + 1)
    v0 = scene.ego_speed
    stop, lead_speeds = _path_agents(scene, path)
    targets = sorted({limit, *(min(v, limit) for v in lead_speeds), 0.75 * limit, 0.5 * limit, 0.25 * limit},
                     reverse=True)
    profiles = [speed_profile(v0, v, _ramp(v - v0), times) for v in targets]
    if np.isfinite(stop) and stop > 0.5 and v0 > 0:
        profiles.append(speed_profile(v0, 0.0, 2 * stop / v0, times))  # a smooth stop ending at ``stop``
    distance = np.stack(profiles)
    poses = poses_along(path, distance)  # (profiles, HORIZON, 3), the path's lengths computed once
    sizes = scene.agent_boxes[:, 3:5] + np.array([_SAFETY_LENGTH, _SAFETY_WIDTH])
    ok = comfort(poses, initial_speed=v0, initial_yaw_rate=scene.ego_yaw_rate) == 1
    ok &= drivable_area_compliance(poses, scene.drivable) == 1
    ok &= no_collision(poses, scene.agent_futures, sizes, initial_speed=v0) == 1
    ok &= time_to_collision(poses, scene.agent_futures, scene.agent_boxes[:, 3:5], initial_speed=v0) == 1
    if not ok.any():
        return None
    best = int(np.argmax(np.where(ok, distance[:, -1], -np.inf)))
    return ExpertPlan(route, poses[best], float(distance[best, -1]))


def plan_routes(scene: Scene) -> list[ExpertPlan]:
    """The expert's plan for every feasible route of ``scene`` (possibly none), in route order."""
    plans = [plan_route(scene, i) for i in range(len(scene.routes))]
    return [p for p in plans if p is not None]


def choose_plan(plans: list[ExpertPlan], rng: np.random.Generator) -> int:
    """Index of the plan the expert drives: uniform over the feasible ones, so the data is multimodal."""
    if not plans:
        raise EmptyInputError(expected("at least one feasible expert plan", "none",
                                       "draw another scene (the generator retries such scenes itself)"))
    return int(rng.integers(0, len(plans)))
