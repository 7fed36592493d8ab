r"""The Action Flow Matching controller: planning, regime detection, online learning (Mallo et al., RSS 2025,
arXiv 2504.18471).

:class:`AFMController` plans with MPPI (:class:`~flowzoo.robotics.mppi.MPPIPlanner`) on a fixed dynamics model
and executes the plan transformed by the AFM flow (:class:`~flowzoo.robotics.afm.method.ActionFlowMatching`) for the
current :class:`~flowzoo.robotics.afm.regimes.Regime`.

Regime detection (the code's ``ActionFlowMatchingSamplingBasedController``): after each step the realised state
is compared with the planner model's prediction for the planned action. If the error norm exceeds
``threshold``, the next planned action is executed raw as a probe, and the probe's (state, action, error) becomes
the new regime (an error under the threshold registers as zero: nominal dynamics). Unlike the code, a moderate
error shortly after a registration waits ``probe_interval`` steps (see :class:`AFMController`).

Online learning (the paper's continual setting): each transition (s, a_exec, s') is relabelled in hindsight —
the nominal dynamics would have needed :math:`\hat a = f_{\rm nom}^{-1}(s, s')` to produce it, so
:math:`(\hat a \to a_{\rm exec})` is a (planned → intended) pair for the current regime — and the flow takes a few
Adam steps on recent pairs mixed with replayed pre-training data.
The planner's own model stays fixed (updating it too would correct the drift twice).

:class:`AFMController` is also importable from :mod:`flowzoo.robotics.afm.method`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.validation import check_positive_int
from flowzoo.robotics.afm.regimes import Regime

if TYPE_CHECKING:  # afm imports this module to re-export the controller
    from flowzoo.robotics.afm.method import ActionFlowMatching

__all__ = ["AFMController"]

Tensor = torch.Tensor


class AFMController:
    """MPPI planning on a fixed model + Action Flow Matching with regime detection and online learning.

    Call :meth:`act` for the action to execute, then :meth:`observe` with the realised next state.

    Args:
        task: supplies ``action_low/high``, ``regime_features``, ``state_error``, ``nominal_inverse`` and
            ``misalignment_threshold``. planner: an MPPI planner. dynamics: the planner's one-step model (its
            prediction of the planned action's outcome is compared with reality). afm: a pre-trained
            :class:`~flowzoo.robotics.afm.method.ActionFlowMatching`.
        threshold: state-error norm that signals a new regime (default: the task's).
        probe_interval: after a registration, an error between ``threshold`` and ``4 × threshold`` triggers the
            next probe only once this many steps have passed. Why: when the flow's corrected action saturates at
            the limits (a weakened actuator), some error persists; probing at every such step would alternate raw
            and corrected actions. Abrupt changes (error above ``4 × threshold``) are probed at once.
        online: keep training the flow on hindsight-relabelled transitions.
        replay: ``sample_batch(generator)`` of pre-training data mixed into each online step (avoids forgetting).
        online_steps, online_batch, buffer_size: Adam steps per transition, recent pairs per step, pairs kept.
    """

    def __init__(self, task, planner, dynamics: Callable[[Tensor, Tensor], Tensor], afm: ActionFlowMatching, *,
                 threshold: float | None = None, probe_interval: int = 10, online: bool = True,
                 replay: Callable[[torch.Generator], dict[str, Tensor]] | None = None, online_steps: int = 1,
                 online_batch: int = 64, buffer_size: int = 512):
        self.task, self.planner, self.dynamics, self.afm = task, planner, dynamics, afm
        self.threshold = float(task.misalignment_threshold if threshold is None else threshold)
        if not self.threshold > 0:
            raise ConfigError(expected("threshold > 0", threshold, "pass a positive state-error norm"))
        self.probe_interval = check_positive_int(probe_interval, "probe_interval", fix="use e.g. 10")
        self.steps_since_regime = probe_interval
        self.online, self.replay = bool(online), replay
        self.online_steps, self.online_batch = int(online_steps), int(online_batch)
        self.buffer: deque[tuple[Tensor, Tensor, Regime]] = deque(maxlen=int(buffer_size))
        self.low = torch.as_tensor(task.action_low, dtype=torch.float32)
        self.high = torch.as_tensor(task.action_high, dtype=torch.float32)
        net = afm.net
        self.regime = Regime.nominal(net.regime_state_dim, net.action_dim, net.error_dim)
        self.probe_next, self.probes, self.regimes_registered = False, 0, 0
        self._pending: dict[str, Tensor | bool] | None = None

    def reset(self) -> None:
        net = self.afm.net
        self.regime = Regime.nominal(net.regime_state_dim, net.action_dim, net.error_dim)
        self.probe_next, self._pending, self.steps_since_regime = False, None, self.probe_interval
        self.planner.reset()

    def act(self, state, goal) -> np.ndarray:
        state = torch.as_tensor(np.asarray(state), dtype=torch.float32)
        planned = self.planner.plan(state, goal)
        probing = self.probe_next
        # The nominal regime (no error seen) means no correction: execute the plan as it is.
        nominal = not bool(self.regime.state_error.any())
        executed = planned if probing or nominal else self.afm.transform(planned, self.regime)
        executed = torch.maximum(torch.minimum(executed, self.high), self.low)
        predicted = self.dynamics(state[None], planned[None])[0]
        self._pending = {"state": state, "planned": planned, "executed": executed, "predicted": predicted,
                         "probing": probing}
        self.probe_next = False
        return executed.numpy().astype(np.float64)

    def observe(self, next_state) -> None:
        """Compare the realised state with the prediction, register regimes and learn online."""
        if self._pending is None:
            raise ConfigError(expected("act() before observe()", "observe() without a pending action",
                                       "call act(state, goal) first"))
        pending, self._pending = self._pending, None
        next_state = torch.as_tensor(np.asarray(next_state), dtype=torch.float32)
        if next_state.shape != pending["state"].shape or not bool(torch.isfinite(next_state).all()):
            raise ShapeError(expected(f"a finite next state of shape {tuple(pending['state'].shape)}",
                                      tuple(next_state.shape), "pass the simulator's state after the action"))
        error = self.task.state_error(pending["predicted"][None], next_state[None])[0]
        size = float(torch.linalg.vector_norm(error))
        misaligned = size > self.threshold
        if pending["probing"]:
            seen = self.task.regime_error(pending["state"][None], error[None])[0]
            self.regime = Regime(self.task.regime_features(pending["state"][None])[0], pending["planned"],
                                 seen if misaligned else torch.zeros_like(seen))
            self.regimes_registered, self.steps_since_regime = self.regimes_registered + 1, 0
        else:
            self.steps_since_regime += 1
            if misaligned and (size > 4 * self.threshold or self.steps_since_regime >= self.probe_interval):
                self.probe_next, self.probes = True, self.probes + 1
        # Learn only from transitions that the current regime describes: not from the step that revealed a change
        # (its label is stale), and not under the nominal regime, which executes plans unchanged.
        labelled = (pending["probing"] or not misaligned) and bool(self.regime.state_error.any())
        if self.online and labelled:
            relabelled = self.task.nominal_inverse(pending["state"][None], next_state[None])[0]
            self.buffer.append((relabelled, pending["executed"], self.regime))
            self._learn()

    def _learn(self) -> None:
        recent = list(self.buffer)[-self.online_batch:]
        batch = {"x0": torch.stack([p for p, _, _ in recent]), "x1": torch.stack([e for _, e, _ in recent]),
                 "regime_state": torch.stack([r.state for _, _, r in recent]),
                 "probe_action": torch.stack([r.probe_action for _, _, r in recent]),
                 "state_error": torch.stack([r.state_error for _, _, r in recent])}
        if not all(bool(torch.isfinite(v).all()) for v in batch.values()):
            raise NonFiniteError(expected("finite online pairs", "NaN or Inf", "check the simulator's states"))
        for _ in range(self.online_steps):
            step_batch = batch
            if self.replay is not None:
                extra = self.replay(self.afm.generator)
                step_batch = {k: torch.cat([batch[k], extra[k]]) for k in batch}
            self.afm.train_step(step_batch)
