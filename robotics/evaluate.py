"""Evaluate a chunking policy in simulation the way DP3 and MP1 report it (``flowzoo robotics evaluate``).

**Protocol.** :func:`evaluate_policy` runs episodes in parallel environments, episode k reset with seed
``seed + k``; each environment slot keeps its own observation history and executes the first
``n_action_steps`` actions of each predicted chunk, and the slots that need a new chunk at the same step share
one batched policy call (:mod:`flowzoo.robotics.rollout` runs the episodes). Success is Meta-World's: the
maximum over the episode of ``info["success"]`` (``max(info['success'])`` in MP1's code, LogSSim/MP1). An episode
ends at termination, truncation or ``max_steps`` (default the policy spec's ``max_episode_steps``);
``stop_on_success=True`` ends it at the first success (shorter, cheaper; the return then differs from the
paper's full-length episodes).

**Failures.** An exception in an environment's ``reset``/``step`` ends that episode as a failure carrying the
error text, and the evaluation goes on with the next episode. A non-finite action is never sent: it is replaced
by zeros (clipped into the limits) and counted per episode.

**Timing.** ``policy_ms_per_action`` is the policy's time divided by the actions executed (a chunk serves
``n_action_steps`` actions and a call serves every slot that needs one); ``end_to_end_ms_per_action`` is the
loop's wall time (policy + environment + bookkeeping) divided by the same count; ``policy_ms_per_call`` is the
median latency of one batched call. Run with ``num_envs=1`` for a robot's batch-1 latency.

**Over training** (:class:`SuccessTracker`, in :mod:`flowzoo.robotics.tracking`): DP3/MP1 report the mean of
the best K evaluations seen during training (``LargestKRecorder``, K = 3 and 5). That number is optimistic, so
it is always shown *beside* the last checkpoint's success, in separate columns, never blended.

:class:`EpisodeRecord`, :class:`EvalResult` (from :mod:`flowzoo.robotics.rollout`), :class:`BestKRecorder`,
:class:`SuccessTracker` and :func:`write_video` (from :mod:`flowzoo.robotics.tracking`) are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int
from flowzoo.core.training import atomic_write_bytes
from flowzoo.robotics.chunking import ChunkPolicy
from flowzoo.robotics.rollout import EvalResult, guarded_vector_env, require_gymnasium, run_episodes
from flowzoo.robotics.tracking import write_video

__all__ = ["evaluate_policy", "EvaluateConfig", "main"]


def evaluate_policy(policy: ChunkPolicy, task: str | Callable[[], Any], *, episodes: int = 20, seed: int = 0,
                    num_envs: int = 4, obs_mode: str | None = None, max_steps: int | None = None,
                    video: str | Path | None = None, video_episodes: int = 1, video_fps: int = 30,
                    stop_on_success: bool = False, progress: bool = True,
                    env_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` on ``task`` and return the bookkeeping (see the module docstring).

    Args:
        policy: a :class:`~flowzoo.robotics.chunking.ChunkPolicy` (e.g. a loaded FlowPolicy).
        task: a task name for :func:`flowzoo.robotics.envs.make_env`, or a zero-argument factory of gymnasium
            environments (custom simulators: their EnvSpec is ``env.spec_flowzoo`` or is derived from a Dict
            observation space by :func:`flowzoo.robotics.envs.env_spec`).
        episodes: number of episodes; episode k is reset with seed ``seed + k``.
        num_envs: environments stepped side by side (at most ``episodes``).
        obs_mode: must equal the policy's (default); given only to state it explicitly.
        max_steps: episode step limit; default ``policy.spec.max_episode_steps``.
        video: write the first ``video_episodes`` episodes here (MP4 if imageio's ffmpeg plugin is present,
            else GIF next to it); the written path is in ``result.video``.
        stop_on_success: end an episode at its first success.
        progress: show a tqdm bar over episodes.
        env_kwargs: extra keyword arguments for ``make_env`` (e.g. ``num_points``).

    Raises:
        ConfigError: bad arguments, or a policy whose observation/action spec does not fit the environment
            (the message names the field that differs).
    """
    for name, value, low in (("episodes", episodes, 1), ("num_envs", num_envs, 1),
                             ("video_episodes", video_episodes, 0), ("video_fps", video_fps, 1)):
        check_int(value, name, low=low, fix=f"pass {name} >= {low}")
    spec = policy.spec
    if obs_mode is not None and obs_mode != spec.obs_mode:
        raise ConfigError(expected(f"obs_mode {spec.obs_mode!r}, the mode the policy was trained with", obs_mode,
                                   "leave obs_mode out, or evaluate a policy trained with that mode"))
    if video is not None and Path(video).suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError(expected("a video path ending in .mp4 or .gif", str(video), "rename the video file"))
    max_steps = int(max_steps if max_steps is not None else spec.max_episode_steps)
    if max_steps < 1:
        raise ConfigError(expected("max_steps >= 1", max_steps, "pass a positive step limit"))
    require_gymnasium()
    if isinstance(task, str):
        from flowzoo.robotics.spec import EnvSpec
        from flowzoo.robotics.envs import make_env, make_env_like

        task_name = task

        def factory(slot: int) -> Any:
            # The policy's own task: rebuild the exact observation set-up it was trained on (cloud size, depth
            # image size, goal visibility); another task goes through make_env and the spec check refuses it.
            if isinstance(spec, EnvSpec) and task == spec.task:
                return make_env_like(spec, seed=seed + 7919 * slot, max_episode_steps=max_steps,
                                     **(env_kwargs or {}))
            return make_env(task, spec.obs_mode, seed=seed + 7919 * slot, max_episode_steps=max_steps,
                            **(env_kwargs or {}))
    elif callable(task):
        task_name = getattr(spec, "task", "custom")

        def factory(slot: int) -> Any:
            return task()
    else:
        raise ConfigError(expected("a task name or an environment factory", type(task).__name__,
                                   "pass e.g. 'reach-v3'"))
    from flowzoo.robotics.spec import env_spec as environment_spec

    envs = [factory(0)]
    try:
        env_spec = environment_spec(envs[0])
        try:
            spec.check_compatible(env_spec)
        except ConfigError as err:
            raise ConfigError(f"the policy (trained on {getattr(spec, 'task', '?')!r}) cannot run on environment "
                              f"{getattr(env_spec, 'task', task_name)!r}: {err}") from err
        envs += [factory(slot) for slot in range(1, min(num_envs, episodes))]  # only once the spec fits
        vector = guarded_vector_env(envs)
    except BaseException:
        for env in envs:
            env.close()
        raise
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result, frames = run_episodes(policy, vector, task_name, episodes, seed, max_steps,
                                          video_episodes if video else 0, stop_on_success, progress)
    finally:
        vector.close()
    if video is not None and frames:
        result.video = str(write_video(frames, video, fps=video_fps))
    return result


