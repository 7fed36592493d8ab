"""Closed-loop evaluation of driving planners in highway-env, and expert demonstrations from it.

GoalFlow (arXiv 2503.05689) is evaluated open-loop on NAVSIM; closed loop asks the harder question of what the
plans do when they are driven. :func:`run_episodes` resets :class:`~flowzoo.driving.highway.HighwaySim` with
``seed + k`` for episode ``k``, asks the planner for an 8-pose, 4-s plan every ``replan_every`` simulation steps
and tracks it with :class:`~flowzoo.driving.tracking.Tracker` at the simulator's rate. A planner is any callable
``planner(bev, ego_state, command) -> (8, 3)`` poses in the ego frame (x forward, y left); one that also needs
the simulator (the IDM expert) or a seed (:class:`GoalFlowPolicy`, reseeded from the episode's seed so that an
episode is a deterministic function of it) has a ``reset(sim)`` method, called at the start of each episode.
Simulation time is in seconds; no flow time appears here (the planners integrate their own 0 → 1).

Per episode (:class:`EpisodeResult`): **success** = no collision, still on the road, and the episode reached the
environment's end (its time limit, the merge's end, the intersection's exit) or ``max_steps``; **collisions per
km** over a set of episodes = collisions / kilometres driven; **progress** = metres driven; **comfort** = the
fraction of 4-s windows of the driven trajectory (sampled at 2 Hz) that pass
:func:`flowzoo.driving.metrics.comfort`'s NAVSIM bounds; mean speed; planner milliseconds per call. An exception in
the environment or the planner ends that episode as a failure with its text in ``error``; the run goes on.

Demonstrations (:func:`collect_demonstrations`) can perturb the expert's ego sideways and in heading before a
recorded state (ChauffeurNet, Bansal et al., arXiv 1812.03079, §4): a planner imitating only centred driving
never sees how to return to the lane centre, and its small heading errors can add up in closed loop.

The command line, ``flowzoo driving simulate``, is :func:`flowzoo.driving.cli_simulate.simulate_main`.

Example:
    >>> plan = constant_velocity_planner(None, np.array([10.0, 0.0, 0.0]), 1)
    >>> plan.shape, float(plan[-1, 0])
    ((8, 3), 40.0)
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, MissingDependencyError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive_int
from flowzoo.driving.highway import HighwaySim, check_env_id, to_ego_frame
from flowzoo.driving.metrics import comfort
from flowzoo.driving.scenes import DT, HORIZON
from flowzoo.driving.tracking import Tracker

__all__ = ["EpisodeResult", "constant_velocity_planner", "IDMPlanner", "GoalFlowPolicy", "goalflow_planner",
           "check_video_path", "run_episodes", "summarize", "collect_demonstrations", "write_video"]


@dataclass
class EpisodeResult:
    """One closed-loop episode (see the module docstring). ``error`` holds ``stage: exception`` on a crash."""

    episode: int
    seed: int
    success: bool
    collided: bool
    offroad: bool
    steps: int
    duration_s: float
    progress_m: float
    mean_speed: float
    comfort: float
    planner_ms: float
    plans: int
    end: str
    error: str | None = None


def constant_velocity_planner(bev, ego_state, command) -> np.ndarray:
    """The constant-velocity baseline: straight ahead at the current speed."""
    speed = float(np.asarray(ego_state)[0])
    x = speed * DT * np.arange(1, HORIZON + 1)
    return np.column_stack([x, np.zeros(HORIZON), np.zeros(HORIZON)])


class IDMPlanner:
    """The IDM/MOBIL expert as a planner: :meth:`HighwaySim.expert_plan` of the simulator it is reset with."""

    def __init__(self):
        self.sim = None

    def reset(self, sim: HighwaySim) -> None:
        self.sim = sim

    def __call__(self, bev, ego_state, command) -> np.ndarray:
        return self.sim.expert_plan()


class GoalFlowPolicy:
    """A planner with GoalFlow's ``plan(batch, steps=..., variant=..., generator=...)`` (returning
    ``.trajectory`` ``(1, T, 3)``) as a ``planner(bev, ego_state, command)``; its noise is reseeded with the
    episode's seed at every :meth:`reset`, so closed-loop runs repeat exactly."""

    def __init__(self, planner, *, steps: int | None = None, variant: str = "M3"):
        import torch

        self.planner, self.steps, self.variant = planner, steps, _check_variant(variant)
        self.generator = torch.Generator().manual_seed(0)

    def reset(self, sim: HighwaySim) -> None:
        self.generator.manual_seed(int(getattr(sim, "seed", 0)))

    def __call__(self, bev, ego_state, command) -> np.ndarray:
        import torch

        with torch.no_grad():
            result = self.planner.plan({"bev": bev, "ego_state": ego_state, "command": np.array([command])},
                                       steps=self.steps, variant=self.variant, generator=self.generator)
        return np.asarray(result.trajectory[0].detach().cpu(), dtype=float)


