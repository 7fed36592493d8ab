r"""Run a chunking flow policy at a fixed rate, on a gymnasium environment or on a real robot.

A chunking policy (Diffusion Policy, DP3, MP1) maps the last ``n_obs_steps`` observations to a chunk of
``horizon`` future actions. :class:`ControlLoop` turns such a policy into a fixed-rate controller:

* **Observation history.** :class:`~flowzoo.robotics.chunking.ObservationHistory` keeps the last
  ``n_obs_steps`` frames; at the start of a run the first frame is repeated, as in the training windows
  (robotics.md window convention).
* **Chunk alignment.** A chunk predicted from the observation of control step ``k`` holds the actions of steps
  ``k .. k + horizon - 1`` (its *origin* is k). Inference takes time, so a chunk that arrives at step
  ``k + d`` is used from index ``d`` on: its stale actions are skipped, never replayed late
  (:class:`~flowzoo.robotics.chunking.ActionPlan`).
* **Receding horizon.** A new chunk is planned every ``replan_every`` steps (default ``n_action_steps``).
  With ``background=True`` the inference runs in a worker thread while the current chunk executes and is
  requested ``lead`` steps early, ``lead = max(1, ceil(latency / period))`` from a running latency estimate,
  so that it is ready when the executing plan runs out.
* **Temporal ensembling** (ACT: Zhao et al., "Learning Fine-Grained Bimanual Manipulation with Low-Cost
  Hardware", arXiv 2304.13705, §3.3). Every chunk that covers step j proposes an action for it; they are
  averaged with weights :math:`w_i = \exp(-m\,i)`, where i = 0 is the *oldest* proposal and m is
  ``temporal_ensemble`` (ACT: m > 0 favours older predictions, which smooths the motion).
* **Deadlines and safety.** Each inference has a latency budget (``budget_ms``, default one control period);
  a chunk over budget is a *missed deadline*, counted. The loop never waits for inference: a step with no
  planned action sends the *hold action* (the last safe action sent, or ``hold_action`` if given, e.g. a
  zero-velocity command) and counts it. Actions are clipped to ``[action_low, action_high]``; a NaN or Inf
  proposal is never sent (blocked, counted, hold action instead).
* **Timing.** Ticks are scheduled on ``time.monotonic`` at ``start + k / rate_hz``; the loop sleeps until each
  tick, measures its jitter and the read-to-send latency of every cycle. A cycle that overruns past its next
  tick is counted; when the loop falls more than one period behind it re-anchors the schedule instead of
  firing a burst of catch-up ticks.

The first chunk is computed before the clock starts (the robot is still), so the first tick has an action.
An exception raised by the policy in the worker thread stops the loop and is re-raised in the caller, with
the thread joined first.

The shared parts (:class:`ChunkPolicy`, :class:`ObservationHistory`, :func:`batch_observations`,
:class:`ActionPlan`) live in :mod:`flowzoo.robotics.chunking` and are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_number, check_positive, check_positive_int
from flowzoo.robotics.chunking import ActionPlan, ChunkPolicy, ObservationHistory, batch_observations
from flowzoo.robotics.inference_worker import InferenceWorker

__all__ = ["ControlLoop", "ControlReport", "latency_summary"]


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of a list of durations in ms (NaN everywhere when empty)."""
    if len(values_ms) == 0:
        return {name: float("nan") for name in ("mean", "p50", "p90", "p99", "max")}
    values = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(values.max())}


