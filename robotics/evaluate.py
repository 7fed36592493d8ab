"""Evaluate a chunking policy in simulation the way DP3 and MP1 report it, and track success over training.

**Protocol.** Episodes run in parallel in a gymnasium ``SyncVectorEnv`` (autoreset disabled, so every episode
gets its own seed: episode k is reset with ``seed + k``). Each environment slot keeps its own observation
history (first frame repeated, as in training) and executes the first ``n_action_steps`` actions of each
predicted chunk; the slots that need a new chunk at the same step share one batched policy call.
Success is Meta-World's: the maximum over the episode of ``info["success"]`` (MP1's ``max(info['success'])``,
research notes §1). An episode ends at termination, truncation or ``max_steps`` (default the policy spec's
``max_episode_steps``); ``stop_on_success=True`` ends it at the first success (shorter, cheaper; the return
then differs from the paper's full-length episodes).

**Failures.** Each environment is wrapped so that an exception in ``reset``/``step`` ends that episode as a
failure carrying the error text, and the evaluation goes on with the next episode. A non-finite action is
never sent: it is replaced by zeros (clipped into the limits) and counted per episode.

**Timing.** ``policy_ms_per_action`` is the policy's time divided by the actions executed (a chunk serves
``n_action_steps`` actions and a call serves every slot that needs one); ``end_to_end_ms_per_action`` is the
loop's wall time (policy + environment + bookkeeping) divided by the same count; ``policy_ms_per_call`` is the
median latency of one batched call. Run with ``num_envs=1`` for a robot's batch-1 latency.

**Over training** (:class:`SuccessTracker`): DP3/MP1 report the mean of the best K evaluations seen during
training (``LargestKRecorder``, K = 3 and 5). That number is optimistic, so it is always shown *beside* the
last checkpoint's success, in separate columns, never blended; :meth:`SuccessTracker.plot` draws both.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected
from flowzoo.core.plotting import require_matplotlib
from flowzoo.core.training import atomic_write_bytes, atomic_write_with
from flowzoo.robotics.controller import ChunkPolicy, ObservationHistory, batch_observations

__all__ = ["EpisodeRecord", "EvalResult", "evaluate_policy", "BestKRecorder", "SuccessTracker", "write_video",
           "EvaluateConfig", "main"]

ROBOTICS_EXTRA = "pip install 'flowzoo[robotics]'"


@dataclass
class EpisodeRecord:
    """One evaluation episode. ``error`` holds the exception text when the environment crashed."""

    episode: int
    seed: int
    success: bool
    episode_return: float
    length: int
    non_finite_actions: int = 0
    error: str | None = None


@dataclass
class EvalResult:
    """Success rate, return, length and latency over the episodes of one evaluation (see the module docstring)."""

    task: str
    seed: int
    episodes: list[EpisodeRecord]
    success_rate: float
    mean_return: float
    mean_length: float
    crashed_episodes: int
    policy_ms_per_action: float
    end_to_end_ms_per_action: float
    policy_ms_per_call: float
    mean_batch_size: float
    nfe: int | None
    wall_s: float
    video: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """One markdown row under a header: the numbers a paper's table would show."""
        nfe = "-" if self.nfe is None else str(self.nfe)
        return ("| task | episodes | success | return | length | crashed | NFE | policy ms/action "
                "| end-to-end ms/action | ms/call (batch) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- "
                f"| --- |\n| {self.task} | {len(self.episodes)} | {self.success_rate:.3f} | {self.mean_return:.1f} "
                f"| {self.mean_length:.1f} | {self.crashed_episodes} | {nfe} | {self.policy_ms_per_action:.3f} "
                f"| {self.end_to_end_ms_per_action:.3f} | {self.policy_ms_per_call:.2f} ({self.mean_batch_size:.1f}) |")

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically."""
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path


def _require_gymnasium():
    try:
        import gymnasium
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(expected("gymnasium for simulation evaluation", "an environment without it",
                                              ROBOTICS_EXTRA)) from err
    return gymnasium


def _zeros_like_space(space: Any) -> Any:
    if hasattr(space, "spaces") and isinstance(space.spaces, dict):
        return {key: _zeros_like_space(sub) for key, sub in space.spaces.items()}
    return np.zeros(space.shape, dtype=space.dtype)


_GUARD_CLASS: type | None = None


def _guarded(env: Any) -> Any:
    """Wrap ``env``: exceptions end the episode (``info["error"]``), an idle slot does not step, frames recorded."""
    global _GUARD_CLASS
    if _GUARD_CLASS is None:
        gym = _require_gymnasium()

        class GuardedEnv(gym.Wrapper):
            def __init__(self, inner: Any) -> None:
                super().__init__(inner)
                self.flowzoo_idle = False
                self.flowzoo_record = False
                self.flowzoo_frames: list[np.ndarray] = []
                self._last_obs: Any = None

            def reset(self, *, seed: int | None = None, options: dict | None = None):
                if self.flowzoo_idle and self._last_obs is not None:
                    return self._last_obs, {}
                try:
                    obs, info = self.env.reset(seed=seed, options=options or None)
                except Exception as err:  # recorded as a failed episode by the evaluation
                    if self._last_obs is None:
                        self._last_obs = _zeros_like_space(self.observation_space)
                    return self._last_obs, {"error": f"reset raised {type(err).__name__}: {err}"}
                self._last_obs = obs
                self._capture()
                return obs, info

            def step(self, action: np.ndarray):
                if self.flowzoo_idle:
                    return self._last_obs, 0.0, False, False, {}
                try:
                    obs, reward, terminated, truncated, info = self.env.step(action)
                except Exception as err:
                    return self._last_obs, 0.0, True, False, {"error": f"step raised {type(err).__name__}: {err}"}
                self._last_obs = obs
                self._capture()
                return obs, reward, terminated, truncated, info

            def _capture(self) -> None:
                if not self.flowzoo_record:
                    return
                try:
                    self.flowzoo_frames.append(np.asarray(self.env.render(), dtype=np.uint8))
                except Exception as err:  # a video is a convenience: never fail the evaluation over it
                    self.flowzoo_record = False
                    warnings.warn(f"rendering failed, no video frames from this episode: {err}", stacklevel=2)

        _GUARD_CLASS = GuardedEnv
    return _GUARD_CLASS(env)


def _slot(batched: Any, index: int) -> Any:
    if isinstance(batched, dict):
        return {key: value[index] for key, value in batched.items()}
    return batched[index]


def _info_at(infos: dict[str, Any], key: str, index: int) -> Any:
    """``info[key]`` of sub-environment ``index`` from a vector env's merged infos (None where it was absent)."""
    present = infos.get(f"_{key}")
    if key not in infos or (present is not None and not present[index]):
        return None
    return infos[key][index]