_VARIANTS = ("M0", "M1", "M2", "M3")  # gt_goal needs the logged future, which closed loop lacks


def _check_variant(variant: object) -> str:
    """Checked before any episode: a variant the planner refuses would fail every episode one by one."""
    if variant not in _VARIANTS:
        raise ConfigError(expected(f"a closed-loop GoalFlow variant among {', '.join(_VARIANTS)}", repr(variant),
                                   "pass e.g. --variant M3 (gt_goal needs the expert's future)"))
    return str(variant)


def check_video_path(path: str | Path) -> Path:
    """``path`` if :func:`write_video` can write it (a ``.gif``, or an ``.mp4`` with imageio-ffmpeg installed);
    checked before the episodes run rather than after the first.

    Example:
        >>> check_video_path("run.gif").name
        'run.gif'
    """
    import importlib.util

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(expected("a video path ending in .gif or .mp4", str(path), "e.g. --video run.gif"))
    if path.suffix.lower() == ".mp4" and not all(importlib.util.find_spec(m) for m in ("imageio", "imageio_ffmpeg")):
        raise MissingDependencyError(expected("imageio and imageio-ffmpeg to write an .mp4", "not installed",
                                              "pip install imageio imageio-ffmpeg, or write a .gif"))
    return path


def goalflow_planner(planner, *, steps: int | None = None, variant: str = "M3") -> GoalFlowPolicy:
    """:class:`GoalFlowPolicy` of ``planner`` (a :class:`~flowzoo.driving.goalflow.GoalFlowPlanner`)."""
    return GoalFlowPolicy(planner, steps=steps, variant=variant)


def _comfort_fraction(poses: np.ndarray, speeds: np.ndarray, yaw_rates: np.ndarray, dt: float) -> float:
    """Fraction of 4-s windows of the driven trajectory (world poses every ``dt``) within NAVSIM's bounds."""
    duration = dt * (len(poses) - 1)
    if duration < HORIZON * DT:
        return float("nan")
    times = np.arange(0.0, duration + 1e-9, DT)
    sim_times = dt * np.arange(len(poses))
    theta = np.unwrap(poses[:, 2])
    sampled = np.column_stack([np.interp(times, sim_times, poses[:, 0]), np.interp(times, sim_times, poses[:, 1]),
                               np.interp(times, sim_times, theta)])
    ok = [comfort(to_ego_frame(sampled[i + 1:i + 1 + HORIZON], sampled[i]), initial_speed=float(
        np.interp(times[i], sim_times, speeds)), initial_yaw_rate=float(np.interp(times[i], sim_times, yaw_rates)))[0]
          for i in range(len(times) - HORIZON)]
    return float(np.mean(ok))


def _episode(sim: HighwaySim, planner, episode: int, seed: int, replan_every: int, max_steps: int,
             frames: list | None) -> EpisodeResult:
    tracker, stage, error, end = Tracker(), "reset", None, "max_steps"
    poses, speeds, yaw_rates, planner_s, plans, info = [], [], [], 0.0, 0, {}
    try:
        sim.reset(seed)
        if hasattr(planner, "reset"):
            planner.reset(sim)
        for step in range(max_steps):
            poses.append(sim.pose), speeds.append(sim.speed), yaw_rates.append(sim.yaw_rate)
            if frames is not None:
                frames.append(sim.render())
            if step % replan_every == 0:
                stage = "observe"
                bev, ego, command = sim.observe()
                stage, start = "planner", time.perf_counter()
                plan = np.asarray(planner(bev, ego, command), dtype=float)
                planner_s, plans = planner_s + time.perf_counter() - start, plans + 1
                stage = "tracker"
                tracker.set_plan(plan, sim.pose, sim.speed, sim.time)
            stage = "env"
            terminated, truncated, info = sim.step(*tracker.control(sim.pose, sim.speed, sim.time))
            if terminated or truncated:
                end = "collision" if info.get("crashed") else ("terminated" if terminated else "time limit")
                break
        poses.append(sim.pose), speeds.append(sim.speed), yaw_rates.append(sim.yaw_rate)
    except Exception as exc:  # noqa: BLE001 - a crashing env or planner is a failed episode, not a failed run
        error, end = f"{stage}: {type(exc).__name__}: {exc}", "error"
        if stage == "tracker" or not str(exc):
            error += " | " + traceback.format_exc(limit=2).strip().splitlines()[-1]
    poses = np.asarray(poses, dtype=float).reshape(-1, 3)
    progress = float(np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1).sum()) if len(poses) > 1 else 0.0
    collided = bool(info.get("crashed", False))
    offroad = error is None and len(poses) > 0 and not bool(sim.vehicle.on_road)
    duration = sim.dt * max(len(poses) - 1, 0)
    return EpisodeResult(episode=episode, seed=seed, success=error is None and not collided and not offroad,
                         collided=collided, offroad=offroad, steps=max(len(poses) - 1, 0), duration_s=duration,
                         progress_m=progress, mean_speed=progress / duration if duration else 0.0,
                         comfort=_comfort_fraction(poses, np.asarray(speeds), np.asarray(yaw_rates), sim.dt)
                         if len(poses) > 1 else float("nan"),
                         planner_ms=1000 * planner_s / plans if plans else float("nan"), plans=plans, end=end,
                         error=error)