@dataclass
class ControlReport:
    """What happened during one run of :class:`ControlLoop` (durations in ms, percentiles as dicts)."""

    steps: int
    duration_s: float
    target_rate_hz: float
    achieved_rate_hz: float
    budget_ms: float
    cycle_ms: dict[str, float]
    jitter_ms: dict[str, float]
    inference_ms: dict[str, float]
    inference_ms_per_chunk: list[float]
    first_chunk_ms: float
    chunks: int
    missed_deadlines: int
    held_actions: int
    non_finite_blocked: int
    clipped_actions: int
    overruns: int
    stop_reason: str
    inference_thread_joined: bool = True
    episode_return: float | None = None
    success: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A two-column markdown table of the headline numbers."""
        rows = [("steps", self.steps), ("rate (target / achieved, Hz)",
                                         f"{self.target_rate_hz:.1f} / {self.achieved_rate_hz:.1f}"),
                ("cycle ms p50 / p99", f"{self.cycle_ms['p50']:.2f} / {self.cycle_ms['p99']:.2f}"),
                ("jitter ms p50 / p99", f"{self.jitter_ms['p50']:.2f} / {self.jitter_ms['p99']:.2f}"),
                ("inference ms p50 / max (budget)",
                 f"{self.inference_ms['p50']:.2f} / {self.inference_ms['max']:.2f} ({self.budget_ms:.1f})"),
                ("chunks", self.chunks), ("missed deadlines", self.missed_deadlines),
                ("held actions", self.held_actions), ("non-finite blocked", self.non_finite_blocked),
                ("clipped actions", self.clipped_actions), ("overruns", self.overruns),
                ("stop reason", self.stop_reason)]
        if self.success is not None:
            rows += [("return", f"{self.episode_return:.2f}"), ("success", self.success)]
        return "\n".join(["| quantity | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows])


def _limit(value: Any, default: Any, dim: int, name: str) -> np.ndarray:
    array = np.asarray(default if value is None else value, dtype=np.float64).reshape(-1)
    if array.size == 1:
        array = np.full(dim, float(array[0]))
    if array.shape != (dim,) or not np.all(np.isfinite(array)):
        raise ConfigError(expected(f"{name} as {dim} finite numbers", array.tolist(), f"pass {name} per dimension"))
    return array


class ControlLoop:
    """Run ``policy`` at ``rate_hz`` against a gymnasium environment (:meth:`run_env`) or a robot (:meth:`run`).

    Args:
        policy: any :class:`ChunkPolicy`.
        rate_hz: control rate.
        budget_ms: inference latency budget per chunk; default one control period.
        action_low, action_high: limits the actions are clipped to (scalars or per dimension); default
            ``policy.spec.action_low`` / ``action_high``.
        temporal_ensemble: None, or the ACT weight exponent m (see the module docstring).
        replan_every: steps between plans (receding horizon); default ``policy.config.n_action_steps``.
        background: run inference in a worker thread while the current chunk executes; False runs it inline
            (the tick overruns when inference is slower than a period).
        hold_action: the action sent when no safe planned action exists; default the last safe action sent
            (zeros before the first one).
        shutdown_timeout_s: how long to wait for the worker's last inference when the loop stops.
        progress: show a tqdm bar of control steps (held actions and missed deadlines in its postfix).

    Example:
        >>> loop = ControlLoop(policy, rate_hz=20)                                  # doctest: +SKIP
        >>> report = loop.run(robot.read, robot.send, duration_s=30.0)              # doctest: +SKIP
        >>> print(report.table())                                                  # doctest: +SKIP
    """

    def __init__(self, policy: ChunkPolicy, *, rate_hz: float, budget_ms: float | None = None,
                 action_low: Any = None, action_high: Any = None, temporal_ensemble: float | None = None,
                 replan_every: int | None = None, background: bool = True, hold_action: Any = None,
                 shutdown_timeout_s: float = 30.0, progress: bool = True) -> None:
        if not callable(getattr(policy, "predict_action_chunk", None)):
            raise ConfigError(expected("a policy with predict_action_chunk(obs) -> (B, horizon, action_dim)",
                                       type(policy).__name__, "pass a flowzoo FlowPolicy or an object like it"))
        self.policy = policy
        self.rate_hz = check_positive(rate_hz, "rate_hz")
        self.period_s = 1.0 / self.rate_hz
        self.budget_ms = 1000.0 * self.period_s if budget_ms is None else check_positive(budget_ms, "budget_ms")
        spec = policy.spec
        self.action_dim = int(spec.action_dim)
        self.action_low = _limit(action_low, spec.action_low, self.action_dim, "action_low")
        self.action_high = _limit(action_high, spec.action_high, self.action_dim, "action_high")
        if np.any(self.action_low > self.action_high):
            raise ConfigError(expected("action_low <= action_high", (self.action_low.tolist(),
                                       self.action_high.tolist()), "swap or fix the limits"))
        self.temporal_ensemble = None if temporal_ensemble is None else check_number(
            temporal_ensemble, "temporal_ensemble (None or ACT's m)", fix="use e.g. 0.01 (ACT) or None")
        self.n_obs_steps = int(policy.config.n_obs_steps)
        self.replan_every = int(policy.config.n_action_steps if replan_every is None else replan_every)
        if self.replan_every < 1:
            raise ConfigError(expected("replan_every >= 1", self.replan_every, "replan at least every step"))
        self.background = bool(background)
        self.hold_action = None if hold_action is None else np.clip(
            _limit(hold_action, None, self.action_dim, "hold_action"), self.action_low, self.action_high)
        self.shutdown_timeout_s = check_positive(shutdown_timeout_s, "shutdown_timeout_s")
        self.progress = bool(progress)
        self.obs_shapes = dict(getattr(spec, "obs_shapes", None) or {}) or None
        params = list(policy.parameters()) if isinstance(policy, torch.nn.Module) else []
        self.device = params[0].device if params else torch.device("cpu")

    # ----------------------------------------------------------------------------------------------- entry points
    def run_env(self, env: Any, max_steps: int | None = None, seed: int | None = None) -> ControlReport:
        """One episode on a gymnasium environment, stepped at ``rate_hz``.

        Stops at termination, truncation or ``max_steps`` (default ``policy.spec.max_episode_steps``). The
        report adds the episode return and success (max over the episode of ``info["success"]``).
        """
        obs, _ = env.reset(seed=seed)
        episode = {"obs": obs, "done": False, "return": 0.0, "success": False, "reason": "max_steps"}

        def send(action: np.ndarray) -> None:
            obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
            episode["obs"] = obs
            episode["return"] += float(reward)
            episode["success"] = episode["success"] or bool(info.get("success", False))
            if terminated or truncated:
                episode["done"] = True
                episode["reason"] = "terminated" if terminated else "truncated"

        limit = max_steps if max_steps is not None else (getattr(self.policy.spec, "max_episode_steps", 0) or None)
        report = self._loop(lambda: episode["obs"], send, limit, None, lambda: bool(episode["done"]))
        report.stop_reason = episode["reason"] if episode["done"] else report.stop_reason
        report.episode_return = float(episode["return"])
        report.success = bool(episode["success"])
        return report

    def run(self, read_observation: Callable[[], Any], send_action: Callable[[np.ndarray], Any], *,
            max_steps: int | None = None, duration_s: float | None = None,
            should_stop: Callable[[], bool] | None = None) -> ControlReport:
        """Drive a robot given as callbacks until ``max_steps``, ``duration_s`` or ``should_stop()``.

        Args:
            read_observation: returns the current observation ``{key: array}`` (one frame, no history).
            send_action: receives a finite float64 action within the limits.
        """
        if max_steps is None and duration_s is None and should_stop is None:
            raise ConfigError(expected("max_steps, duration_s or should_stop", "none of them",
                                       "say when the loop ends, e.g. duration_s=10"))
        if duration_s is not None:
            duration_s = check_positive(duration_s, "duration_s")
        return self._loop(read_observation, send_action, max_steps, duration_s, should_stop or (lambda: False))

    # ------------------------------------------------------------------------------------------------- the loop
    def _infer(self, stacked: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            chunk = self.policy.predict_action_chunk(batch_observations([stacked], self.device))
        chunk = torch.as_tensor(chunk).detach().to("cpu", torch.float64).numpy()
        if chunk.ndim != 3 or chunk.shape[0] != 1 or chunk.shape[2] != self.action_dim:
            raise ShapeError(expected(f"predict_action_chunk output (1, horizon, {self.action_dim})", chunk.shape,
                                      "return (B, horizon, action_dim) actions"))
        return chunk[0]

    def _safe(self, action: np.ndarray | None, counts: dict[str, int], last_safe: np.ndarray) -> np.ndarray:
        if action is not None and not np.all(np.isfinite(action)):  # e.g. an ensemble that overflowed
            counts["non_finite_blocked"] += 1
            action = None
        if action is None:
            counts["held_actions"] += 1
            return (last_safe if self.hold_action is None else self.hold_action).copy()
        clipped = np.clip(action, self.action_low, self.action_high)
        counts["clipped_actions"] += int(np.any(clipped != action))
        return clipped

    def _record(self, run: _Run, origin: int, chunk: np.ndarray, latency_s: float) -> None:
        """Add a chunk predicted at step ``origin`` to the plan and count it against the latency budget."""
        if len(chunk) < self.replan_every:
            raise ConfigError(expected(f"chunks of at least replan_every={self.replan_every} actions",
                                       len(chunk), "lower replan_every or raise the policy's horizon"))
        run.plan.add(origin, chunk)
        run.inference_ms.append(1000.0 * latency_s)
        run.counts["missed_deadlines"] += int(1000.0 * latency_s > self.budget_ms)

    def _loop(self, read: Callable[[], Any], send: Callable[[np.ndarray], Any], max_steps: int | None,
              duration_s: float | None, should_stop: Callable[[], bool]) -> ControlReport:
        if max_steps is not None:
            check_positive_int(max_steps, "max_steps", fix="run at least one step")
        if callable(getattr(self.policy, "reset", None)):
            self.policy.reset()
        run = _Run(ObservationHistory(self.n_obs_steps, self.obs_shapes), ActionPlan(self.temporal_ensemble),
                   last_safe=np.clip(np.zeros(self.action_dim), self.action_low, self.action_high))
        run.history.push(read())
        started = time.perf_counter()
        self._record(run, 0, self._infer(run.history.stacked()), time.perf_counter() - started)
        first_chunk_ms = run.inference_ms[0]
        run.counts["missed_deadlines"] = 0  # the first chunk is computed before the clock starts: no deadline
        run.estimate_s = first_chunk_ms / 1000.0
        worker = InferenceWorker(self._infer) if self.background else None
        joined = True
        bar = tqdm(total=max_steps, disable=not self.progress, desc="control", unit="step", mininterval=0.5)
        start = run.next_tick = time.monotonic()
        try:
            while (reason := self._stop_reason(run.step, start, max_steps, duration_s, should_stop)) is None:
                self._control_step(run, read, send, worker, bar)
            if worker is not None:
                joined = worker.close(self.shutdown_timeout_s)
                for origin, chunk, latency_s in worker.poll():  # the last chunk, and an error it raised
                    self._record(run, origin, chunk, latency_s)
        finally:
            bar.close()
            if worker is not None and worker.alive:
                joined = worker.close(self.shutdown_timeout_s)
        span = run.ticks[-1] - run.ticks[0] if len(run.ticks) > 1 else 0.0
        return ControlReport(
            steps=run.step, duration_s=time.monotonic() - start, target_rate_hz=self.rate_hz,
            achieved_rate_hz=(len(run.ticks) - 1) / span if span > 0 else float("nan"), budget_ms=self.budget_ms,
            cycle_ms=latency_summary(run.cycle_ms), jitter_ms=latency_summary(run.jitter_ms),
            inference_ms=latency_summary(run.inference_ms), inference_ms_per_chunk=run.inference_ms,
            first_chunk_ms=first_chunk_ms, chunks=len(run.inference_ms), stop_reason=reason,
            inference_thread_joined=joined, **run.counts)

    @staticmethod
    def _stop_reason(step: int, start: float, max_steps: int | None, duration_s: float | None,
                     should_stop: Callable[[], bool]) -> str | None:
        """Why the loop ends before control step ``step`` (``ControlReport.stop_reason``), or None to go on."""
        if max_steps is not None and step >= max_steps:
            return "max_steps"
        if duration_s is not None and time.monotonic() - start >= duration_s:
            return "duration"
        if should_stop():
            return "stopped"
        return None

    def _control_step(self, run: _Run, read: Callable[[], Any], send: Callable[[np.ndarray], Any],
                      worker: InferenceWorker | None, bar: Any) -> None:
        """One tick: wait for it, observe, take in finished chunks, send a safe action, plan ahead."""
        now = time.monotonic()
        if now < run.next_tick:
            time.sleep(run.next_tick - now)
        tick = time.monotonic()
        run.ticks.append(tick)
        run.jitter_ms.append(1000.0 * (tick - run.next_tick))
        if run.step > 0:
            run.history.push(read())
        if worker is not None:
            for origin, chunk, latency_s in worker.poll():
                self._record(run, origin, chunk, latency_s)
                run.estimate_s = 0.7 * run.estimate_s + 0.3 * latency_s
        elif run.step >= run.plan.newest_origin + self.replan_every:
            started = time.perf_counter()
            self._record(run, run.step, self._infer(run.history.stacked()), time.perf_counter() - started)
        proposal, dropped = run.plan.action_for(run.step)
        run.counts["non_finite_blocked"] += int(dropped)
        action = self._safe(proposal, run.counts, run.last_safe)
        send(action.copy())
        run.last_safe = action
        run.cycle_ms.append(1000.0 * (time.monotonic() - tick))
        if worker is not None and not worker.busy:
            # Request the next chunk `lead` steps early so that it is ready when the current plan runs out.
            lead = max(1, math.ceil(run.estimate_s / self.period_s))
            if run.step >= run.plan.newest_origin + self.replan_every - lead:
                worker.submit(run.step, run.history.stacked())
        run.step += 1
        bar.update(1)
        if run.step % 50 == 0:
            bar.set_postfix(held=run.counts["held_actions"], missed=run.counts["missed_deadlines"], refresh=False)
        run.next_tick += self.period_s
        now = time.monotonic()
        if now > run.next_tick:
            run.counts["overruns"] += 1
            if now > run.next_tick + self.period_s:  # fell behind: re-anchor rather than burst
                run.next_tick = now


@dataclass
class _Run:
    """What one run of :meth:`ControlLoop._loop` keeps between ticks."""

    history: ObservationHistory
    plan: ActionPlan
    last_safe: np.ndarray
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("missed_deadlines", "held_actions", "non_finite_blocked", "clipped_actions", "overruns"), 0))
    cycle_ms: list[float] = field(default_factory=list)
    jitter_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    ticks: list[float] = field(default_factory=list)
    step: int = 0
    estimate_s: float = 0.0  # running estimate of one inference's latency
    next_tick: float = 0.0
