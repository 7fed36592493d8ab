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
(:func:`flowzoo.core.sampling.ode.integrate`).

Network (the AFM code's ``ActionFlowMatching``, hidden 64, ELU): an action encoder on :math:`[t, x_t]`, a
dynamics encoder on :math:`[s_p, a_p, e_p]`, and a flow net on their concatenation.

**Deviation: the lifted path (default).** On the straight path a flow of each action entry is a monotone map,
so it cannot send :math:`a \mapsto -a`: a sign-inverted gain — the paper's hardest cases, e.g. (−1, 1) — makes
every line cross 0 at t = 1/2 and the learned flow averages them to about 0 (``tests/robotics/test_afm.py`` shows
it). :class:`LiftedPath` gives each action entry a lift entry, keeps the straight line where the sign stays, and
turns half a circle through the lift where it flips; a small tube of noise with a pull back to the path keeps
the learned field stable off the path. ``ActionFlowNet(lifted=False)`` trains the paper's plain flow on the
core's :class:`~flowzoo.core.paths.affine.CondOTPath`.

The rest of the method lives beside this module and is re-exported here:

* :mod:`flowzoo.robotics.afm.controller` — :class:`AFMController`: MPPI planning on a fixed model, regime
  detection by probing, and online learning on hindsight-relabelled transitions (the paper's continual setting).
* :mod:`flowzoo.robotics.afm.regimes` — :class:`Regime` (the conditioning :math:`c`) and the analytic offline
  pre-training pairs under random regimes: :func:`unicycle_afm_batch` (with :data:`PAPER_GAINS`),
  :func:`point_mass_regime_maps` and :func:`point_mass_afm_batch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import CondOTPath, PathSample
from flowzoo.core.sampling import integrate
from flowzoo.robotics.afm.regimes import REGIME_KEYS, Regime

__all__ = ["ActionFlowNet", "LiftedPath", "ActionFlowMatching"]

Tensor = torch.Tensor


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


class ActionFlowMatching:
    """The AFM flow with its objective, optimiser, pre-training and online learning.

    Batches hold ``x0`` (planned actions, (B, A)), ``x1`` (intended actions) and the regime keys
    (:data:`REGIME_KEYS`); when the net is lifted they are padded with zeros and trained on :class:`LiftedPath`,
    otherwise on the core's :class:`~flowzoo.core.paths.affine.CondOTPath`.

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
