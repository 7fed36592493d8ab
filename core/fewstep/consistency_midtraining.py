r"""Consistency Mid-Training (CMT): initialise a flow map on chords of a teacher's ODE trajectories.

Hu, Lai, Wu, Mitsufuji, Ermon, "MeanFlow Transformers with Representation Autoencoders" (MF-RAE, arXiv 2511.13019,
§3; ``training_losses_cmt_v2`` in sony/mf-rae, after sony/cmt). A pretrained velocity teacher :math:`v_\phi` is
integrated from source samples on a fixed grid :math:`0 = t_0 < \dots < t_K = 1`, giving a trajectory
:math:`\{x_{t_k}\}`. For index pairs i < j the chord velocity

.. math::  \bar u_{ij} = \frac{x_{t_j} - x_{t_i}}{t_j - t_i}

is the teacher's own average velocity over :math:`[t_i, t_j]` (exact as the solver's error vanishes), so a
flow map is regressed on it with plain MSE: :math:`\| u_\theta(x_{t_i}, t_i, t_j) - \bar u_{ij} \|^2`. No
bootstrapping, no JVP: a trajectory-aware initialisation before MeanFlow distillation (``flowzoo.core.fewstep.meanflow``).

Time convention. MF-RAE runs noise at τ = 1 and pairs "i > j" with the state at the noisier τ_i; in flowzoo time
(t = 1 − τ) that is i < j with the state at the EARLIER time t_i, the time the jump starts from, and the chord
sign flips with the velocity (theirs ε − x, ours x1 − x0).

Teacher rollouts dominate the cost, so :class:`TrajectoryBank` keeps trajectories generated once and
:class:`ConsistencyMidTrainingLoss` can draw its pairs from it.

Example:
    >>> import torch
    >>> teacher = lambda x, t: torch.ones_like(x)        # dx/dt = 1: every chord velocity is 1
    >>> objective = ConsistencyMidTrainingLoss(teacher, steps=4, pairs_per_sample=2)
    >>> loss, metrics = objective(lambda x, s, t: torch.ones_like(x), {"x1": torch.zeros(8, 2)})
    >>> loss.item() < 1e-12
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from flowzoo.core.validation import broadcast_time, check_positive_int, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.batching import (call_flowmap, per_sample_mean, raise_if_batch_not_finite, reduce_weighted,
                                   unpack_batch)
from flowzoo.core.sampling import FIXED_STEP_METHODS, integrate, uniform_grid

__all__ = ["teacher_trajectory", "TrajectoryBank", "ConsistencyMidTrainingLoss"]

Tensor = torch.Tensor


def _check_solver(solver: object) -> str:
    if solver not in FIXED_STEP_METHODS:
        raise ConfigError(expected(f"solver in {list(FIXED_STEP_METHODS)} (a fixed grid)", repr(solver),
                                   "use 'euler' or 'heun'; adaptive solvers do not give states on a fixed grid"))
    return solver


def _grid(steps: int, time_grid, like: Tensor) -> Tensor:
    if time_grid is None:
        return uniform_grid(steps, dtype=like.dtype, device=like.device)
    grid = check_tensor(torch.as_tensor(time_grid, dtype=like.dtype), "time_grid").to(like.device)
    if grid.dim() != 1 or grid.shape[0] < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ConfigError(expected("an increasing 1-D time_grid with at least 2 times (source → data)",
                                   f"shape {tuple(grid.shape)}", "pass e.g. uniform_grid(16)"))
    return grid


@dataclass
class TrajectoryBank:
    """Teacher trajectories kept for reuse: ``states`` (K+1, N, ...) at ``times`` (K+1,), with conditioning.

    Build one with :meth:`generate`; :class:`ConsistencyMidTrainingLoss` draws rows from it.
    """

    states: Tensor
    times: Tensor
    cond: dict[str, Tensor]

    @classmethod
    def generate(cls, teacher: Callable[..., Tensor], x0: Tensor, steps: int = 16, *, solver: str = "euler",
                 time_grid=None, cond: Mapping[str, Tensor] | None = None, chunk: int | None = None
                 ) -> "TrajectoryBank":
        """Roll the teacher out from ``x0`` (in chunks of ``chunk`` rows to bound memory) and keep everything."""
        x0 = check_tensor(x0, "x0")
        cond = dict(cond or {})
        chunk = x0.shape[0] if chunk is None else check_positive_int(chunk, "chunk", fix="pass e.g. chunk=16")
        parts = []
        for start in range(0, x0.shape[0], chunk):
            sub = {k: v[start:start + chunk] for k, v in cond.items()}
            result = teacher_trajectory(teacher, x0[start:start + chunk], steps, solver=solver,
                                        time_grid=time_grid, cond=sub)
            parts.append(result.trajectory)
        return cls(torch.cat(parts, dim=1), result.times, cond)

    def __len__(self) -> int:
        return self.states.shape[1]


def teacher_trajectory(teacher: Callable[..., Tensor], x0: Tensor, steps: int = 16, *, solver: str = "euler",
                       time_grid=None, cond: Mapping[str, Tensor] | None = None):
    r"""Integrate the teacher's ODE from source samples on a fixed grid and keep every state (no gradient).

    Args:
        teacher: velocity model ``teacher(x, t, **cond)``.
        x0: source samples at t = 0, shape (B, ...).
        steps: number of uniform steps (ignored when ``time_grid`` is given).
        solver: a fixed-step method of :func:`flowzoo.core.sampling.ode.integrate` ("euler", "heun", "midpoint", "rk4").
        time_grid: an increasing grid from the source side to the data side instead of ``steps``.
        cond: conditioning passed to the teacher.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult` with ``trajectory`` (len(times), B, ...) and ``times``.

    Example:
        >>> out = teacher_trajectory(lambda x, t: torch.ones_like(x), torch.zeros(2, 1), steps=4)
        >>> out.trajectory[:, 0, 0].tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if not callable(teacher):
        raise ConfigError(expected("teacher as a velocity model teacher(x, t, **cond)", type(teacher).__name__,
                                   "pass a trained velocity network"))
    x0 = check_tensor(x0, "x0")
    solver = _check_solver(solver)
    grid = _grid(check_positive_int(steps, "steps", fix="pass e.g. steps=16"), time_grid, x0)
    with torch.no_grad():
        return integrate(teacher, x0, method=solver, time_grid=grid, cond=cond, return_trajectory=True)


class ConsistencyMidTrainingLoss:
    r"""CMT: :math:`E\,w\,\| u_\theta(x_{t_i}, t_i, t_j) - (x_{t_j} - x_{t_i})/(t_j - t_i) \|^2` over teacher chords.

    Each call draws source samples (``batch["x0"]`` or Gaussian noise shaped like ``batch["x1"]``; the data
    themselves are not used), rolls the teacher out on the grid (no gradient; or draws B rows from ``bank``),
    and picks ``pairs_per_sample`` index pairs i < j per trajectory, uniformly among all K(K+1)/2 pairs of the
    grid, as MF-RAE does (``training_losses_cmt_v2`` draws 64 of all pairs per batch). One gradient call on
    B·pairs_per_sample inputs.

    Args:
        teacher: velocity model ``teacher(x, t, **cond)``, the same time convention as flowzoo (0 = source).
        steps: number of uniform grid steps K of the rollout (``time_grid`` overrides).
        pairs_per_sample: pairs drawn per trajectory and call.
        solver: fixed-step solver of the rollout ("euler", "heun", "midpoint", "rk4").
        time_grid: increasing grid from 0 to 1 instead of ``steps`` (MF-RAE: the teacher's sampling grid).
        bank: a :class:`TrajectoryBank` to draw trajectories from instead of rolling out every call; the
            bank's conditioning replaces the batch's, and batch weights are ignored.

    Returns from ``loss(model, batch, generator=None)``: ``(loss, metrics)`` with ``loss``, ``gap_mean`` (mean
    t_j − t_i) and, with weights, ``mse`` and ``weight_mean``.

    Example:
        >>> objective = ConsistencyMidTrainingLoss(lambda x, t: -x, steps=8, pairs_per_sample=3)
        >>> loss, metrics = objective(lambda x, s, t: torch.zeros_like(x), {"x1": torch.randn(4, 2)})
        >>> sorted(metrics)
        ['gap_mean', 'loss']
    """

    def __init__(self, teacher: Callable[..., Tensor], steps: int = 16, pairs_per_sample: int = 4,
                 solver: str = "euler", time_grid=None, bank: TrajectoryBank | None = None):
        if not callable(teacher):
            raise ConfigError(expected("teacher as a velocity model teacher(x, t, **cond)", type(teacher).__name__,
                                       "pass a trained velocity network"))
        self.teacher = teacher
        self.steps = check_positive_int(steps, "steps", fix="pass e.g. steps=16")
        self.pairs_per_sample = check_positive_int(pairs_per_sample, "pairs_per_sample",
                                                   fix="pass e.g. pairs_per_sample=16")
        self.solver = _check_solver(solver)
        self.time_grid = time_grid
        if time_grid is not None:
            _grid(self.steps, time_grid, torch.zeros(1))
        if bank is not None and not isinstance(bank, TrajectoryBank):
            raise ConfigError(expected("bank as a TrajectoryBank", type(bank).__name__,
                                       "build one with TrajectoryBank.generate(teacher, x0, steps)"))
        self.bank = bank

    def __repr__(self) -> str:
        return (f"ConsistencyMidTrainingLoss(steps={self.steps}, pairs_per_sample={self.pairs_per_sample}, "
                f"solver={self.solver!r}, bank={'None' if self.bank is None else len(self.bank)})")

    def generate_bank(self, x0: Tensor, cond: Mapping[str, Tensor] | None = None,
                      chunk: int | None = None) -> TrajectoryBank:
        """Roll the teacher out once from ``x0`` with this loss's grid and solver and use the result as its bank."""
        self.bank = TrajectoryBank.generate(self.teacher, x0, self.steps, solver=self.solver,
                                            time_grid=self.time_grid, cond=cond, chunk=chunk)
        return self.bank

    def _trajectories(self, batch: Mapping[str, Tensor], generator: torch.Generator | None):
        if self.bank is None:
            data = unpack_batch(batch, generator)
            result = teacher_trajectory(self.teacher, data.x0, self.steps, solver=self.solver,
                                        time_grid=self.time_grid, cond=data.cond)
            return result.trajectory, result.times, data.cond, data.weight
        x1 = check_tensor(batch.get("x1") if isinstance(batch, Mapping) else None, 'batch["x1"]')
        if tuple(x1.shape[1:]) != tuple(self.bank.states.shape[2:]):
            raise ShapeError(expected(f"data shaped like the bank's states {tuple(self.bank.states.shape[2:])}",
                                      f"shape {tuple(x1.shape[1:])}", "build the bank from source samples "
                                      "shaped like the data"))
        rows = torch.randint(len(self.bank), (x1.shape[0],), generator=generator).to(self.bank.states.device)
        cond = {k: v[rows] for k, v in self.bank.cond.items()}
        return self.bank.states[:, rows], self.bank.times, cond, None

    def __call__(self, model: Callable[..., Tensor], batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        states, times, cond, weight = self._trajectories(batch, generator)
        n_times, n = states.shape[0], states.shape[1]
        pairs = torch.triu_indices(n_times, n_times, offset=1)  # (2, P): every i < j
        k = self.pairs_per_sample
        pick = torch.randint(pairs.shape[1], (n * k,), generator=generator)
        i, j = pairs[0, pick].to(states.device), pairs[1, pick].to(states.device)
        rows = torch.arange(n, device=states.device).repeat_interleave(k)
        x_i, x_j = states[i, rows], states[j, rows]
        s, t = times[i], times[j]
        target = (x_j - x_i) / broadcast_time(t - s, x_i)
        sub = {key: value.repeat_interleave(k, dim=0) for key, value in cond.items()}
        prediction = call_flowmap(model, x_i, s, t, sub)
        per_sample = per_sample_mean((prediction - target.detach()) ** 2)
        w = None if weight is None else weight.repeat_interleave(k)
        loss = reduce_weighted(per_sample, w)
        values = [loss.detach(), (t - s).mean()]
        names = ["loss", "gap_mean"]
        if w is not None:
            names += ["mse", "weight_mean"]
            values += [per_sample.detach().mean(), w.mean()]
        metrics = dict(zip(names, torch.stack([v.double().cpu() for v in values]).tolist()))
        if not math.isfinite(metrics["loss"]) and isinstance(batch, Mapping):
            raise_if_batch_not_finite(batch)
        return loss, metrics
