"""Collect demonstrations from Meta-World's scripted experts (``flowzoo robotics collect``).

MP1 (arXiv 2507.10543) and DP3 (arXiv 2403.03954) train on 10-20 demonstrations per Meta-World task generated
by the benchmark's scripted policies; this module does the same through :func:`~flowzoo.robotics.envs.make_env`:

* each episode starts from ``reset(seed=episode_seed)``, with ``episode_seed`` derived from ``seed`` and the
  attempt number (``numpy.random.SeedSequence([seed, attempt])``; the seeds are stored, so every episode can be
  replayed; as 32-bit hashes they almost never equal the small seeds 0, 1, 2, ... evaluation uses);
* at step t the expert's action for the raw 39-d observation, plus optional Gaussian noise of standard deviation
  ``action_noise`` (for diversity), clipped to the action limits, is stored beside the observation **before**
  it is executed; point clouds are rendered once here and stored, so training never renders;
* an episode stops ``extra_steps`` steps after its first success (the remaining steps would only repeat the
  goal pose and weigh the data towards standing still), or at the time limit;
* only successful episodes are kept; failed ones are retried with the next seed, up to ``max_attempts``
  in total, and counted in the metadata;
* the normaliser statistics are fitted on the kept episodes and saved with them (:mod:`flowzoo.robotics.data`).

Command line::

    flowzoo robotics collect --task push-v3 --episodes 20 --obs pointcloud --out demos/push
    python -m flowzoo.robotics.collect --help
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError, EmptyInputError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive_int
from flowzoo.robotics.data import DemoDataset, check_output_path
from flowzoo.robotics.spec import OBS_MODES, env_spec
from flowzoo.robotics.envs import expert_policy, make_env

__all__ = ["CollectConfig", "collect_demos", "episode_seed", "main"]


def episode_seed(seed: int, attempt: int) -> int:
    """The reset seed of collection attempt ``attempt`` (0-based) of a run with seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(attempt)]).generate_state(1)[0])


def _raw_observation(obs: dict, info: dict) -> np.ndarray:
    # Meta-World experts read the raw 39-d vector (info["state"] of a flowzoo env); a registered task without
    # it gives its expert the "state" observation.
    if "state" in info:
        return info["state"]
    if "state" in obs:
        return obs["state"]
    raise ConfigError(expected("info['state'] or obs['state'] for the scripted expert", sorted(obs),
                               "put the expert's input in info['state'] in the task's env"))


def _run_episode(env, expert, rng: np.random.Generator, seed: int, action_noise: float, extra_steps: int,
                 keys: Sequence[str], low: np.ndarray, high: np.ndarray) -> tuple[dict[str, np.ndarray], int | None]:
    obs, info = env.reset(seed=seed)
    columns: dict[str, list[np.ndarray]] = {key: [] for key in (*keys, "action", "reward", "success")}
    first_success: int | None = None
    step = 0
    while True:
        action = expert(_raw_observation(obs, info))
        if action_noise > 0.0:
            action = action + rng.normal(0.0, action_noise, size=action.shape)
        action = np.clip(action, low, high).astype(np.float32)
        for key in keys:
            columns[key].append(np.asarray(obs[key], dtype=np.float32))
        columns["action"].append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        columns["reward"].append(np.float32(reward))
        columns["success"].append(np.float32(info["success"]))
        if first_success is None and info["success"] >= 1.0:
            first_success = step
        step += 1
        if terminated or truncated or (first_success is not None and step - first_success > extra_steps):
            break
    return {key: np.stack(values) for key, values in columns.items()}, first_success


