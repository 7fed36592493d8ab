"""Seeded synthetic bird's-eye-view driving scenes: multi-lane straight and curved roads and junctions.

GoalFlow (Xing et al., CVPR 2025, arXiv 2503.05689) is trained on NAVSIM scenes (arXiv 2406.15349), which are
hundreds of gigabytes; these scenes are a small stand-in with the same interface: a drivable-area polygon, lane
centrelines, parked and moving vehicles with their future boxes, and the routes the ego vehicle could take
(keep its lane, change to a neighbour lane, or take one of a junction's exits), so that the expert's choice
among them makes the data multimodal. Everything is in the ego frame at the current time (x forward, y left,
see :mod:`flowzoo.driving.geometry`); traffic drives on the right. Time is planning time (the first future
pose is at ``DT``), unrelated to flow-matching time.

Example:
    >>> import numpy as np
    >>> scene = sample_scene(np.random.default_rng(0), kind="junction")
    >>> scene.kind, len(scene.routes) >= 2, scene.agent_futures.shape[1:]
    ('junction', True, (8, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.driving.geometry import (EGO_LENGTH, EGO_WIDTH, boxes_overlap, closed_union, offset_polyline,
                                      poses_along)

__all__ = ["SCENE_KINDS", "COMMANDS", "DT", "HORIZON", "LANE_WIDTH", "Route", "Scene", "sample_scene"]

SCENE_KINDS = ("straight", "curve", "junction")
COMMANDS = ("left", "straight", "right")  # NAVSIM's driving command, without its "unknown"
DT = 0.5  # seconds between poses (2 Hz, as NAVSIM)
HORIZON = 8  # future poses (4 s)
LANE_WIDTH = 3.5
_STEP = 1.0  # metres between centreline vertices
_AHEAD, _BEHIND = 160.0, 40.0  # centreline extent in front of and behind the ego


@dataclass
class Route:
    """One way the ego vehicle may go: its centreline path from the ego position onward.

    Attributes:
        name: ``keep``, ``change_left``, ``change_right``, ``straight``, ``turn_left`` or ``turn_right``.
        path: ``(K, 2)`` polyline starting at the ego position, vertices about a metre apart.
        speed_limit: the speed (m/s) the expert may reach on it (lower on curves and turns).
        command: index into :data:`COMMANDS` a navigation system would give for it.
    """

    name: str
    path: np.ndarray
    speed_limit: float
    command: int


@dataclass
class Scene:
    """A driving scene in the ego frame (see the module docstring).

    Attributes:
        kind: one of :data:`SCENE_KINDS`.
        drivable: the drivable area, a shapely polygon.
        lanes: lane centrelines, each ``(K, 2)``.
        routes: the candidate routes of the ego (at least one).
        agent_boxes: ``(A, 5)`` other vehicles now, ``(x, y, θ, length, width)``.
        agent_futures: ``(A, HORIZON, 3)`` their poses at ``DT, 2·DT, ...``.
        ego_speed, ego_accel, ego_yaw_rate: the ego's current state (m/s, m/s², rad/s).
        seed: the seed the scene was drawn with, when known.
    """

    kind: str
    drivable: object
    lanes: list[np.ndarray]
    routes: list[Route]
    agent_boxes: np.ndarray
    agent_futures: np.ndarray
    ego_speed: float
    ego_accel: float = 0.0
    ego_yaw_rate: float = 0.0
    seed: int | None = None
    extras: dict = field(default_factory=dict)


def _reference(curve_start: float, curvature: float) -> tuple[np.ndarray, np.ndarray]:
    """Arc lengths and poses of a lane centreline through the ego pose (0, 0, 0): straight, then from arc length
    ``curve_start`` (negative: the ego is already in the curve) a circular arc of signed ``curvature``."""
    s = np.arange(-_BEHIND, _AHEAD + _STEP / 2, _STEP)
    theta = curvature * (np.maximum(s - curve_start, 0.0) - max(-curve_start, 0.0))
    mid = (theta[1:] + theta[:-1]) / 2  # midpoint rule: exact positions along circular arcs to O(step^3)
    steps = np.column_stack([np.cos(mid), np.sin(mid)]) * _STEP
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])
    xy -= xy[np.argmin(np.abs(s))]
    return s, np.column_stack([xy, theta])


def _quintic(u: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 blend with zero first and second derivatives at both ends."""
    u = np.clip(u, 0.0, 1.0)
    return u ** 3 * (10 - 15 * u + 6 * u ** 2)


