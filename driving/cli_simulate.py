"""``flowzoo driving simulate``: a driving planner closed-loop in highway-env, from the command line.

GoalFlow (arXiv 2503.05689) plans 8 poses over 4 s; here the plan is driven, not scored against a log: the
episodes, their metrics (success, collisions per km, progress, comfort, speed, planner ms) and the tracker are those
of :mod:`flowzoo.driving.simulate` (:func:`~flowzoo.driving.simulate.run_episodes`,
:func:`~flowzoo.driving.simulate.summarize`). Simulation time is in seconds; the flow's own time (0 = noise, 1 =
plan) stays inside the planner. Kept apart from the episode code so that a library user driving
``run_episodes`` never pays for argument parsing, and the command's checks (every option validated before the
first episode, no silent overwrite of ``--video``, no silently ignored ``--checkpoint``) live in one place.

Usage::

    flowzoo driving simulate --env highway-fast-v0 --planner idm --episodes 50 --video run.gif
    flowzoo driving simulate --checkpoint runs/gf --env merge-v0 --episodes 50 --steps 1 --variant M3

Example:
    >>> cfg = SimulateConfig()
    >>> cfg.env, cfg.planner, cfg.episodes
    ('highway-fast-v0', 'auto', 50)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, MissingDependencyError, expected
from flowzoo.core.validation import check_int, check_new_outputs, check_positive_int
from flowzoo.driving.highway import check_env_id
from flowzoo.driving.scenes import HORIZON
from flowzoo.driving.simulate import IDMPlanner, check_video_path, constant_velocity_planner, goalflow_planner, \
    run_episodes, summarize

__all__ = ["PLANNERS", "SimulateConfig", "simulate_main"]

PLANNERS = ("auto", "idm", "constant_velocity", "checkpoint")


@dataclass
class SimulateConfig:
    """Run a driving planner closed-loop in highway-env."""

    env: str = field(default="highway-fast-v0", metadata=option_help("highway-fast-v0, merge-v0, roundabout-v0 or "
                                                                     "intersection-v0"))
    planner: str = field(default="auto", metadata=option_help("idm, constant_velocity or checkpoint (auto: "
                                                              "checkpoint when --checkpoint is given, else idm)"))
    checkpoint: str = field(default="", metadata=option_help("a GoalFlow run directory"))
    episodes: int = field(default=50, metadata=option_help("seeded episodes (seed, seed + 1, ...)"))
    steps: int = field(default=1, metadata=option_help("flow sampling steps of a GoalFlow planner"))
    n_samples: int = field(default=128, metadata=option_help("trajectory samples per GoalFlow plan (paper: 128)"))
    variant: str = field(default="M3", metadata=option_help("GoalFlow variant (M0, M1, M2 or M3)"))
    seed: int = field(default=0, metadata=option_help("seed of the first episode"))
    replan_every: int = field(default=5, metadata=option_help("simulation steps between plans"))
    max_steps: int = field(default=0, metadata=option_help("simulation steps per episode at most (0: 60 s)"))
    video: str = field(default="", metadata=option_help("write the first episode as .gif or .mp4"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --video"))
    progress: bool = field(default=True, metadata=option_help("progress bar"))


def _load_checkpoint_planner(run: str, steps: int, variant: str, n_samples: int) -> Callable:
    if not run:
        raise ConfigError(expected("--checkpoint RUN with --planner checkpoint", "none",
                                   "pass --checkpoint runs/goalflow, or --planner idm"))
    if not Path(run).exists():
        raise ConfigError(expected("--checkpoint naming an existing run directory", run, "check the path"))
    try:
        from flowzoo.driving.train import load_planner
    except ImportError as error:
        raise MissingDependencyError(expected("flowzoo.driving.train.load_planner to load GoalFlow checkpoints",
                                              f"it is not available ({error})",
                                              "use --planner idm or constant_velocity")) from error
    from flowzoo.driving.raster import CHANNELS, RasterSpec

    planner = load_planner(run, horizon=HORIZON, channels=CHANNELS, raster_size=RasterSpec().size,
                           n_samples=n_samples)
    return goalflow_planner(planner, steps=steps, variant=variant)


def simulate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo driving simulate``; prints one summary line and returns 0."""
    cfg = parse_config(SimulateConfig, sys.argv[1:] if argv is None else list(argv), prog="flowzoo driving simulate")
    env_id = check_env_id(cfg.env)
    if cfg.planner not in PLANNERS:
        raise ConfigError(expected(f"--planner among {', '.join(PLANNERS)}", repr(cfg.planner), "pass --planner idm"))
    check_positive_int(cfg.episodes, "--episodes", fix="pass e.g. --episodes 50")
    check_positive_int(cfg.steps, "--steps", fix="pass e.g. --steps 1")
    check_positive_int(cfg.n_samples, "--n_samples", fix="pass e.g. --n_samples 128")
    check_positive_int(cfg.replan_every, "--replan_every", fix="pass e.g. --replan_every 5")
    check_int(cfg.max_steps, "--max_steps", low=0, fix="pass 0 for the default, or a positive number")
    video = check_video_path(cfg.video) if cfg.video else None
    if video is not None:
        check_new_outputs([video], cfg.overwrite, fix="choose another --video, or pass --overwrite to replace it")
    kind = cfg.planner if cfg.planner != "auto" else ("checkpoint" if cfg.checkpoint else "idm")
    if kind != "checkpoint" and cfg.checkpoint:  # the checkpoint would be silently ignored
        raise ConfigError(expected(f"no --checkpoint with --planner {kind}", f"--checkpoint {cfg.checkpoint}",
                                   "drop --checkpoint, or pass --planner checkpoint to drive it"))
    planner = {"idm": IDMPlanner, "constant_velocity": lambda: constant_velocity_planner}.get(kind)
    planner = planner() if planner else _load_checkpoint_planner(cfg.checkpoint, cfg.steps, cfg.variant,
                                                                 cfg.n_samples)
    results = run_episodes(planner, env_id, episodes=cfg.episodes, seed=cfg.seed, replan_every=cfg.replan_every,
                           max_steps=cfg.max_steps or None, video=video, progress=cfg.progress)
    s = summarize(results)
    print(f"{env_id} {kind}: {s['episodes']} episodes, success {s['success_rate']:.2f}, "
          f"collisions/km {s['collisions_per_km']:.3f}, off road {s['offroad_rate']:.2f}, "
          f"progress {s['progress_m']:.0f} m, comfort {s['comfort']:.2f}, "
          f"speed {s['mean_speed']:.1f} m/s, planner {s['planner_ms']:.1f} ms, errors {s['errors']}"
          + (f"; video {video}" if video else ""))
    for r in results:
        if r.error:
            print(f"  episode {r.episode} (seed {r.seed}) failed: {r.error}")
    return 0


if __name__ == "__main__":
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(simulate_main, prog="flowzoo driving simulate"))