def _collect_successes(env: Any, expert: Any, rng: np.random.Generator, seed: int, episodes: int, attempts: int,
                       action_noise: float, extra_steps: int, obs_shapes: dict, low: np.ndarray, high: np.ndarray,
                       bar: Any) -> tuple[list[dict[str, np.ndarray]], list[int], list[int], list[int], int]:
    """Run expert episodes until ``episodes`` succeeded or ``attempts`` were tried.

    Returns the successful episodes, their reset seeds and first-success steps, the failed reset seeds and the
    number of environment steps run in all.
    """
    kept: list[dict[str, np.ndarray]] = []
    seeds, first_successes, failed_seeds = [], [], []
    steps_run = 0
    for attempt in range(attempts):
        if len(kept) == episodes:
            break
        reset_seed = episode_seed(seed, attempt)
        episode, first_success = _run_episode(env, expert, rng, reset_seed, action_noise, extra_steps, obs_shapes,
                                              low, high)
        steps_run += len(episode["action"])
        if first_success is None:
            failed_seeds.append(reset_seed)
        else:
            kept.append(episode)
            seeds.append(reset_seed)
            first_successes.append(first_success)
            bar.update(1)
        bar.set_postfix(failed=len(failed_seeds))
    return kept, seeds, first_successes, failed_seeds, steps_run


def collect_demos(task: str, episodes: int, obs_mode: str = "state", out: str | Path | None = None, *,
                  seed: int = 0, action_noise: float = 0.0, num_points: int = 512, render_size: int | None = None,
                  max_steps: int | None = None, extra_steps: int = 10, max_attempts: int | None = None,
                  goal_visible: bool = False, progress: bool = True) -> DemoDataset:
    """Run the task's scripted expert, keep ``episodes`` successful episodes, fit the normaliser, save.

    Args:
        task: a task of :func:`~flowzoo.robotics.envs.list_tasks` with an expert.
        episodes: successful episodes to keep.
        obs_mode: ``"state"`` or ``"pointcloud"``.
        out: dataset directory to write (None: only return the dataset). Checked before collecting.
        seed: seeds the episode seeds and the action noise.
        action_noise: standard deviation of Gaussian noise added to the expert's actions (env units).
        goal_visible: pointcloud mode only: ``agent_pos`` also holds the goal position (see
            :func:`~flowzoo.robotics.envs.make_env`; reach/push/pick-place's goal is not in the depth image).
        num_points: points per cloud (pointcloud mode).
        render_size: depth image size (None: automatic, see ``make_env``).
        max_steps: episode time limit (default: the task's, 500 for Meta-World).
        extra_steps: steps recorded after the first success before the episode stops.
        max_attempts: episodes tried at most (default ``2 * episodes + 10``).
        progress: show a progress bar.

    Returns:
        The dataset (also written to ``out``). ``dataset.info["collection"]`` records the settings, the
        number of failed attempts and the timing (seconds per episode, milliseconds per step).

    Raises:
        EmptyInputError: no attempt succeeded. Fewer successes than asked for (but some) are kept, with a
        warning on stderr and ``collection["kept"] < collection["requested"]``.
    """
    episodes = check_positive_int(episodes, "episodes", fix="pass e.g. episodes=10")
    if obs_mode not in OBS_MODES:
        raise ConfigError(expected(f"obs_mode in {OBS_MODES}", repr(obs_mode), "pass 'state' or 'pointcloud'"))
    check_nonnegative(action_noise, "action_noise", fix="pass e.g. 0.1")
    check_int(extra_steps, "extra_steps", low=0, fix="pass e.g. 10")
    attempts = 2 * episodes + 10 if max_attempts is None else check_positive_int(max_attempts, "max_attempts",
                                                                                 fix="pass e.g. max_attempts=10")
    if out is not None:
        check_output_path(out)  # refuse a bad target before spending minutes collecting
    expert = expert_policy(task)
    env = make_env(task, obs_mode, seed=seed, num_points=num_points, render_size=render_size,
                   max_episode_steps=max_steps, goal_visible=goal_visible)
    spec = env_spec(env)
    low, high = np.asarray(spec.action_low, np.float32), np.asarray(spec.action_high, np.float32)
    started = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"collect {task} ({obs_mode})", disable=not progress, unit="ep")
    try:
        kept, seeds, first_successes, failed_seeds, steps_run = _collect_successes(
            env, expert, np.random.default_rng(seed), seed, episodes, attempts, float(action_noise), extra_steps,
            spec.obs_shapes, low, high, bar)
    finally:
        bar.close()
        env.close()
    elapsed = time.perf_counter() - started
    tried = len(kept) + len(failed_seeds)
    if not kept:
        raise EmptyInputError(expected(f"at least one successful expert episode of {task}",
                                       f"0 successes in {tried} attempts",
                                       "raise max_steps, lower action_noise or check the task"))
    if len(kept) < episodes:
        print(f"flowzoo robotics collect: kept {len(kept)} of {episodes} requested episodes of {task}; "
              f"{len(failed_seeds)} of {tried} attempts failed (raise --max_attempts or lower --action_noise)",
              file=sys.stderr)
    collection = {
        "task": task, "obs_mode": obs_mode, "seed": int(seed), "action_noise": float(action_noise),
        "num_points": num_points, "render_size": spec.extras.get("render_size"), "max_steps": spec.max_episode_steps,
        "extra_steps": extra_steps, "goal_visible": bool(goal_visible), "requested": episodes, "kept": len(kept), "attempts": tried,
        "failed": len(failed_seeds), "expert_success_rate": len(kept) / tried,
        "seconds_per_episode": elapsed / tried, "ms_per_step": 1000.0 * elapsed / max(steps_run, 1),
    }
    info = {"collection": collection, "episode_success": [True] * len(kept), "episode_seeds": seeds,
            "episode_first_success": first_successes, "failed_seeds": failed_seeds}
    dataset = DemoDataset.from_episodes(kept, spec, info=info)
    if out is not None:
        dataset.save(out)
    return dataset


