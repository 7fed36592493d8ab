"""highway-env (Leurent, 2018) as a closed-loop simulator for driving planners: a headless adapter, an expert,
BEV conversion and a trajectory tracker.

GoalFlow (arXiv 2503.05689) plans 8 poses at 2 Hz (4 s) in the ego frame; NAVSIM tracks such a plan with an LQR
at 10 Hz. Here a plan drives ``highway-env`` (``highway-fast-v0``, ``merge-v0``, ``roundabout-v0``,
``intersection-v0``, all headless) through :class:`flowzoo.driving.tracking.Tracker` (pure pursuit and a speed
loop) at the simulator's rate (one ``env.step`` per simulation step). Simulation time is seconds; there is no
diffusion time here.

**Frames.** highway-env's world has y pointing *down* the screen (its right lanes have the larger y), so every
pose is mirrored (y → −y, θ → −θ) into flowzoo's right-handed frame (traffic on the right, as drawn);
steering is negated on the way back. Plans, rasters and scene arrays use the ego frame of
:mod:`flowzoo.driving.geometry` (x forward, y left).

**Expert.** The environments have no built-in expert. :meth:`HighwaySim.expert_plan` copies the road, replaces
the ego of the copy by an IDM/MOBIL vehicle (Treiber et al. 2000; Kesting et al. 2007) with the ego's state and
route, steps the copy 4 s and reads the ego's poses at 2 Hz: the 8-pose plan the expert would drive (other
vehicles react to it exactly as in the real run, so the plan is consistent with the scene).
:meth:`HighwaySim.swap_in_expert` does the same in the live environment (its ``action`` dict then replays
exactly with the continuous action ranges of ``tracking.ACCEL_LIMIT`` and ``tracking.STEER_LIMIT``, which are
IDM's). :meth:`HighwaySim.perturb` displaces the ego sideways and turns it, so that demonstrations also show
the expert recovering (ChauffeurNet's perturbation, Bansal et al., arXiv 1812.03079).

**BEV.** :meth:`HighwaySim.observe` rasterises the drivable area (the union of lane strips near the ego), lane
centrelines, other vehicles' boxes and their lane-following constant-speed predictions (the ``agents_future``
channel: what a planner can know in closed loop) with :func:`flowzoo.driving.raster.rasterize`.

Example:
    >>> sim = HighwaySim("highway-fast-v0")  # doctest: +SKIP
    >>> sim.reset(seed=0); bev, ego, command = sim.observe()  # doctest: +SKIP
    >>> bev.shape, sim.expert_plan().shape  # doctest: +SKIP
    ((4, 64, 64), (8, 3))
    >>> check_env_id("merge-v0")
    'merge-v0'
"""

from __future__ import annotations

import copy
import os

import numpy as np

from flowzoo.core.errors import ConfigError, MissingDependencyError, expected
from flowzoo.driving.geometry import closed_union, polygon_vertices, resample_polyline, wrap_angle
from flowzoo.driving.raster import RasterSpec, rasterize
from flowzoo.driving.scenes import COMMANDS, DT, HORIZON
from flowzoo.driving.tracking import ACCEL_LIMIT, STEER_LIMIT

__all__ = ["ENV_IDS", "HIGHWAY_EXTRA", "require_highway_env", "check_env_id", "make_env", "to_ego_frame",
           "HighwaySim"]

ENV_IDS = ("highway-fast-v0", "merge-v0", "roundabout-v0", "intersection-v0")
HIGHWAY_EXTRA = 'pip install "flowzoo[driving-sim]"'
_CLASSES = {"highway-fast-v0": ("highway_env.envs.highway_env", "HighwayEnvFast", None),
            "merge-v0": ("highway_env.envs.merge_env", "MergeEnv", None),
            "roundabout-v0": ("highway_env.envs.roundabout_env", "RoundaboutEnv", "nxs"),
            "intersection-v0": ("highway_env.envs.intersection_env", "IntersectionEnv", "o1")}
