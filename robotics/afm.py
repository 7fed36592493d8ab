r"""Action Flow Matching: correct planned actions for drifted dynamics (Mallo et al., RSS 2025, arXiv 2504.18471).

A planner (here :class:`~flowzoo.robotics.mppi.MPPIPlanner`) proposes :math:`a_{\rm plan}` with a dynamics model
that may no longer match the robot. A flow transforms it into the *intended* action :math:`a^\star` — the action
that makes the real robot do what the planner expected — conditioned on a *dynamics regime*
:math:`c = (s_p, a_p, e_p)`: a probe state, the raw action executed there, and the state error it caused
(realised − predicted next state). Flow matching with the planned action as the source (the paper's objective as
its code ``train_afm.py`` implements it; equation numbers of the PDF were not checked):

.. math::  x_t = (1 - t)\,a_{\rm plan} + t\,a^\star,\qquad
           \mathcal L = E_{t, (a_{\rm plan}, a^\star, c)}\,\|v_\theta(x_t, t \mid c) - (a^\star - a_{\rm plan})\|^2,

trained with :class:`flowzoo.core.objectives.FlowMatchingLoss` (``x0`` = planned, ``x1`` = intended; flowzoo
time, t = 0 at the planned action, as in the paper). Inference integrates
:math:`\dot x = v_\theta(x, t\mid c)` from :math:`a_{\rm plan}` at t = 0 to t = 1 with 10 midpoint steps
(:func:`flowzoo.core.solvers.integrate`).

Network (the AFM code's ``ActionFlowMatching``, hidden 64, ELU): an action encoder on :math:`[t, x_t]`, a
dynamics encoder on :math:`[s_p, a_p, e_p]`, and a flow net on their concatenation.

**Deviation: the lifted path (default).** On the straight path a flow of each action entry is a monotone map,
so it cannot send :math:`a \mapsto -a`: a sign-inverted gain — the paper's hardest cases, e.g. (−1, 1) — makes
every line cross 0 at t = 1/2 and the learned flow averages them to about 0 (``tests/robotics/test_afm.py`` shows
it). :class:`LiftedPath` gives each action entry a lift entry, keeps the straight line where the sign stays, and
turns half a circle through the lift where it flips; a small tube of noise with a pull back to the path keeps
the learned field stable off the path. ``ActionFlowNet(lifted=False)`` trains the paper's plain flow on the
core's :class:`~flowzoo.core.paths.CondOTPath`.

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

Offline pre-training data are generated analytically: for the unicycle with gains :math:`(g_v, g_\omega)`,
:math:`a^\star = \mathrm{clip}(a_{\rm plan} / g)` (:func:`unicycle_afm_batch`); for the linear MuJoCo point
mass, the least-squares action of the changed model that matches the nominal step (:func:`point_mass_afm_batch`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import CondOTPath, PathSample
from flowzoo.core.solvers import integrate

__all__ = ["ActionFlowNet", "LiftedPath", "Regime", "ActionFlowMatching", "AFMController", "unicycle_afm_batch",
           "point_mass_afm_batch", "point_mass_regime_maps", "REGIME_KEYS", "PAPER_GAINS"]

Tensor = torch.Tensor
REGIME_KEYS = ("regime_state", "probe_action", "state_error")


class ActionFlowNet(nn.Module):
    """Velocity model ``net(y, t, regime_state=, probe_action=, state_error=) -> (B, flow_dim)``.

    ``y`` is the (possibly lifted, see :class:`LiftedPath`) action: ``action_dim`` entries, plus ``action_dim``
    lift entries when ``lifted``.

    Args:
        action_dim: size of an action. regime_state_dim: size of the regime's state features.
        error_dim: size of the state error. hidden: width (64 in the paper).
        lifted: run the flow in the lifted space of :class:`LiftedPath`, which can represent sign-inverted gains;
            False gives the paper's plain flow on the core's CondOT path (monotone in each action entry).
    """

    def __init__(self, action_dim: int, regime_state_dim: int, error_dim: int, hidden: int = 64,
                 lifted: bool = True):
        super().__init__()
        if min(action_dim, regime_state_dim, error_dim, hidden) < 1:
            raise ConfigError(expected("positive sizes", (action_dim, regime_state_dim, error_dim, hidden),
                                       "pass the task's action, regime-state and error sizes"))
        self.action_dim, self.regime_state_dim, self.error_dim = action_dim, regime_state_dim, error_dim
        self.lifted = bool(lifted)
        self.flow_dim = action_dim * (2 if self.lifted else 1)
        self.action_encoder = nn.Sequential(nn.Linear(1 + self.flow_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden))
        self.dynamics_encoder = nn.Sequential(nn.Linear(regime_state_dim + action_dim + error_dim, hidden), nn.ELU(),
                                              nn.Linear(hidden, hidden))
        self.flow_net = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ELU(), nn.Linear(2 * hidden, hidden),
                                      nn.ELU(), nn.Linear(hidden, self.flow_dim))
        # State errors are small numbers (centimetres); a fixed per-dimension scale makes them visible to the net.
        self.register_buffer("error_scale", torch.ones(error_dim))

    def forward(self, x: Tensor, t: Tensor, *, regime_state: Tensor, probe_action: Tensor,
                state_error: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.flow_dim:
            raise ShapeError(expected(f"(lifted) actions of shape (B, {self.flow_dim})", tuple(x.shape),
                                      "pass a batch of actions; ActionFlowMatching.transform lifts them"))
        n = x.shape[0]
        for name, value, size in (("regime_state", regime_state, self.regime_state_dim),
                                  ("probe_action", probe_action, self.action_dim),
                                  ("state_error", state_error, self.error_dim)):
            if value.shape != (n, size):
                raise ShapeError(expected(f"{name} of shape ({n}, {size})", tuple(value.shape),
                                          "expand the regime to the batch (see Regime.batch)"))
        encoded_action = self.action_encoder(torch.cat([t.reshape(n, 1).to(x.dtype), x], dim=1))
        encoded_regime = self.dynamics_encoder(torch.cat([regime_state, probe_action, state_error / self.error_scale],
                                                         dim=1))
        return self.flow_net(torch.cat([encoded_action, encoded_regime], dim=1))


class LiftedPath:
    r"""The CondOT path of the actions, with a half-turn through a lift dimension where the sign flips.

    Each action entry :math:`a` gets a lift entry :math:`z` (``x0 = [a_0, 0]``, ``x1 = [a_1, 0]``, width 2A).
    Where :math:`a_0 a_1 \ge 0` the path is the paper's straight line, :math:`y_t = ((1-t)a_0 + t a_1, 0)`.
    Where the sign flips (a sign-inverted gain), the pair turns half a circle in the (a, z) plane while its
    radius moves linearly:

    .. math::  y_t = \operatorname{sign}(a_0)\, r_t\,(\cos\pi t,\ \sin\pi t),\qquad r_t = (1-t)|a_0| + t|a_1|,

    with the time derivative as the target. Why: a one-dimensional ODE flow is monotone, so on the straight path
    every line of a flip crosses 0 at once and no flow can map :math:`a \mapsto -a`; the half-turn keeps the lines
    apart, and for an unclipped gain :math:`a_1 = k a_0` its velocity field is linear in y (a rotation plus a
    radial term), which a small network learns quickly. With ``enabled=False`` this is the plain CondOT path.

    Args:
        enabled: turn where the sign flips (False: straight lines only).
        tube: std of Gaussian noise added to :math:`y_t` during training (0: none).
        pull: the target becomes :math:`\dot y_t - \text{pull} \times \text{noise}`, so that the learned field
            leads back to the path from nearby points instead of drifting off it during integration.
        seed: seed of the tube noise.
    """

    def __init__(self, enabled: bool = True, tube: float = 0.05, pull: float = 5.0, seed: int = 0):
        if not (tube >= 0 and pull >= 0):
            raise ConfigError(expected("tube >= 0 and pull >= 0", (tube, pull), "use e.g. tube=0.05, pull=5"))
        self.enabled, self.tube, self.pull = bool(enabled), float(tube), float(pull)
        self.generator = torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        return f"LiftedPath(enabled={self.enabled}, tube={self.tube}, pull={self.pull})"

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        if x0.dim() != 2 or x0.shape[1] % 2 or x0.shape != x1.shape:
            raise ShapeError(expected("x0 and x1 of equal shape (B, 2A): actions followed by their zero lift",
                                      (tuple(x0.shape), tuple(x1.shape)), "pad with ActionFlowMatching.lift_actions"))
        half = x0.shape[1] // 2
        a0, a1, tt = x0[:, :half], x1[:, :half], t.reshape(-1, 1).to(x0.dtype)
        line, d_line = (1 - tt) * a0 + tt * a1, (a1 - a0).expand_as(a0)
        flip = (a0 * a1 < 0) & self.enabled
        sign, radius = torch.sign(a0), (1 - tt) * a0.abs() + tt * a1.abs()
        d_radius, cos, sin = a1.abs() - a0.abs(), torch.cos(math.pi * tt), torch.sin(math.pi * tt)
        x_t = torch.cat([torch.where(flip, sign * radius * cos, line), torch.where(flip, sign * radius * sin, 0.0)], 1)
        dx_t = torch.cat([torch.where(flip, sign * (d_radius * cos - math.pi * radius * sin), d_line),
                          torch.where(flip, sign * (d_radius * sin + math.pi * radius * cos), 0.0)], dim=1)
        if self.tube > 0:
            offset = self.tube * torch.randn(x_t.shape, generator=self.generator, dtype=x_t.dtype)
            x_t, dx_t = x_t + offset, dx_t - self.pull * offset
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)


@dataclass
class Regime:
    """A registered dynamics regime: probe state features, probe action and the state error it caused."""

    state: Tensor
    probe_action: Tensor
    state_error: Tensor

    @classmethod
    def nominal(cls, regime_state_dim: int, action_dim: int, error_dim: int) -> "Regime":
        """The regime of unchanged dynamics: zero error (any probe)."""
        return cls(torch.zeros(regime_state_dim), torch.zeros(action_dim), torch.zeros(error_dim))

    def batch(self, n: int) -> dict[str, Tensor]:
        """Conditioning keyword arguments for ``n`` actions."""
        return {"regime_state": self.state.expand(n, -1), "probe_action": self.probe_action.expand(n, -1),
                "state_error": self.state_error.expand(n, -1)}


def _uniform(generator: torch.Generator, n: int, low, high) -> Tensor:
    low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
    return low + (high - low) * torch.rand(n, low.shape[0], generator=generator)


def _random_multipliers(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float,
                        keep_nominal: float, flip: float) -> Tensor:
    magnitude = torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.rand(shape, generator=generator))
    sign = torch.where(torch.rand(shape, generator=generator) < flip, -1.0, 1.0)
    return torch.where(torch.rand(shape, generator=generator) < keep_nominal, torch.ones(shape), magnitude * sign)


def _registered(error: Tensor, threshold: float, planned: Tensor, intended: Tensor) -> tuple[Tensor, Tensor]:
    """What the controller registers: an error under the threshold reads as nominal, so its target is the plan."""
    small = torch.linalg.vector_norm(error, dim=-1, keepdim=True) < threshold
    return torch.where(small, torch.zeros_like(error), error), torch.where(small, planned, intended)


PAPER_GAINS = ((-1.0, 2.0), (-2.5, 1.0), (2.5, 0.05), (1.0, -1.0), (1.0, -0.5), (-1.0, 1.0), (-0.5, 1.0),
               (2.0, 2.0), (-1.0, -1.0), (0.1, -1.5), (-0.5, 0.5))


def unicycle_afm_batch(task, n: int, generator: torch.Generator, *, gains: Sequence[tuple[float, float]] | None = None,
                       gain_low: float = 0.1, gain_high: float = 3.0, keep_nominal: float = 0.3,
                       flip: float = 0.5) -> dict[str, Tensor]:
    """Analytic AFM pairs for :class:`~flowzoo.robotics.afm_sim.UnicycleTask` under random gains.

    With ``gains`` (e.g. :data:`PAPER_GAINS`, the paper's 11 pairs) a pair is drawn from them, or (1, 1) with
    probability ``keep_nominal``. Otherwise each gain is 1 with probability ``keep_nominal``, else log-uniform in
    [gain_low, gain_high] with its sign flipped with probability ``flip``. The probe executes a random action
    from a random heading (its error is registered as :class:`AFMController` would); the intended
    action is ``clip(planned / gain)``. Returns a FlowMatchingLoss batch (``x0`` planned, ``x1`` intended, regime).
    """
    if gains is None:
        gains = _random_multipliers(generator, (n, 2), gain_low, gain_high, keep_nominal, flip)
    else:
        try:
            table = torch.tensor([(1.0, 1.0), *gains], dtype=torch.float32)
        except (TypeError, ValueError):
            table = torch.zeros(0)
        if table.dim() != 2 or table.shape[1] != 2 or not bool(torch.isfinite(table).all()):
            raise ConfigError(expected("gains as (g_v, g_w) pairs", gains, "pass e.g. PAPER_GAINS"))
        pick = torch.randint(1, len(table), (n,), generator=generator)
        gains = table[torch.where(torch.rand(n, generator=generator) < keep_nominal, 0, pick)]
    low, high = task.action_low, task.action_high
    probe_states = torch.zeros(n, 3)
    probe_states[:, 2] = (torch.rand(n, generator=generator) * 2 - 1) * math.pi
    probe_actions = _uniform(generator, n, low, high)
    error = task.state_error(task.nominal_step(probe_states, probe_actions),
                             task.nominal_step(probe_states, probe_actions, gains))
    planned = _uniform(generator, n, low, high)
    intended = torch.maximum(torch.minimum(planned / gains, torch.as_tensor(high, dtype=torch.float32)),
                             torch.as_tensor(low, dtype=torch.float32))
    error, intended = _registered(error, task.misalignment_threshold, planned, intended)
    return {"x0": planned, "x1": intended, "regime_state": task.regime_features(probe_states),
            "probe_action": probe_actions, "state_error": task.regime_error(probe_states, error)}


def point_mass_regime_maps(task, regimes: int, generator: torch.Generator, *, keep_nominal: float = 0.3,
                           flip: float = 0.5) -> tuple[Tensor, Tensor]:
    """Random mass/friction/gain regimes of a :class:`~flowzoo.robotics.afm_sim.PointMassTask` as linear maps.

    Mass and friction multipliers are log-uniform in [0.5, 3], the gain's magnitude in [0.3, 2] with its sign
    flipped with probability ``flip``; each is nominal with probability ``keep_nominal``. Returns the stacked
    ``A`` (R, 4, 4) and ``B`` (R, 4, 2) of ``s' = A s + B a``, identified from the simulator.
    """
    multipliers = _random_multipliers(generator, (regimes, 3), 0.5, 3.0, keep_nominal, 0.0)
    gain = _random_multipliers(generator, (regimes,), 0.3, 2.0, keep_nominal, flip)
    maps = [task.linear_model(float(m), float(f), float(g)) for (m, f, _), g in zip(multipliers, gain)]
    return (torch.as_tensor(np.stack([a for a, _ in maps]), dtype=torch.float32),
            torch.as_tensor(np.stack([b for _, b in maps]), dtype=torch.float32))


def point_mass_afm_batch(task, n: int, generator: torch.Generator, maps: tuple[Tensor, Tensor],
                         speed: float = 1.0) -> dict[str, Tensor]:
    """Analytic AFM pairs for :class:`~flowzoo.robotics.afm_sim.PointMassTask` over regimes from
    :func:`point_mass_regime_maps`.

    The intended action is the least-squares action of the changed map that reproduces the nominal step of the
    planned action from a random state with speeds up to ``speed``, clipped to the limits; the probe is a random
    action from another random state.
    """
    a_changed, b_changed = maps
    regimes = a_changed.shape[0]
    a_nominal, b_nominal = (torch.as_tensor(m, dtype=torch.float32) for m in task.linear_model())
    which = torch.randint(0, regimes, (n,), generator=generator)
    low, high = task.action_low, task.action_high

    def random_states() -> Tensor:
        states = torch.zeros(n, 4)
        states[:, 2:] = (torch.rand(n, 2, generator=generator) * 2 - 1) * speed
        return states

    probe_states, probe_actions = random_states(), _uniform(generator, n, low, high)
    realised = torch.einsum("nij,nj->ni", a_changed[which], probe_states) + \
        torch.einsum("nij,nj->ni", b_changed[which], probe_actions)
    error = realised - (probe_states @ a_nominal.T + probe_actions @ b_nominal.T)
    states, planned = random_states(), _uniform(generator, n, low, high)
    wanted = states @ a_nominal.T + planned @ b_nominal.T - torch.einsum("nij,nj->ni", a_changed[which], states)
    intended = torch.einsum("nij,nj->ni", torch.linalg.pinv(b_changed)[which], wanted)
    intended = torch.maximum(torch.minimum(intended, torch.as_tensor(high, dtype=torch.float32)),
                             torch.as_tensor(low, dtype=torch.float32))
    error, intended = _registered(error, task.misalignment_threshold, planned, intended)
    return {"x0": planned, "x1": intended, "regime_state": task.regime_features(probe_states),
            "probe_action": probe_actions, "state_error": task.regime_error(probe_states, error)}


class ActionFlowMatching:
    """The AFM flow with its objective, optimiser, pre-training and online learning.

    Batches hold ``x0`` (planned actions, (B, A)), ``x1`` (intended actions) and the regime keys
    (:data:`REGIME_KEYS`); when the net is lifted they are padded with zeros and trained on :class:`LiftedPath`,
    otherwise on the core's :class:`~flowzoo.core.paths.CondOTPath`.

    Args:
        net: an :class:`ActionFlowNet`. lr: Adam learning rate. steps: midpoint steps at inference (10).
        seed: seed of the training randomness.
    """

    def __init__(self, net: ActionFlowNet, lr: float = 1e-3, steps: int = 10, seed: int = 0):
        if not isinstance(net, ActionFlowNet):
            raise ConfigError(expected("an ActionFlowNet", type(net).__name__, "build ActionFlowNet(...) first"))
        self.net, self.steps = net, int(steps)
        self.objective = FlowMatchingLoss(path=LiftedPath(seed=seed) if net.lifted else CondOTPath())
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)

    def lift_actions(self, actions: Tensor) -> Tensor:
        """Pad actions (B, A) with the zero lift when the net is lifted."""
        if actions.dim() != 2 or actions.shape[1] != self.net.action_dim:
            raise ShapeError(expected(f"actions of shape (B, {self.net.action_dim})", tuple(actions.shape),
                                      "pass a batch of actions of the task's size"))
        return torch.cat([actions, torch.zeros_like(actions)], dim=1) if self.net.lifted else actions

    def train_step(self, batch: dict[str, Tensor]) -> float:
        """One Adam step of conditional flow matching on a batch (``x0`` planned, ``x1`` intended, regime keys)."""
        missing = sorted({"x0", "x1", *REGIME_KEYS} - set(batch))
        if missing:
            raise ConfigError(expected(f'a batch with "x0" (planned), "x1" (intended) and {list(REGIME_KEYS)}',
                                       f"missing {missing}", "build it with unicycle_afm_batch or alike"))
        batch = {**batch, "x0": self.lift_actions(batch["x0"]), "x1": self.lift_actions(batch["x1"])}
        loss, _ = self.objective(self.net, batch, generator=self.generator)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def pretrain(self, sample_batch: Callable[[torch.Generator], dict[str, Tensor]], steps: int = 3000,
                 progress: bool = False) -> float:
        """Offline pre-training on ``sample_batch(generator)``; sets the error scale from a first batch."""
        errors = sample_batch(self.generator)["state_error"]
        registered = errors[torch.linalg.vector_norm(errors, dim=1) > 0]
        scale = registered.abs().mean(0) if len(registered) else torch.ones(errors.shape[1])
        # A dimension that barely moves (e.g. the sideways error of a unicycle) must not be blown up to O(1) noise.
        self.net.error_scale.copy_(scale.clamp_min(1e-2 * float(scale.max())))
        loss = float("nan")
        for _ in tqdm(range(steps), desc="AFM pre-training", disable=not progress, leave=False):
            loss = self.train_step(sample_batch(self.generator))
        return loss

    @torch.no_grad()
    def transform(self, planned: Tensor, regime: Regime) -> Tensor:
        """Integrate the flow from planned actions (B, A) or (A,) at t = 0 to intended actions at t = 1."""
        planned = torch.as_tensor(planned, dtype=torch.float32)
        single = planned.dim() == 1
        x = planned[None] if single else planned
        out = integrate(self.net, self.lift_actions(x), method="midpoint", steps=self.steps,
                        cond=regime.batch(x.shape[0])).x[:, :self.net.action_dim]
        return out[0] if single else out


class AFMController:
    """MPPI planning on a fixed model + Action Flow Matching with regime detection and online learning.

    Call :meth:`act` for the action to execute, then :meth:`observe` with the realised next state.

    Args:
        task: supplies ``action_low/high``, ``regime_features``, ``state_error``, ``nominal_inverse`` and
            ``misalignment_threshold``. planner: an MPPI planner. dynamics: the planner's one-step model (its
            prediction of the planned action's outcome is compared with reality). afm: a pre-trained
            :class:`ActionFlowMatching`.
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
        if isinstance(probe_interval, bool) or not isinstance(probe_interval, int) or probe_interval < 1:
            raise ConfigError(expected("probe_interval as an integer >= 1", repr(probe_interval), "use e.g. 10"))
        self.probe_interval = probe_interval
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