@dataclass
class CollectConfig:
    """Options of ``flowzoo robotics collect``."""

    task: str = field(default="push-v3", metadata={"help": "task name (Meta-World v3, e.g. reach-v3, push-v3)"})
    episodes: int = field(default=20, metadata={"help": "successful episodes to keep"})
    obs: Literal["state", "pointcloud"] = field(default="state", metadata={"help": "observation mode"})
    out: Path = field(default=Path("demos/push"), metadata={"help": "output dataset directory"})
    seed: int = field(default=0, metadata={"help": "random seed (episode seeds and action noise)"})
    action_noise: float = field(default=0.0, metadata={"help": "std of Gaussian noise on expert actions"})
    num_points: int = field(default=512, metadata={"help": "points per cloud (pointcloud mode)"})
    render_size: int | None = field(default=None, metadata={"help": "depth image size; none = automatic"})
    max_steps: int | None = field(default=None, metadata={"help": "episode time limit; none = task default"})
    extra_steps: int = field(default=10, metadata={"help": "steps recorded after the first success"})
    max_attempts: int | None = field(default=None, metadata={"help": "episodes tried at most; none = 2*episodes+10"})
    goal_visible: bool = field(default=False, metadata={"help": "pointcloud mode: append the goal xyz to agent_pos"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    overwrite: bool = field(default=False, metadata={"help": "replace a dataset already at --out"})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo robotics collect``; returns the exit code."""
    cfg = parse_config(CollectConfig, sys.argv[1:] if argv is None else list(argv), prog="flowzoo robotics collect")
    out = Path(cfg.out)
    if (out / "meta.json").is_file() and not cfg.overwrite:  # the command never replaces a dataset unasked
        raise ConfigError(expected("--out naming a new or empty directory", f"{out}, which holds a dataset",
                                   "pass --overwrite to replace it, or choose another --out"))
    dataset = collect_demos(cfg.task, cfg.episodes, cfg.obs, cfg.out, seed=cfg.seed, action_noise=cfg.action_noise,
                            num_points=cfg.num_points, render_size=cfg.render_size, max_steps=cfg.max_steps,
                            extra_steps=cfg.extra_steps, max_attempts=cfg.max_attempts, goal_visible=cfg.goal_visible,
                            progress=cfg.progress)
    c = dataset.info["collection"]
    print(f"wrote {cfg.out}: {dataset.episodes} episodes, {dataset.num_steps} steps of {cfg.task} ({cfg.obs}); "
          f"expert success {c['kept']}/{c['attempts']}; {c['seconds_per_episode']:.2f} s/episode, "
          f"{c['ms_per_step']:.2f} ms/step")
    return 0


if __name__ == "__main__":
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.robotics.collect"))