def run_episodes(planner_fn: Callable, env_id: str, *, episodes: int = 50, seed: int = 0, replan_every: int = 5,
                 max_steps: int | None = None, video: str | Path | None = None, progress: bool = True,
                 sim: HighwaySim | None = None) -> list[EpisodeResult]:
    """Drive ``episodes`` seeded episodes of ``env_id`` with ``planner_fn`` (see the module docstring).

    Args:
        planner_fn: ``planner(bev, ego_state, command) -> (8, 3)``; an optional ``reset(sim)`` is called per episode.
        env_id: one of :data:`flowzoo.driving.highway.ENV_IDS`.
        episodes, seed: episode ``k`` is reset with ``seed + k``.
        replan_every: simulation steps between plans.
        max_steps: simulation steps per episode at most (default: 60 s of simulated time).
        video: a ``.gif`` or ``.mp4`` of the first episode, written only when given.
        progress: a progress bar on stderr.
        sim: a ready simulator (tests); default: a new one for ``env_id``.
    """
    env_id = check_env_id(env_id)
    episodes = check_positive_int(episodes, "episodes", fix="pass e.g. --episodes 50")
    replan_every = check_positive_int(replan_every, "replan_every", fix="pass e.g. --replan_every 5")
    video = None if video is None else check_video_path(video)
    sim = sim or HighwaySim(env_id, render=video is not None)
    max_steps = int(round(60.0 / sim.dt)) if max_steps is None else check_positive_int(max_steps, "max_steps")
    results = []
    for k in tqdm(range(episodes), desc=f"{env_id} episodes", disable=not progress, unit="episode"):
        frames = [] if (video is not None and k == 0) else None
        results.append(_episode(sim, planner_fn, k, int(seed) + k, replan_every, max_steps, frames))
        if frames:
            write_video(frames, video, fps=1.0 / sim.dt)
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Success rate, collisions per km, the fraction of episodes ending off the road, mean progress, comfort,
    speed and planner ms over episodes.

    Example:
        >>> r = EpisodeResult(0, 0, True, False, False, 10, 2.0, 500.0, 25.0, 1.0, 3.0, 2, "time limit")
        >>> summarize([r, EpisodeResult(1, 1, False, True, False, 5, 1.0, 500.0, 25.0, 1.0, 3.0, 1, "collision")])
        ... # doctest: +NORMALIZE_WHITESPACE
        {'episodes': 2, 'success_rate': 0.5, 'collisions_per_km': 1.0, 'offroad_rate': 0.0, 'progress_m': 500.0,
         'comfort': 1.0, 'mean_speed': 25.0, 'planner_ms': 3.0, 'errors': 0}
    """
    if not results:
        raise ConfigError(expected("at least one episode result", "none", "run at least one episode"))
    km = sum(r.progress_m for r in results) / 1000.0
    mean = lambda key: float(np.nanmean([getattr(r, key) for r in results])) if any(  # noqa: E731
        np.isfinite(getattr(r, key)) for r in results) else float("nan")
    return {"episodes": len(results), "success_rate": float(np.mean([r.success for r in results])),
            "collisions_per_km": sum(r.collided for r in results) / km if km > 0 else float("nan"),
            "offroad_rate": float(np.mean([r.offroad for r in results])),
            "progress_m": mean("progress_m"), "comfort": mean("comfort"), "mean_speed": mean("mean_speed"),
            "planner_ms": mean("planner_ms"), "errors": sum(r.error is not None for r in results)}


def write_video(frames: list[np.ndarray], path: str | Path, *, fps: float = 5.0, max_width: int = 480) -> Path:
    """Write RGB frames as a GIF (Pillow) or MP4 (imageio with ffmpeg), downscaled to ``max_width``."""
    from PIL import Image

    path = check_video_path(path)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    scale = min(1.0, max_width / images[0].width)
    if scale < 1.0:
        images = [im.resize((int(im.width * scale), int(im.height * scale))) for im in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                       optimize=True)
    else:
        import imageio.v2 as imageio

        imageio.mimsave(path, [np.asarray(im) for im in images], fps=fps)
    return path


def collect_demonstrations(env_id: str | Sequence[str], episodes: int, seed: int = 0, *, every: int = 5,
                           max_steps: int | None = None, lateral_noise: float = 0.0, heading_noise: float = 0.0,
                           progress: bool = False) -> dict[str, np.ndarray]:
    """Expert demonstrations in the :mod:`flowzoo.driving.data` schema: the IDM/MOBIL expert drives each episode
    (swapped in for the ego after reset) and every ``every`` simulation steps the state is recorded with the
    expert's next 4 s (:meth:`HighwaySim.scene_record`). Episode ``k`` uses seed ``seed + k``.

    Args:
        env_id: one environment id, or several (``episodes`` each, stacked into one set of arrays).
        lateral_noise, heading_noise: before half of the recorded states (drawn at random, seeded), the ego is
            moved sideways by up to ``lateral_noise`` metres and turned by up to ``heading_noise`` rad
            (:meth:`HighwaySim.perturb`), so the expert's plan shows the recovery (module docstring).
    """
    env_ids = [check_env_id(e) for e in ([env_id] if isinstance(env_id, str) else env_id)]
    if not env_ids:
        raise ConfigError(expected("at least one environment id", "none", "pass e.g. 'highway-fast-v0'"))
    episodes = check_positive_int(episodes, "episodes")
    every = check_positive_int(every, "every")
    noise = (check_nonnegative(lateral_noise, "lateral_noise"), check_nonnegative(heading_noise, "heading_noise"))
    records = []
    for env in env_ids:
        sim = HighwaySim(env)
        steps = int(round(40.0 / sim.dt)) if max_steps is None else check_int(max_steps, "max_steps", low=1)
        for k in tqdm(range(episodes), desc=f"{env} demonstrations", disable=not progress, unit="episode"):
            sim.reset(int(seed) + k)
            sim.swap_in_expert()
            rng = np.random.default_rng(int(seed) + k)
            for step in range(steps):
                if step % every == 0:
                    if any(noise) and rng.random() < 0.5:
                        sim.perturb(*(rng.uniform(-1.0, 1.0, 2) * noise))
                    record = sim.scene_record()
                    record["scene_seed"] = np.int64(int(seed) + k)
                    records.append(record)
                terminated, truncated, _ = sim.step(0.0, 0.0)  # the IDM ego ignores the action and drives itself
                if terminated or truncated:
                    break
    return _stack_records(records)


def _stack_records(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    def padded(key: str) -> np.ndarray:
        size = max(len(r[key]) for r in records)
        return np.stack([np.pad(r[key].astype(np.float32), [(0, size - len(r[key]))] + [(0, 0)] * (r[key].ndim - 1),
                                constant_values=np.nan) for r in records])

    out = {key: np.stack([r[key] for r in records]) for key in ("bev", "ego_state", "command", "trajectory",
                                                                "goal_candidates", "goal_index", "routes",
                                                                "reference_progress", "kind", "scene_seed")}
    for key in ("drivable", "lanes", "agent_boxes", "agent_futures"):
        out[key] = padded(key)
    if out["agent_boxes"].ndim == 2:  # no vehicles anywhere: keep the schema's (N, A, 5) with A = 0
        out["agent_boxes"] = np.zeros((len(records), 0, 5), np.float32)
        out["agent_futures"] = np.zeros((len(records), 0, HORIZON, 3), np.float32)
    out["goal_mask"] = np.ones((len(records), 1), dtype=bool)
    out["agent_mask"] = ~np.isnan(out["agent_boxes"][..., 0])
    return out