@dataclass
class EvaluateConfig:
    """Evaluate a saved flowzoo policy in simulation: flowzoo robotics evaluate --checkpoint PATH."""

    checkpoint: Path = field(metadata={"help": "policy saved by save_policy / the training entrypoint"})
    task: str | None = field(default=None, metadata={"help": "task to run on (default: the checkpoint's)"})
    episodes: int = field(default=20, metadata={"help": "number of episodes"})
    seed: int = field(default=0, metadata={"help": "episode k is reset with seed + k"})
    num_envs: int = field(default=4, metadata={"help": "environments stepped side by side"})
    max_steps: int | None = field(default=None, metadata={"help": "episode step limit (default: the task's)"})
    stop_on_success: bool = field(default=False, metadata={"help": "end an episode at its first success"})
    video: Path | None = field(default=None, metadata={"help": "write the first episode(s) as MP4 or GIF"})
    video_episodes: int = field(default=1, metadata={"help": "episodes in the video"})
    out: Path | None = field(default=None, metadata={"help": "results JSON (default: next to the checkpoint)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


def _default_results_path(checkpoint: Path, task: str, seed: int) -> Path:
    name = f"eval_{task}_seed{seed}.json"
    return checkpoint / name if checkpoint.is_dir() else checkpoint.with_name(f"{checkpoint.stem}.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    """``flowzoo robotics evaluate --checkpoint PATH --episodes 20 --video out.mp4 [--task ...]``."""
    cfg = parse_config(EvaluateConfig, argv, prog="flowzoo robotics evaluate")
    from flowzoo.robotics.policy import load_policy

    policy = load_policy(cfg.checkpoint)
    if isinstance(policy, torch.nn.Module):
        policy.eval()
    task = cfg.task or policy.spec.task
    result = evaluate_policy(policy, task, episodes=cfg.episodes, seed=cfg.seed, num_envs=cfg.num_envs,
                             max_steps=cfg.max_steps, video=cfg.video, video_episodes=cfg.video_episodes,
                             stop_on_success=cfg.stop_on_success, progress=cfg.progress)
    # The record names the weights it evaluated, so a record left beside replaced weights is recognisable
    # (save_policy removes such records when a run overwrites its policy).
    record = {**result.to_dict(), "checkpoint": str(cfg.checkpoint),
              "weights_sha256": getattr(policy, "weights_sha256", None)}
    out = Path(cfg.out or _default_results_path(Path(cfg.checkpoint), task, cfg.seed))
    atomic_write_bytes(out, (json.dumps(record, indent=2) + "\n").encode())
    print(result.table())
    print(f"results: {out}" + (f"; video: {result.video}" if result.video else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.robotics.evaluate"))