_WINDOW = 150.0  # metres around the ego for lanes and vehicles: covers a 4-s plan at highway speed
_LANE_STEP = 1.0  # metres between sampled lane points
_KINDS = {"highway-fast-v0": 0, "merge-v0": 0, "roundabout-v0": 1, "intersection-v0": 2}  # nearest SCENE_KINDS
_TURN = 0.35  # rad of route heading change 40 m ahead that makes the command "left" / "right"


def require_highway_env():
    """Import ``highway_env`` (headless: SDL's offscreen video driver) or raise one clear error naming the extra."""
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")  # "dummy" renders black frames
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        import highway_env
    except ImportError as error:
        raise MissingDependencyError(expected("the highway-env package (>= 1.10) for closed-loop driving",
                                              "it is not installed", HIGHWAY_EXTRA)) from error
    return highway_env


def check_env_id(env_id: object) -> str:
    """``env_id`` if it is one of :data:`ENV_IDS`, else a :class:`ConfigError` listing them."""
    if env_id not in ENV_IDS:
        raise ConfigError(expected(f"an environment id among {', '.join(ENV_IDS)}", repr(env_id),
                                   "pass e.g. --env highway-fast-v0"))
    return str(env_id)


def make_env(env_id: str, *, render: bool = False, config: dict | None = None):
    """A headless highway-env environment with continuous actions at IDM's limits and one policy step per
    simulation step. Rewards are switched off (several of them index discrete actions, and no planner here
    uses them); observations are unnormalised kinematics.

    Args:
        env_id: one of :data:`ENV_IDS`.
        render: allow ``env.render()`` to return RGB frames (offscreen).
        config: extra highway-env configuration merged over these defaults.
    """
    env_id = check_env_id(env_id)
    require_highway_env()
    import importlib

    module, name, _ = _CLASSES[env_id]
    base = getattr(importlib.import_module(module), name)
    reward_free = type(f"RewardFree{name}", (base,), {"_reward": lambda self, action: 0.0,
                                                     "_rewards": lambda self, action: {}})
    frequency = base.default_config()["simulation_frequency"]
    settings = {"action": {"type": "ContinuousAction", "acceleration_range": [-ACCEL_LIMIT, ACCEL_LIMIT],
                           "steering_range": [-STEER_LIMIT, STEER_LIMIT]},
                "observation": {"type": "Kinematics", "normalize": False}, "policy_frequency": frequency}
    settings.update(config or {})
    return reward_free(config=settings, render_mode="rgb_array" if render else None)


def _mirror(xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, dtype=float) * np.array([1.0, -1.0])


def to_ego_frame(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Points ``(..., 2)`` or poses ``(..., 3)`` of a world frame expressed in the frame of world ``pose``.

    Example:
        >>> to_ego_frame(np.array([[1.0, 1.0, 0.0]]), np.array([1.0, 0.0, np.pi / 2])).round(6).tolist()
        [[1.0, 0.0, -1.570796]]
    """
    points = np.asarray(points, dtype=float)
    c, s = np.cos(pose[2]), np.sin(pose[2])
    d = points[..., :2] - pose[:2]
    xy = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)
    if points.shape[-1] == 2:
        return xy
    return np.concatenate([xy, wrap_angle(points[..., 2:3] - pose[2])], -1)


def _lane_points(lane, s: np.ndarray, lateral: float) -> np.ndarray:
    if type(lane).__name__ == "StraightLane":  # vectorised: highway lanes are kilometres long
        return lane.start + s[:, None] * lane.direction + lateral * lane.direction_lateral
    return np.array([lane.position(float(si), lateral) for si in s])


def _runs(mask: np.ndarray) -> list[slice]:
    """Contiguous runs of True in a 1-D mask, as slices (a circular lane can enter the window twice)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2])]