def evaluate_policy(policy: ChunkPolicy, task: str | Callable[[], Any], *, episodes: int = 20, seed: int = 0,
                    num_envs: int = 4, obs_mode: str | None = None, max_steps: int | None = None,
                    video: str | Path | None = None, video_episodes: int = 1, video_fps: int = 30,
                    stop_on_success: bool = False, progress: bool = True,
                    env_kwargs: dict[str, Any] | None = None) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` on ``task`` and return the bookkeeping (see the module docstring).

    Args:
        policy: a :class:`~flowzoo.robotics.controller.ChunkPolicy` (e.g. a loaded FlowPolicy).
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
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(expected(f"{name} as an int >= {low}", repr(value), f"pass a valid {name}"))
    spec = policy.spec
    if obs_mode is not None and obs_mode != spec.obs_mode:
        raise ConfigError(expected(f"obs_mode {spec.obs_mode!r}, the mode the policy was trained with", obs_mode,
                                   "leave obs_mode out, or evaluate a policy trained with that mode"))
    max_steps = int(max_steps if max_steps is not None else spec.max_episode_steps)
    if max_steps < 1:
        raise ConfigError(expected("max_steps >= 1", max_steps, "pass a positive step limit"))
    gym = _require_gymnasium()
    if isinstance(task, str):
        from flowzoo.robotics.envs import EnvSpec, make_env, make_env_like

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
    from flowzoo.robotics.envs import env_spec as environment_spec

    envs = [factory(0)]
    try:
        env_spec = environment_spec(envs[0])
        try:
            spec.check_compatible(env_spec)
        except ConfigError as err:
            raise ConfigError(f"the policy (trained on {getattr(spec, 'task', '?')!r}) cannot run on environment "
                              f"{getattr(env_spec, 'task', task_name)!r}: {err}") from err
        envs += [factory(slot) for slot in range(1, min(num_envs, episodes))]  # only once the spec fits
        vector = gym.vector.SyncVectorEnv([lambda env=env: _guarded(env) for env in envs],
                                          autoreset_mode=gym.vector.AutoresetMode.DISABLED,
                                          observation_mode="different")
    except BaseException:
        for env in envs:
            env.close()
        raise
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result, frames = _rollouts(policy, vector, task_name, episodes, seed, max_steps,
                                       video_episodes if video else 0, stop_on_success, progress)
    finally:
        vector.close()
    if video is not None and frames:
        result.video = str(write_video(frames, video, fps=video_fps))
    return result


def _rollouts(policy: ChunkPolicy, vector: Any, task_name: str, episodes: int, seed: int, max_steps: int,
              record_episodes: int, stop_on_success: bool, progress: bool) -> tuple[EvalResult, list[np.ndarray]]:
    from tqdm.auto import tqdm

    spec, n = policy.spec, vector.num_envs
    action_dim, n_action_steps = int(spec.action_dim), int(policy.config.n_action_steps)
    low = np.asarray(spec.action_low, dtype=np.float64)
    high = np.asarray(spec.action_high, dtype=np.float64)
    rest_action = np.clip(np.zeros(action_dim), low, high)
    params = list(policy.parameters()) if isinstance(policy, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    histories = [ObservationHistory(int(policy.config.n_obs_steps), spec.obs_shapes) for _ in range(n)]
    queues: list[deque] = [deque() for _ in range(n)]
    running: list[dict[str, Any] | None] = [None] * n
    idle, record = [False] * n, [False] * n
    records: list[EpisodeRecord] = []
    frames: dict[int, list[np.ndarray]] = {}
    counter = {"next": 0, "actions": 0}
    call_ms: list[float] = []
    batch_sizes: list[int] = []
    if callable(getattr(policy, "reset", None)):
        policy.reset()
    bar = tqdm(total=episodes, disable=not progress, desc=f"evaluate {task_name}", unit="episode")

    def finish(slot: int, error: str | None) -> None:
        episode = running[slot]
        records.append(EpisodeRecord(episode["episode"], episode["seed"], bool(episode["success"]) and error is None,
                                     float(episode["return"]), int(episode["length"]), episode["non_finite"], error))
        if record[slot]:
            frames[episode["episode"]] = list(vector.get_attr("flowzoo_frames")[slot])
        running[slot] = None
        queues[slot].clear()
        bar.update(1)
        bar.set_postfix(success=f"{np.mean([r.success for r in records]):.2f}")

    def start(slots: list[int]) -> None:
        """Reset ``slots`` into their next episodes (or idle); an episode whose reset fails is a failure."""
        while slots:
            mask, seeds = np.zeros(n, dtype=bool), [None] * n
            current_frames = list(vector.get_attr("flowzoo_frames"))
            for slot in slots:
                mask[slot] = True
                current_frames[slot] = []
                if counter["next"] < episodes:
                    k = counter["next"]
                    counter["next"] += 1
                    running[slot] = {"episode": k, "seed": seed + k, "return": 0.0, "length": 0, "success": False,
                                     "non_finite": 0}
                    seeds[slot], idle[slot], record[slot] = seed + k, False, k < record_episodes
                else:
                    idle[slot], record[slot] = True, False
            vector.set_attr("flowzoo_idle", list(idle))
            vector.set_attr("flowzoo_record", list(record))
            vector.set_attr("flowzoo_frames", current_frames)
            obs, infos = vector.reset(seed=seeds, options={"reset_mask": mask})
            retry = []
            for slot in np.flatnonzero(mask):
                if running[slot] is None:
                    continue
                error = _info_at(infos, "error", slot)
                if error is not None:
                    finish(slot, str(error))
                    retry.append(int(slot))
                    continue
                histories[slot].reset()
                histories[slot].push(_slot(obs, slot))
            slots = retry

    started = time.perf_counter()
    try:
        start(list(range(n)))
        while any(episode is not None for episode in running):
            need = [s for s in range(n) if running[s] is not None and not queues[s]]
            if need:
                batch = batch_observations([histories[s].stacked() for s in need], device)
                tick = time.perf_counter()
                with torch.inference_mode():
                    chunk = policy.predict_action_chunk(batch)
                chunk = torch.as_tensor(chunk).detach().to("cpu", torch.float64).numpy()
                call_ms.append(1000.0 * (time.perf_counter() - tick))
                batch_sizes.append(len(need))
                if chunk.ndim != 3 or chunk.shape[0] != len(need) or chunk.shape[2] != action_dim or chunk.shape[1] < 1:
                    raise ShapeError(expected(f"predict_action_chunk output ({len(need)}, horizon, {action_dim})",
                                              chunk.shape, "return (B, horizon, action_dim) actions"))
                for row, slot in enumerate(need):
                    queues[slot].extend(chunk[row, :n_action_steps])
            actions = np.tile(rest_action, (n, 1))
            for slot in range(n):
                if running[slot] is None:
                    continue
                action = queues[slot].popleft()
                if not np.all(np.isfinite(action)):
                    running[slot]["non_finite"] += 1
                    action = rest_action
                actions[slot] = np.clip(action, low, high)
            obs, rewards, terminated, truncated, infos = vector.step(actions.astype(np.float32))
            ended = []
            for slot in range(n):
                episode = running[slot]
                if episode is None:
                    continue
                counter["actions"] += 1
                episode["return"] += float(rewards[slot])
                episode["length"] += 1
                success = _info_at(infos, "success", slot)
                episode["success"] = episode["success"] or (success is not None and bool(float(success) > 0))
                error = _info_at(infos, "error", slot)
                if error is None:
                    histories[slot].push(_slot(obs, slot))
                if (error is not None or terminated[slot] or truncated[slot] or episode["length"] >= max_steps
                        or (stop_on_success and episode["success"])):
                    finish(slot, None if error is None else str(error))
                    ended.append(slot)
            if ended:
                start(ended)
    finally:
        bar.close()
    wall = time.perf_counter() - started
    records.sort(key=lambda r: r.episode)
    actions = max(counter["actions"], 1)
    result = EvalResult(
        task=task_name, seed=seed, episodes=records, success_rate=float(np.mean([r.success for r in records])),
        mean_return=float(np.mean([r.episode_return for r in records])),
        mean_length=float(np.mean([r.length for r in records])),
        crashed_episodes=sum(r.error is not None for r in records),
        policy_ms_per_action=sum(call_ms) / actions, end_to_end_ms_per_action=1000.0 * wall / actions,
        policy_ms_per_call=float(np.median(call_ms)) if call_ms else float("nan"),
        mean_batch_size=float(np.mean(batch_sizes)) if batch_sizes else float("nan"),
        nfe=getattr(policy, "nfe", None), wall_s=wall)
    return result, [frame for k in sorted(frames) for frame in frames[k]]


def write_video(frames: Sequence[np.ndarray], path: str | Path, *, fps: int = 30) -> Path:
    """Write RGB frames ``(H, W, 3) uint8`` as MP4 (imageio + ffmpeg) or GIF, atomically; returns the path written.

    An ``.mp4`` path falls back to a ``.gif`` beside it when imageio's ffmpeg plugin is not installed.
    """
    try:
        import imageio.v3 as iio
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(expected("imageio for rollout videos", "an environment without it",
                                              ROBOTICS_EXTRA)) from err
    if len(frames) == 0:
        raise ShapeError(expected("at least one frame", "none", "record an episode with a renderable environment"))
    stack = np.stack([np.asarray(f) for f in frames])
    if stack.ndim != 4 or stack.shape[-1] != 3 or stack.dtype != np.uint8:
        raise ShapeError(expected("frames of shape (H, W, 3) uint8", f"{stack.shape} {stack.dtype}",
                                  "pass env.render() frames in rgb_array mode"))
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            warnings.warn(f"imageio-ffmpeg is not installed: writing a GIF instead of {path}", stacklevel=2)
            path = path.with_suffix(".gif")
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError(expected("a video path ending in .mp4 or .gif", str(path), "rename the output file"))
    if path.suffix.lower() == ".gif":
        return atomic_write_with(path, lambda tmp: iio.imwrite(tmp, stack, extension=".gif", duration=1000.0 / fps,
                                                               loop=0), suffix=".gif")
    return atomic_write_with(path, lambda tmp: iio.imwrite(tmp, stack, extension=".mp4", fps=fps), suffix=".mp4")


class BestKRecorder:
    """Mean of the K largest values seen so far: DP3/MP1's ``LargestKRecorder`` for success over training.

    With fewer than K values it averages those it has and says so through :attr:`complete`.
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(expected("K as an int >= 1", repr(k), "use K=3 or K=5 as DP3/MP1 do"))
        self.k = k
        self.values: list[float] = []

    def add(self, value: float) -> None:
        self.values.append(_success_value(value))

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.k

    @property
    def value(self) -> float:
        if not self.values:
            return float("nan")
        return float(np.mean(sorted(self.values, reverse=True)[:self.k]))


def _success_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ConfigError(expected("a success rate in [0, 1]", repr(value), "pass EvalResult.success_rate"))
    return float(value)


class SuccessTracker:
    """Success rate after each evaluation during training; last and best-K reported side by side.

    Example:
        >>> tracker = SuccessTracker()
        >>> for step, rate in [(100, 0.2), (200, 0.9), (300, 0.6), (400, 0.7)]:
        ...     tracker.record(step, rate)
        >>> summary = tracker.summary()
        >>> summary["last"], round(summary["best_3_mean"], 4), summary["best_3_complete"]
        (0.7, 0.7333, True)
    """

    def __init__(self, ks: Sequence[int] = (3, 5)) -> None:
        self.recorders = {int(k): BestKRecorder(int(k)) for k in ks}
        self.steps: list[int] = []
        self.success: list[float] = []

    def record(self, step: int, success_rate: float | EvalResult) -> None:
        """Add the evaluation made after training step ``step`` (a success rate or an :class:`EvalResult`)."""
        rate = success_rate.success_rate if isinstance(success_rate, EvalResult) else success_rate
        rate = _success_value(rate)
        if isinstance(step, bool) or not isinstance(step, int) or (self.steps and step < self.steps[-1]):
            raise ConfigError(expected(f"an int step >= the last one ({self.steps[-1] if self.steps else 0})",
                                       repr(step), "record evaluations in training order"))
        self.steps.append(step)
        self.success.append(rate)
        for recorder in self.recorders.values():
            recorder.add(rate)

    @property
    def last(self) -> float:
        return self.success[-1] if self.success else float("nan")

    def best_k(self, k: int) -> float:
        return self.recorders[k].value if k in self.recorders else BestKRecorder(k).value

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evaluations": len(self.success), "last_step": self.steps[-1] if self.steps else None,
                               "last": self.last}
        for k, recorder in self.recorders.items():
            out[f"best_{k}_mean"] = recorder.value
            out[f"best_{k}_complete"] = recorder.complete
        return out

    def table(self) -> str:
        """Markdown: one column per protocol, never blended."""
        ks = sorted(self.recorders)
        head = "| evaluations | last checkpoint | " + " | ".join(f"best-{k} mean (DP3/MP1)" for k in ks) + " |"
        cells = [f"{self.recorders[k].value:.3f}" + ("" if self.recorders[k].complete else " (incomplete)") for k in ks]
        return "\n".join([head, "|" + " --- |" * (2 + len(ks)),
                          f"| {len(self.success)} | {self.last:.3f} | " + " | ".join(cells) + " |"])

    def to_dict(self) -> dict[str, Any]:
        return {"ks": sorted(self.recorders), "steps": list(self.steps), "success": list(self.success)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuccessTracker:
        tracker = cls(data.get("ks", (3, 5)))
        for step, rate in zip(data["steps"], data["success"], strict=True):
            tracker.record(int(step), float(rate))
        return tracker

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_bytes(path, (json.dumps({**self.to_dict(), "summary": self.summary()}, indent=2) + "\n").encode())
        return path

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """PNG of success over training with the best-K means and the last value marked."""
        if not self.success:
            raise ShapeError(expected("at least one recorded evaluation", "none", "call record() first"))
        plt = require_matplotlib()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.steps, self.success, marker="o", color="tab:blue", label="success per evaluation")
        for k, style in zip(sorted(self.recorders), ("--", ":", "-.")):
            ax.axhline(self.recorders[k].value, linestyle=style, color="tab:orange",
                       label=f"best-{k} mean {self.recorders[k].value:.2f}")
        ax.scatter([self.steps[-1]], [self.last], s=80, color="tab:red", zorder=3, label=f"last {self.last:.2f}")
        ax.set(xlabel="training step", ylabel="success rate", ylim=(-0.02, 1.02),
               title=title or "success over training")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        try:
            return atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120), suffix=".png")
        finally:
            plt.close(fig)


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
    out = result.save(cfg.out or _default_results_path(Path(cfg.checkpoint), task, cfg.seed))
    print(result.table())
    print(f"results: {out}" + (f"; video: {result.video}" if result.video else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