def _along_lane(lane: np.ndarray, s0: float, speed: float, length: float, width: float) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    times = DT * np.arange(HORIZON + 1)
    poses = poses_along(lane, s0 + speed * times)
    size = np.array([length, width])
    return np.concatenate([poses[0], size]), poses[1:]


def _vehicle_size(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(4.2, 5.2)), float(rng.uniform(1.8, 2.1))


def _place_agents(rng: np.random.Generator, candidates: list[tuple[np.ndarray, float, float]],
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Keep candidate (lane, start arc length, speed) vehicles that overlap neither the ego nor each other."""
    ego = np.array([0.0, 0.0, 0.0, EGO_LENGTH + 3.0, EGO_WIDTH + 0.5])  # keep a margin around the ego
    boxes, futures = [], []
    for lane, s0, speed in candidates:
        box, future = _along_lane(lane, s0, speed, *_vehicle_size(rng))
        if boxes_overlap(ego, box):
            continue
        path = np.concatenate([future, np.tile(box[3:], (HORIZON, 1))], axis=1)  # future boxes (HORIZON, 5)
        if boxes and boxes_overlap(np.asarray(boxes)[None], box[None]).any():
            continue
        if futures and boxes_overlap(np.asarray(futures), path[None]).any():
            continue
        boxes.append(box)
        futures.append(path)
    boxes_arr = np.asarray(boxes, dtype=float).reshape(-1, 5)
    futures_arr = np.asarray(futures, dtype=float).reshape(-1, HORIZON, 5)[..., :3]
    return boxes_arr, futures_arr


def _road_scene(rng: np.random.Generator, kind: str) -> Scene:
    lanes_count = int(rng.integers(2, 4))
    ego_lane = int(rng.integers(0, lanes_count))
    if kind == "curve":
        radius = float(rng.uniform(70.0, 250.0))
        curvature = float(rng.choice([-1.0, 1.0])) / radius
        curve_start = float(rng.uniform(-20.0, 40.0))
        limit = min(float(rng.uniform(9.0, 15.0)), float(np.sqrt(1.5 * radius)))
    else:
        curvature, curve_start, limit = 0.0, 0.0, float(rng.uniform(9.0, 15.0))
    s, ref = _reference(curve_start, curvature)
    offsets = [(i - ego_lane) * LANE_WIDTH for i in range(lanes_count)]
    lanes = [offset_polyline(ref, o) for o in offsets]
    right = offset_polyline(ref, offsets[0] - LANE_WIDTH / 2)
    left = offset_polyline(ref, offsets[-1] + LANE_WIDTH / 2)
    drivable = closed_union([np.concatenate([right, left[::-1]])], 0.0)
    ego_speed = float(rng.uniform(0.5, 1.0) * limit)
    ahead = s >= 0
    routes = [Route("keep", lanes[ego_lane][ahead], limit, 1)]
    change_length = max(3.5 * max(ego_speed, 0.6 * limit), 25.0)
    blend = _quintic((s[ahead] - float(rng.uniform(2.0, 8.0))) / change_length)
    for name, target in (("change_right", ego_lane - 1), ("change_left", ego_lane + 1)):
        if 0 <= target < lanes_count:
            path = offset_polyline(ref[ahead], offsets[target] * blend)
            routes.append(Route(name, path, limit, 1))
    candidates = []
    for i, lane in enumerate(lanes):
        for _ in range(int(rng.integers(0, 3))):
            s0 = float(rng.uniform(-25.0, 70.0)) + _BEHIND  # arc length along the lane polyline
            parked = rng.random() < 0.3
            speed = 0.0 if parked else float(rng.uniform(0.4, 1.0) * limit)
            if i == ego_lane and s0 < _BEHIND and speed > ego_speed:
                speed = float(rng.uniform(0.3, 0.9) * ego_speed)  # followers behind the ego never ram it
            candidates.append((lane, s0, speed))
    boxes, futures = _place_agents(rng, candidates)
    yaw_rate = ego_speed * curvature if curve_start <= 0 else 0.0
    return Scene(kind, drivable, lanes, routes, boxes, futures, ego_speed, 0.0, yaw_rate)


def _turn(entry_end: float, corner: np.ndarray, radius: float, sign: float) -> np.ndarray:
    """Path from the ego along +x to ``entry_end``, a quarter circle of ``radius`` turning left (sign +1) or
    right (sign −1), then straight along ±y for the rest of the horizon."""
    entry = np.column_stack([np.arange(0.0, entry_end, _STEP), np.zeros(int(np.ceil(entry_end / _STEP)))])
    angles = np.linspace(0.0, np.pi / 2, max(int(radius * np.pi / 2 / _STEP), 4) + 1)
    arc = np.column_stack([corner[0] + radius * np.sin(angles), corner[1] + sign * radius * (1 - np.cos(angles))])
    exit_start = arc[-1]
    exit_len = np.arange(_STEP, _AHEAD, _STEP)
    exit_path = np.column_stack([np.full_like(exit_len, exit_start[0]), exit_start[1] + sign * exit_len])
    return np.concatenate([entry, arc, exit_path])


def _junction_scene(rng: np.random.Generator) -> Scene:
    w = LANE_WIDTH
    exits = [("straight", "turn_left", "turn_right"), ("turn_left", "turn_right"), ("straight", "turn_left"),
             ("straight", "turn_right")][int(rng.integers(0, 4))]
    centre = float(rng.uniform(12.0, 24.0))  # x of the crossing road's centre line: the turn starts within 4 s
    far = _AHEAD
    east_end = far if "straight" in exits else centre + w
    strips = [np.array([[-_BEHIND, -w / 2], [east_end, -w / 2], [east_end, 1.5 * w], [-_BEHIND, 1.5 * w]])]
    low = -far if "turn_right" in exits else -w / 2
    high = far if "turn_left" in exits else 1.5 * w
    strips.append(np.array([[centre - w, low], [centre + w, low], [centre + w, high], [centre - w, high]]))
    drivable = closed_union(strips, curb_radius=9.0)
    ego_speed = float(rng.uniform(3.0, 7.0))
    limit = float(rng.uniform(7.0, 11.0))
    routes = []
    line_x = np.arange(-_BEHIND, east_end + _STEP / 2, _STEP)
    lanes = [np.column_stack([line_x, np.zeros_like(line_x)]), np.column_stack([line_x[::-1], np.full_like(line_x, w)])]
    if "straight" in exits:
        routes.append(Route("straight", lanes[0][line_x >= 0], limit, 1))
    if "turn_right" in exits:
        radius = float(rng.uniform(7.0, 9.0))
        path = _turn(centre - w / 2 - radius, np.array([centre - w / 2 - radius, 0.0]), radius, -1.0)
        routes.append(Route("turn_right", path, float(np.sqrt(2.0 * radius)), 2))
        y = np.arange(-w / 2, low - _STEP / 2, -_STEP)
        lanes += [np.column_stack([np.full_like(y, centre - w / 2), y]),
                  np.column_stack([np.full_like(y, centre + w / 2), y])[::-1]]
    if "turn_left" in exits:
        radius = float(rng.uniform(9.0, 12.0))
        start = centre + w / 2 - radius
        path = _turn(start, np.array([start, 0.0]), radius, 1.0)
        routes.append(Route("turn_left", path, float(np.sqrt(2.0 * radius)), 0))
        y = np.arange(1.5 * w, high + _STEP / 2, _STEP)
        lanes += [np.column_stack([np.full_like(y, centre + w / 2), y]),
                  np.column_stack([np.full_like(y, centre - w / 2), y])[::-1]]
    candidates = []
    if rng.random() < 0.5:  # a lead vehicle ahead of the ego, driving on or waiting
        candidates.append((lanes[0], _BEHIND + float(rng.uniform(8.0, centre + 10.0)), float(rng.uniform(0, 0.8) * limit)))
    for _ in range(int(rng.integers(0, 3))):  # oncoming traffic
        candidates.append((lanes[1], float(rng.uniform(0.0, east_end + _BEHIND)), float(rng.uniform(0.5, 1.0) * limit)))
    for lane in lanes[2:]:  # parked or waiting vehicles on the crossing road
        if rng.random() < 0.35:
            candidates.append((lane, float(rng.uniform(4.0, 40.0)), 0.0))
    boxes, futures = _place_agents(rng, candidates)
    return Scene("junction", drivable, lanes, routes, boxes, futures, ego_speed)


def sample_scene(rng: np.random.Generator, kind: str | None = None) -> Scene:
    """Draw one scene.

    Args:
        rng: the random generator (the scene is a deterministic function of its state).
        kind: one of :data:`SCENE_KINDS`; None draws one uniformly.

    Returns:
        A :class:`Scene`. Its routes are candidates: :func:`flowzoo.driving.expert.plan_routes` decides which
        ones are feasible given the other vehicles.
    """
    if kind is None:
        kind = SCENE_KINDS[int(rng.integers(0, len(SCENE_KINDS)))]
    if kind not in SCENE_KINDS:
        raise ConfigError(expected(f"a scene kind in {SCENE_KINDS}", repr(kind), "pick one of them, or None"))
    return _junction_scene(rng) if kind == "junction" else _road_scene(rng, kind)