class HighwaySim:
    """One highway-env environment driven by plans (see the module docstring).

    Args:
        env_id: one of :data:`ENV_IDS`.
        render: keep offscreen RGB rendering available (:meth:`render`).
        spec: the BEV raster's size and extent.
    """

    def __init__(self, env_id: str, *, render: bool = False, spec: RasterSpec = RasterSpec()):
        self.env_id = check_env_id(env_id)
        self.env = make_env(self.env_id, render=render)
        self.spec = spec
        self.dt = 1.0 / float(self.env.config["simulation_frequency"])
        self.destination = _CLASSES[self.env_id][2]
        self.time, self.steps = 0.0, 0

    # --- state -------------------------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Reset with ``seed`` (the episode is a deterministic function of it)."""
        self.env.reset(seed=int(seed))
        self.seed = int(seed)
        self.time, self.steps, self.accel, self.yaw_rate = 0.0, 0, 0.0, 0.0
        self.target_speed = float(self.vehicle.speed)
        self._lanes = [(lane, self._sample_lane(lane)) for lane in self.env.road.network.lanes_list()]
        self.route = self._expert_vehicle(self.env.road, self.vehicle).route

    @property
    def vehicle(self):
        """The ego vehicle (highway-env object)."""
        return self.env.vehicle

    @property
    def pose(self) -> np.ndarray:
        """The ego's world pose ``(x, y, θ)`` in flowzoo's right-handed frame."""
        v = self.vehicle
        return np.array([v.position[0], -v.position[1], float(wrap_angle(-v.heading))])

    @property
    def speed(self) -> float:
        return float(self.vehicle.speed)

    def step(self, accel: float, steering: float) -> tuple[bool, bool, dict]:
        """Apply (acceleration, steering in flowzoo's frame) for one simulation step; (terminated, truncated, info)."""
        before = self.pose[2]
        action = np.array([accel / ACCEL_LIMIT, -steering / STEER_LIMIT], dtype=np.float32)
        _, _, terminated, truncated, info = self.env.step(action)
        self.time += self.dt
        self.steps += 1
        self.accel = float(self.vehicle.action.get("acceleration", accel))
        self.yaw_rate = float(wrap_angle(self.pose[2] - before)) / self.dt
        return bool(terminated), bool(truncated), info

    def perturb(self, lateral: float, heading: float) -> None:
        """Move the ego ``lateral`` metres to its left and turn it ``heading`` rad counter-clockwise (flowzoo's
        frame), keeping its speed; its controller (the IDM expert after :meth:`swap_in_expert`) steers back."""
        v = self.vehicle
        left = np.array([np.sin(v.heading), -np.cos(v.heading)])  # the ego's left in highway-env's mirrored frame
        v.position = np.asarray(v.position, dtype=float) + float(lateral) * left
        v.heading = float(v.heading - heading)

    def ego_state(self) -> np.ndarray:
        """``(3,)`` float32: speed, longitudinal acceleration, yaw rate (as ``raster.ego_state``)."""
        return np.array([self.speed, self.accel, self.yaw_rate], dtype=np.float32)

    def command(self) -> int:
        """Driving command (index into ``COMMANDS``) from the heading change of the ego's route 40 m ahead."""
        v, route = self.vehicle, self.route or []
        keys = [r[:2] for r in route]
        if v.lane_index[:2] not in keys:
            return COMMANDS.index("straight")
        network, ahead = self.env.road.network, v.lane.local_coordinates(v.position)[0] + 40.0
        for k, (start, end, lane_id) in enumerate(route[keys.index(v.lane_index[:2]):]):
            lanes = network.graph[start][end]
            lane = v.lane if k == 0 else lanes[min(v.lane_index[2] if lane_id is None else lane_id, len(lanes) - 1)]
            if ahead <= lane.length:
                break
            ahead -= lane.length
        heading = lane.heading_at(min(ahead, lane.length))
        turn = -float(wrap_angle(heading - v.heading))  # mirrored into flowzoo's frame: positive is a left turn
        return COMMANDS.index("left" if turn > _TURN else "right" if turn < -_TURN else "straight")

    # --- geometry ----------------------------------------------------------------------------------------------
    def _sample_lane(self, lane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.linspace(0.0, lane.length, max(int(np.ceil(lane.length / _LANE_STEP)), 1) + 1)
        width = float(lane.width_at(0.0))
        return tuple(_mirror(_lane_points(lane, s, lateral)) for lateral in (0.0, width / 2, -width / 2))

    def geometry(self) -> tuple[object, list[np.ndarray]]:
        """The drivable polygon (union of lane strips within the window) and lane centrelines, in the ego frame."""
        pose, strips, centres = self.pose, [], []
        for _, (centre, left, right) in self._lanes:
            near = np.linalg.norm(centre - pose[:2], axis=1) < _WINDOW
            for run in _runs(near):
                if run.stop - run.start < 2:
                    continue
                centres.append(to_ego_frame(centre[run], pose))
                strips.append(to_ego_frame(np.concatenate([left[run], right[run][::-1]]), pose))
        if not strips:  # off every lane: a small square under the ego, so the polygon exists
            strips = [np.array([[-3.0, -2.0], [3.0, -2.0], [3.0, 2.0], [-3.0, 2.0]])]
        return closed_union(strips, 0.0), centres

    def others(self) -> list:
        """Other vehicles within the window (highway-env objects), in road order."""
        pose = self.vehicle.position
        return [v for v in self.env.road.vehicles
                if v is not self.vehicle and np.linalg.norm(v.position - pose) < _WINDOW]

    def agent_boxes(self, vehicles: list) -> np.ndarray:
        """``(A, 5)`` ego-frame boxes of highway-env vehicles."""
        if not vehicles:
            return np.zeros((0, 5))
        poses = np.array([[v.position[0], -v.position[1], -v.heading] for v in vehicles])
        sizes = np.array([[v.LENGTH, v.WIDTH] for v in vehicles])
        return np.concatenate([to_ego_frame(poses, self.pose), sizes], axis=1)

    def predicted_futures(self, vehicles: list) -> np.ndarray:
        """``(A, HORIZON, 3)``: each vehicle at constant speed along its route (straight on without one)."""
        times = DT * np.arange(1, HORIZON + 1)
        futures = []
        for v in vehicles:
            try:  # along its route; highway-env's lookup fails on some routes (lane ids it never created)
                xy, heading = v.predict_trajectory_constant_speed(times)
                world = np.column_stack([np.asarray(xy)[:, 0], -np.asarray(xy)[:, 1], -np.asarray(heading)])
            except (AttributeError, IndexError, KeyError):
                d = np.array([np.cos(v.heading), np.sin(v.heading)]) * v.speed
                world = np.column_stack([v.position + times[:, None] * d, np.full(HORIZON, v.heading)])
                world[:, 1:] *= -1
            futures.append(to_ego_frame(world, self.pose))
        return np.asarray(futures, dtype=float).reshape(-1, HORIZON, 3)

    def observe(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(BEV ``(C, H, W)`` uint8, ego state ``(3,)``, command): a planner's input."""
        drivable, lanes = self.geometry()
        vehicles = self.others()
        bev = rasterize(drivable, lanes, self.agent_boxes(vehicles), self.predicted_futures(vehicles), self.spec)
        return bev, self.ego_state(), self.command()

    # --- expert ------------------------------------------------------------------------------------------------
    def _expert_vehicle(self, road, ego):
        from highway_env.vehicle.behavior import IDMVehicle

        expert = IDMVehicle(road, np.array(ego.position, dtype=float), ego.heading, ego.speed,
                            target_lane_index=getattr(ego, "target_lane_index", ego.lane_index),
                            target_speed=getattr(self, "target_speed", ego.speed), route=getattr(ego, "route", None))
        if self.destination and not expert.route:
            expert.plan_route_to(self.destination)
        expert.timer = getattr(ego, "timer", 0.0)
        return expert

    def swap_in_expert(self):
        """Replace the live ego by an IDM/MOBIL vehicle (the expert drives the rest of the episode); returns it."""
        env, ego = self.env, self.vehicle
        expert = self._expert_vehicle(env.road, ego)
        env.road.vehicles[env.road.vehicles.index(ego)] = expert
        env.controlled_vehicles[0] = expert
        return expert

    def expert_plan(self, vehicles: list | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The expert's ``(HORIZON, 3)`` ego-frame plan from the current state (a 4-s rollout of a copy of the
        road with an IDM/MOBIL ego); with ``vehicles`` (from :meth:`others`) also their true futures
        ``(A, HORIZON, 3)`` in that rollout."""
        road = self.env.road
        twin = copy.copy(road)  # only the vehicles near the ego are simulated: IDM's neighbour search is O(N²)
        near = [v for v in road.vehicles if np.linalg.norm(v.position - self.vehicle.position) < _WINDOW + 40.0]
        twin.vehicles = copy.deepcopy(near, {id(road.network): road.network, id(road): twin})
        index = near.index(self.vehicle)
        if type(twin.vehicles[index]).__name__ != "IDMVehicle":
            twin.vehicles[index] = self._expert_vehicle(twin, twin.vehicles[index])
        tracked = [twin.vehicles[index]] + [twin.vehicles[near.index(v)] for v in vehicles or []]
        steps = int(np.ceil(HORIZON * DT / self.dt - 1e-9))
        track = np.zeros((steps + 1, len(tracked), 3))
        track[0] = [[v.position[0], -v.position[1], -v.heading] for v in tracked]
        for k in range(1, steps + 1):
            twin.act()
            twin.step(self.dt)
            track[k] = [[v.position[0], -v.position[1], -v.heading] for v in tracked]
        track[..., 2] = np.unwrap(track[..., 2], axis=0)
        sim_times, times = self.dt * np.arange(steps + 1), DT * np.arange(1, HORIZON + 1)
        world = np.stack([np.stack([np.interp(times, sim_times, track[:, a, j]) for j in range(3)], -1)
                          for a in range(len(tracked))])
        local = to_ego_frame(world, self.pose)
        return local[0] if vehicles is None else (local[0], local[1:])

    def scene_record(self) -> dict[str, np.ndarray]:
        """The current state as one record of the :mod:`flowzoo.driving.data` schema (before stacking): BEV,
        ego state, command, the expert plan as ``trajectory`` and its end as the single goal candidate, the
        other vehicles with their true futures, the drivable ring and lanes. ``kind``: 0 on highway and merge,
        1 on the roundabout, 2 at the intersection (the closest synthetic kinds)."""
        drivable, lanes = self.geometry()
        vehicles = self.others()
        boxes = self.agent_boxes(vehicles)
        bev = rasterize(drivable, lanes, boxes, self.predicted_futures(vehicles), self.spec)
        plan, futures = self.expert_plan(vehicles)
        path = np.concatenate([np.zeros((1, 2)), plan[:, :2]])
        progress = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        route = resample_polyline(path, 48) if progress > 1e-3 else np.zeros((48, 2))
        return {"bev": bev, "ego_state": self.ego_state(), "command": np.int8(self.command()),
                "trajectory": plan.astype(np.float32), "goal_candidates": plan[-1:].astype(np.float32),
                "goal_index": np.int16(0), "routes": route[None].astype(np.float32),
                "reference_progress": np.float32(progress),
                "drivable": polygon_vertices(drivable).astype(np.float32),
                "agent_boxes": boxes.astype(np.float32), "agent_futures": futures.astype(np.float32),
                "lanes": np.stack([resample_polyline(lane, 48) for lane in lanes]).astype(np.float32)
                if lanes else np.full((1, 48, 2), np.nan, np.float32),
                "kind": np.int8(_KINDS[self.env_id]),
                "scene_seed": np.int64(0)}

    def render(self) -> np.ndarray:
        """An RGB frame ``(H, W, 3)`` (needs ``render=True``)."""
        return self.env.render()
