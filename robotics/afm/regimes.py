r"""Dynamics regimes of Action Flow Matching and its analytic pre-training pairs (Mallo et al., RSS 2025,
arXiv 2504.18471).

A *dynamics regime* :math:`c = (s_p, a_p, e_p)` conditions the AFM flow (:mod:`flowzoo.robotics.afm.method`): a probe
state, the raw action executed there, and the state error it caused (realised − predicted next state). A
:class:`Regime` holds one and expands it to a batch of conditioning keyword arguments (:data:`REGIME_KEYS`).

Offline pre-training data are generated analytically, batches for :class:`flowzoo.core.objectives.FlowMatchingLoss`
with ``x0`` = planned and ``x1`` = intended actions: for the unicycle with gains :math:`(g_v, g_\omega)`,
:math:`a^\star = \mathrm{clip}(a_{\rm plan} / g)` (:func:`unicycle_afm_batch`; :data:`PAPER_GAINS` are the
paper's 11 gain pairs); for the linear MuJoCo point mass, the least-squares action of the changed model that
matches the nominal step (:func:`point_mass_regime_maps`, :func:`point_mass_afm_batch`). The probe's error is
registered as :class:`~flowzoo.robotics.afm.controller.AFMController` would: under the task's threshold it
reads as zero (nominal dynamics), and the target is then the plan itself.

All names are also importable from :mod:`flowzoo.robotics.afm.method`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, expected

__all__ = ["Regime", "REGIME_KEYS", "PAPER_GAINS", "unicycle_afm_batch", "point_mass_regime_maps",
           "point_mass_afm_batch"]

Tensor = torch.Tensor
REGIME_KEYS = ("regime_state", "probe_action", "state_error")


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
    """Analytic AFM pairs for :class:`~flowzoo.robotics.afm.sim.UnicycleTask` under random gains.

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
    """Random mass/friction/gain regimes of a :class:`~flowzoo.robotics.afm.sim.PointMassTask` as linear maps.

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
    """Analytic AFM pairs for :class:`~flowzoo.robotics.afm.sim.PointMassTask` over regimes from
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
