"""Episode rollouts behind :func:`flowzoo.robotics.evaluate.evaluate_policy`: batched chunking, crash guard, records.

**Vector environment.** :func:`guarded_vector_env` steps environments side by side in a gymnasium
``SyncVectorEnv`` with autoreset disabled, so that every episode gets its own seed (episode k is reset with
``seed + k``). Each environment is wrapped so that an exception in ``reset``/``step`` ends that episode as a
failure carrying the error text, an idle slot (no episode left to run) does not step, and RGB frames are
recorded for the episodes that go into a video.

**Episodes.** :func:`run_episodes` gives each slot its own observation history (first frame repeated, as in
training) and executes the first ``n_action_steps`` actions of each predicted chunk; the slots that need a new
chunk at the same step share one batched policy call. Success is Meta-World's: the maximum over the episode of
``info["success"]`` (``max(info['success'])`` in MP1's released code, LogSSim/MP1). An episode ends at termination,
truncation, ``max_steps`` or, with ``stop_on_success``, its first success. A non-finite action is never sent: it
is replaced by zeros (clipped into the limits) and counted per episode.

**Timing** (:class:`EvalResult`). ``policy_ms_per_action`` is the policy's time divided by the actions
executed (a chunk serves ``n_action_steps`` actions and a call serves every slot that needs one);
``end_to_end_ms_per_action`` is the loop's wall time (policy + environment + bookkeeping) divided by the same
count; ``policy_ms_per_call`` is the median latency of one batched call.

:class:`EpisodeRecord` and :class:`EvalResult` are also importable from :mod:`flowzoo.robotics.evaluate`.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_int
from flowzoo.core.training import atomic_write_bytes
from flowzoo.robotics.chunking import ChunkPolicy, ObservationHistory, batch_observations

__all__ = ["EpisodeRecord", "EvalResult", "guarded_vector_env", "run_episodes", "require_gymnasium",
           "ROBOTICS_EXTRA"]

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


def require_gymnasium() -> Any:
    """The ``gymnasium`` module; raises MissingDependencyError naming the extra when it is missing."""
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
        gym = require_gymnasium()

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


def guarded_vector_env(envs: Sequence[Any]) -> Any:
    """A ``SyncVectorEnv`` over ``envs``, each guarded (see the module docstring), autoreset disabled.

    The vector env owns the environments: closing it closes them.
    """
    gym = require_gymnasium()
    return gym.vector.SyncVectorEnv([lambda env=env: _guarded(env) for env in envs],
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED,
                                    observation_mode="different")


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


def run_episodes(policy: ChunkPolicy, vector: Any, task_name: str, episodes: int, seed: int, max_steps: int,
                 record_episodes: int, stop_on_success: bool, progress: bool) -> tuple[EvalResult, list[np.ndarray]]:
    """Run ``episodes`` episodes of ``policy`` on a :func:`guarded_vector_env` (see the module docstring).

    Args:
        policy: the policy; its ``spec`` and ``config`` (``n_obs_steps``, ``n_action_steps``) set the loop up.
        vector: from :func:`guarded_vector_env`, one slot per environment.
        task_name: the name the result carries.
        episodes: number of episodes; episode k is reset with seed ``seed + k``.
        max_steps: episode step limit.
        record_episodes: the first this many episodes are recorded as frames.
        stop_on_success: end an episode at its first success.
        progress: show a tqdm bar over episodes.

    Returns:
        The :class:`EvalResult` and the recorded frames, episode after episode.

    Raises:
        ConfigError: a count out of range, or ``vector`` not made by :func:`guarded_vector_env`.
    """
    from tqdm.auto import tqdm

    for name, value, least in (("episodes", episodes, 1), ("max_steps", max_steps, 1),
                               ("record_episodes", record_episodes, 0)):
        check_int(value, name, low=least, fix=f"pass a valid {name}")
    if not all(hasattr(env, "flowzoo_frames") for env in getattr(vector, "envs", [None])):
        raise ConfigError(expected("a vector env from guarded_vector_env(envs)", type(vector).__name__,
                                   "wrap the environments with guarded_vector_env"))
    bar = tqdm(total=episodes, disable=not progress, desc=f"evaluate {task_name}", unit="episode")
    loop = _EpisodeLoop(policy, vector, episodes, seed, record_episodes, bar)
    if callable(getattr(policy, "reset", None)):
        policy.reset()
    started = time.perf_counter()
    try:
        loop.start(list(range(loop.n)))
        while loop.any_running():
            loop.fill_queues()
            ended = loop.step(max_steps, stop_on_success)
            if ended:
                loop.start(ended)
    finally:
        bar.close()
    result = loop.result(task_name, seed, time.perf_counter() - started, getattr(policy, "nfe", None))
    return result, [frame for k in sorted(loop.frames) for frame in loop.frames[k]]


class _EpisodeLoop:
    """The state of :func:`run_episodes`: one slot per sub-environment, each with its observation history, its
    queue of actions still to execute from the last chunk and its running episode (None when idle)."""

    def __init__(self, policy: ChunkPolicy, vector: Any, episodes: int, seed: int, record_episodes: int,
                 bar: Any) -> None:
        spec, n = policy.spec, vector.num_envs
        self.policy, self.vector, self.n, self.bar = policy, vector, n, bar
        self.episodes, self.seed, self.record_episodes = episodes, seed, record_episodes
        self.action_dim, self.n_action_steps = int(spec.action_dim), int(policy.config.n_action_steps)
        self.low = np.asarray(spec.action_low, dtype=np.float64)
        self.high = np.asarray(spec.action_high, dtype=np.float64)
        # Sent in place of a non-finite action, and by idle slots (which do not step).
        self.rest_action = np.clip(np.zeros(self.action_dim), self.low, self.high)
        params = list(policy.parameters()) if isinstance(policy, torch.nn.Module) else []
        self.device = params[0].device if params else torch.device("cpu")
        self.histories = [ObservationHistory(int(policy.config.n_obs_steps), spec.obs_shapes) for _ in range(n)]
        self.queues: list[deque] = [deque() for _ in range(n)]
        self.running: list[dict[str, Any] | None] = [None] * n
        self.idle, self.record = [False] * n, [False] * n
        self.records: list[EpisodeRecord] = []
        self.frames: dict[int, list[np.ndarray]] = {}
        self.next_episode, self.actions_executed = 0, 0
        self.call_ms: list[float] = []
        self.batch_sizes: list[int] = []

    def any_running(self) -> bool:
        return any(episode is not None for episode in self.running)

    def finish(self, slot: int, error: str | None) -> None:
        """Close the episode of ``slot`` into an :class:`EpisodeRecord` (a failure when ``error`` is set)."""
        episode = self.running[slot]
        self.records.append(EpisodeRecord(episode["episode"], episode["seed"],
                                          bool(episode["success"]) and error is None, float(episode["return"]),
                                          int(episode["length"]), episode["non_finite"], error))
        if self.record[slot]:
            self.frames[episode["episode"]] = list(self.vector.get_attr("flowzoo_frames")[slot])
        self.running[slot] = None
        self.queues[slot].clear()
        self.bar.update(1)
        self.bar.set_postfix(success=f"{np.mean([r.success for r in self.records]):.2f}")

    def start(self, slots: list[int]) -> None:
        """Reset ``slots`` into their next episodes (or idle); an episode whose reset fails is a failure."""
        while slots:
            mask, seeds = self._assign(slots)
            obs, infos = self.vector.reset(seed=seeds, options={"reset_mask": mask})
            retry = []
            for slot in np.flatnonzero(mask):
                if self.running[slot] is None:
                    continue
                error = _info_at(infos, "error", slot)
                if error is not None:
                    self.finish(slot, str(error))
                    retry.append(int(slot))  # the slot moves on to the next episode
                    continue
                self.histories[slot].reset()
                self.histories[slot].push(_slot(obs, slot))
            slots = retry

    def _assign(self, slots: list[int]) -> tuple[np.ndarray, list[int | None]]:
        """Give each of ``slots`` the next episode (or mark it idle) and tell the guarded environments."""
        mask, seeds = np.zeros(self.n, dtype=bool), [None] * self.n
        current_frames = list(self.vector.get_attr("flowzoo_frames"))
        for slot in slots:
            mask[slot] = True
            current_frames[slot] = []
            if self.next_episode < self.episodes:
                k = self.next_episode
                self.next_episode += 1
                self.running[slot] = {"episode": k, "seed": self.seed + k, "return": 0.0, "length": 0,
                                      "success": False, "non_finite": 0}
                seeds[slot], self.idle[slot], self.record[slot] = self.seed + k, False, k < self.record_episodes
            else:
                self.idle[slot], self.record[slot] = True, False
        self.vector.set_attr("flowzoo_idle", list(self.idle))
        self.vector.set_attr("flowzoo_record", list(self.record))
        self.vector.set_attr("flowzoo_frames", current_frames)
        return mask, seeds

    def fill_queues(self) -> None:
        """One batched policy call for every running slot whose action queue is empty."""
        need = [s for s in range(self.n) if self.running[s] is not None and not self.queues[s]]
        if not need:
            return
        batch = batch_observations([self.histories[s].stacked() for s in need], self.device)
        tick = time.perf_counter()
        with torch.inference_mode():
            chunk = self.policy.predict_action_chunk(batch)
        chunk = torch.as_tensor(chunk).detach().to("cpu", torch.float64).numpy()
        self.call_ms.append(1000.0 * (time.perf_counter() - tick))
        self.batch_sizes.append(len(need))
        if chunk.ndim != 3 or chunk.shape[0] != len(need) or chunk.shape[2] != self.action_dim or chunk.shape[1] < 1:
            raise ShapeError(expected(f"predict_action_chunk output ({len(need)}, horizon, {self.action_dim})",
                                      chunk.shape, "return (B, horizon, action_dim) actions"))
        for row, slot in enumerate(need):
            self.queues[slot].extend(chunk[row, :self.n_action_steps])

    def _next_actions(self) -> np.ndarray:
        """The next queued action of every running slot, finite and clipped into the limits."""
        actions = np.tile(self.rest_action, (self.n, 1))
        for slot in range(self.n):
            if self.running[slot] is None:
                continue
            action = self.queues[slot].popleft()
            if not np.all(np.isfinite(action)):
                self.running[slot]["non_finite"] += 1
                action = self.rest_action
            actions[slot] = np.clip(action, self.low, self.high)
        return actions

    def step(self, max_steps: int, stop_on_success: bool) -> list[int]:
        """Step every environment once and update the running episodes; returns the slots whose episode ended."""
        obs, rewards, terminated, truncated, infos = self.vector.step(self._next_actions().astype(np.float32))
        ended = []
        for slot in range(self.n):
            episode = self.running[slot]
            if episode is None:
                continue
            self.actions_executed += 1
            episode["return"] += float(rewards[slot])
            episode["length"] += 1
            success = _info_at(infos, "success", slot)
            episode["success"] = episode["success"] or (success is not None and bool(float(success) > 0))
            error = _info_at(infos, "error", slot)
            if error is None:
                self.histories[slot].push(_slot(obs, slot))
            if (error is not None or terminated[slot] or truncated[slot] or episode["length"] >= max_steps
                    or (stop_on_success and episode["success"])):
                self.finish(slot, None if error is None else str(error))
                ended.append(slot)
        return ended

    def result(self, task_name: str, seed: int, wall: float, nfe: int | None) -> EvalResult:
        records = sorted(self.records, key=lambda r: r.episode)
        actions = max(self.actions_executed, 1)
        call_ms, batch_sizes = self.call_ms, self.batch_sizes
        return EvalResult(
            task=task_name, seed=seed, episodes=records, success_rate=float(np.mean([r.success for r in records])),
            mean_return=float(np.mean([r.episode_return for r in records])),
            mean_length=float(np.mean([r.length for r in records])),
            crashed_episodes=sum(r.error is not None for r in records),
            policy_ms_per_action=sum(call_ms) / actions, end_to_end_ms_per_action=1000.0 * wall / actions,
            policy_ms_per_call=float(np.median(call_ms)) if call_ms else float("nan"),
            mean_batch_size=float(np.mean(batch_sizes)) if batch_sizes else float("nan"),
            nfe=nfe, wall_s=wall)
