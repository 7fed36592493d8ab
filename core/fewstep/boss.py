r"""BOSS: Bellman Optimal Step-size Straightening (Nguyen, Nguyen, Nguyen, arXiv 2312.16414).

Few-step sampling of a pretrained velocity model in two phases.

**Phase 1, step sizes.** Roll out reference Euler trajectories :math:`x_{t_0}, \dots, x_{t_K}` on a fine
uniform grid (K = ``fine_steps``, t = 0 source → t = 1 data, the RectifiedFlow direction the paper uses) and
measure the error of one Euler jump between any two grid times (paper §3.1, the "l2_pixel" cost):

.. math::  c_{ij} = E\,\|x_{t_i} + v(x_{t_i}, t_i)(t_j - t_i) - x_{t_j}\|^2, \qquad i < j,

(sum over the data dimensions, mean over samples; :math:`+\infty` on and below the diagonal). A dynamic
program picks the N-jump path 0 = i_0 < i_1 < … < i_N = K of least summed cost (paper §3.2, Bellman's
principle):

.. math::  D_i^{(1)} = c_{iK}, \qquad D_i^{(k)} = \min_{j > i}\; c_{ij} + D_j^{(k-1)},

backtracked from :math:`(0, N)`. **The DP is a heuristic**: it treats the per-jump errors as additive and
measures each jump from the *reference* state :math:`x_{t_i}`, whereas the deployed sampler starts each jump
from its own (already wrong) state, so error propagation is ignored. The costs also come from the Euler
reference at K steps, not the exact ODE, so K must be fine enough.

**Phase 2, straightening ("redress").** Generate :math:`(x_{\tau_k}, x_{\tau_{k+1}})` along the chosen
times :math:`\tau` with the fine solver and fine-tune :math:`v_\theta(x_{\tau_k}, \tau_k)` towards the chord
:math:`(x_{\tau_{k+1}} - x_{\tau_k})/(\tau_{k+1} - \tau_k)` (paper §3.3), so that Euler on the BOSS grid
follows the teacher: :class:`BossStraighteningLoss`.

Example:
    >>> import torch
    >>> from flowzoo.core.sampling import integrate
    >>> field = lambda x, t: -x * (3 * t[:, None] ** 2)   # curved late in time
    >>> grid = boss_time_grid(field, torch.randn(64, 2), num_steps=3, fine_steps=30)
    >>> len(grid), float(grid[0]), float(grid[-1])
    (4, 0.0, 1.0)
    >>> integrate(field, torch.randn(8, 2), time_grid=grid).nfe
    3
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flowzoo.core.validation import as_time, check_positive_int, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.batching import call_model, per_sample_mean, reduce_weighted, unpack_batch
from flowzoo.core.sampling import FIXED_STEP_METHODS, integrate, uniform_grid

__all__ = [
    "boss_cost_matrix",
    "bellman_steps",
    "boss_time_grid",
    "boss_redress_states",
    "BossStraighteningLoss",
]

Tensor = torch.Tensor
Model = Callable[..., Tensor]


@torch.no_grad()
def boss_cost_matrix(model: Model, x0: Tensor, *, fine_steps: int = 100,
                     cond: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    r"""The BOSS cost :math:`c_{ij}` of one Euler jump from :math:`t_i` to :math:`t_j` on a fine Euler reference.

    Args:
        model: velocity model ``model(x, t, **cond)``.
        x0: source samples (B, ...) at t = 0 (the paper uses ~100 trajectories).
        fine_steps: K, the number of uniform Euler steps of the reference.
        cond: conditioning passed to the model.

    Returns:
        ``(cost, grid)``: ``cost`` is (K + 1, K + 1) float64 with finite entries only for i < j (sum over data
        dimensions, mean over the batch); ``grid`` is the fine grid (K + 1,). The reference costs exactly K
        model calls: the velocity of each Euler step is reused as the velocity of the jump that starts there.

    Example:
        >>> cost, grid = boss_cost_matrix(lambda x, t: torch.ones_like(x), torch.zeros(4, 2), fine_steps=4)
        >>> float(cost[0, 4]), bool(torch.isinf(cost[2, 1]))  # constant field: Euler is exact
        (0.0, True)
    """
    fine_steps = check_positive_int(fine_steps, "fine_steps", fix="pass e.g. fine_steps=100")
    x = check_tensor(x0, "x0")
    grid = uniform_grid(fine_steps, dtype=x.dtype, device=x.device)
    states, velocities = [x], []
    for i in range(fine_steps):
        v = call_model(model, x, as_time(grid[i], x.shape[0], x), dict(cond or {}))
        velocities.append(v)
        x = x + (grid[i + 1] - grid[i]) * v
        states.append(x)
    traj = torch.stack(states).flatten(2).double()          # (K+1, B, D)
    vel = torch.stack(velocities).flatten(2).double()       # (K, B, D)
    times = grid.double()
    cost = torch.full((fine_steps + 1, fine_steps + 1), float("inf"), dtype=torch.float64, device=x.device)
    for i in range(fine_steps):
        dt = (times[i + 1:] - times[i]).reshape(-1, 1, 1)
        jump = traj[i][None] + dt * vel[i][None] - traj[i + 1:]
        cost[i, i + 1:] = jump.square().sum(-1).mean(-1)
    if not bool(torch.isfinite(cost[torch.triu(torch.ones_like(cost, dtype=torch.bool), 1)]).all()):
        raise ConfigError(expected("a finite reference trajectory", "NaN/Inf in the BOSS costs",
                                   "check the model for NaN outputs"))
    return cost, grid


def _check_cost(cost: object) -> Tensor:
    cost = check_tensor(cost, "cost", min_dim=2, finite=False)
    if cost.dim() != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ShapeError(expected("a square (K + 1, K + 1) cost matrix with K >= 1", f"shape {tuple(cost.shape)}",
                                  "pass the first output of boss_cost_matrix"))
    upper = torch.triu(torch.ones_like(cost, dtype=torch.bool), 1)
    if bool(torch.isnan(cost).any()) or not bool(torch.isfinite(cost[upper]).all()):
        raise ConfigError(expected("finite costs above the diagonal (and no NaN)", "NaN/Inf entries",
                                   "recompute the cost matrix"))
    if bool((cost[upper] < 0).any()):
        raise ConfigError(expected("non-negative costs", f"minimum {float(cost[upper].min()):.4g}",
                                   "costs are squared errors"))
    return cost


def bellman_steps(cost: Tensor, num_steps: int) -> list[int]:
    r"""Indices :math:`0 = i_0 < \dots < i_N = K` minimising :math:`\sum_k c_{i_k i_{k+1}}` (exactly N jumps).

    Dynamic programming over the upper triangle (only entries i < j are read):
    :math:`D_i^{(1)} = c_{iK}`, :math:`D_i^{(k)} = \min_{j>i} c_{ij} + D_j^{(k-1)}`, O(N K²), in float64.

    Args:
        cost: (K + 1, K + 1) matrix, e.g. from :func:`boss_cost_matrix`.
        num_steps: N, between 1 and K.

    Example:
        >>> c = torch.tensor([[0., 5., 1., 9.], [0., 0., 1., 1.], [0., 0., 0., 1.], [0., 0., 0., 0.]])
        >>> bellman_steps(c, 2), bellman_steps(c, 1)
        ([0, 2, 3], [0, 3])
    """
    cost = _check_cost(cost).detach().to("cpu", torch.float64)
    last = cost.shape[0] - 1
    num_steps = check_positive_int(num_steps, "num_steps", fix=f"pass e.g. num_steps={min(4, last)}")
    if num_steps > last:
        raise ConfigError(expected(f"num_steps <= K = {last} (the fine grid's steps)", num_steps,
                                   "use fewer steps or a finer cost matrix"))
    inf = float("inf")
    dp = torch.full((last + 1, num_steps + 1), inf, dtype=torch.float64)
    choice = torch.full((last + 1, num_steps + 1), -1, dtype=torch.long)
    dp[:last, 1] = cost[:last, last]
    choice[:last, 1] = last
    for k in range(2, num_steps + 1):
        for i in range(last - k + 1):              # k jumps need at least k grid intervals
            totals = cost[i, i + 1:last] + dp[i + 1:last, k - 1]
            best = int(torch.argmin(totals))
            dp[i, k], choice[i, k] = totals[best], i + 1 + best
    path, i = [0], 0
    for k in range(num_steps, 0, -1):
        i = int(choice[i, k])
        path.append(i)
    return path


def boss_time_grid(model: Model, x0: Tensor, num_steps: int, fine_steps: int = 100,
                   cond: Mapping[str, Any] | None = None) -> Tensor:
    """The BOSS time grid for ``num_steps`` Euler steps, ready for ``integrate(model, x, time_grid=...)``.

    Costs ``fine_steps`` model calls on ``x0`` (see :func:`boss_cost_matrix`); reuse the cost matrix with
    :func:`bellman_steps` when you need several step counts.
    """
    cost, grid = boss_cost_matrix(model, x0, fine_steps=fine_steps, cond=cond)
    return grid[bellman_steps(cost, num_steps)].clone()


def _check_grid(grid: object) -> Tensor:
    grid = check_tensor(torch.as_tensor(grid, dtype=torch.float32) if not isinstance(grid, Tensor) else grid,
                        "grid")
    if grid.dim() != 1 or grid.shape[0] < 2 or not bool((grid[1:] > grid[:-1]).all()) \
            or float(grid[0]) < 0 or float(grid[-1]) > 1:
        raise ConfigError(expected("a strictly increasing 1-D grid inside [0, 1] with at least 2 times",
                                   grid.tolist() if grid.numel() < 12 else f"shape {tuple(grid.shape)}",
                                   "pass the output of boss_time_grid"))
    return grid


@torch.no_grad()
def boss_redress_states(teacher: Model, x0: Tensor, grid: Tensor | Sequence[float], *, fine_steps: int = 100,
                        method: str = "euler", cond: Mapping[str, Any] | None = None) -> Tensor:
    """Teacher states at the chosen times: (len(grid), B, ...), integrated with the fine solver.

    Each jump [τ_k, τ_{k+1}] is split into ``max(1, round(fine_steps·(τ_{k+1} − τ_k)))`` steps of ``method``,
    so for a BOSS grid (a subset of the uniform fine grid) and ``method="euler"`` the states equal the
    reference trajectory that the costs were measured on.
    """
    fine_steps = check_positive_int(fine_steps, "fine_steps", fix="pass e.g. fine_steps=100")
    if method not in FIXED_STEP_METHODS:
        raise ConfigError(expected(f"method in {list(FIXED_STEP_METHODS)}", repr(method), "use 'euler'"))
    x = check_tensor(x0, "x0")
    grid = _check_grid(grid).to(x.device, x.dtype)
    states = [x]
    for k in range(len(grid) - 1):
        sub = max(1, round(fine_steps * float(grid[k + 1] - grid[k])))
        x = integrate(teacher, x, method=method, steps=sub, t0=float(grid[k]), t1=float(grid[k + 1]),
                      cond=cond).x
        states.append(x)
    return torch.stack(states)


class BossStraighteningLoss:
    r"""BOSS redress loss (paper §3.3):

    .. math::  E_k\, \|v_\theta(x_{\tau_k}, \tau_k) - (x_{\tau_{k+1}} - x_{\tau_k})/(\tau_{k+1} - \tau_k)\|^2.

    The teacher's fine trajectory through the chosen times τ is generated for every batch from the batch's
    source samples (key ``"x0"``; standard Gaussian noise shaped like ``"x1"`` when absent, as in
    :class:`~flowzoo.core.objectives.FlowMatchingLoss`; ``"x1"`` itself is not used as data), then one jump k
    is drawn uniformly per sample. After fine-tuning, Euler on ``grid`` reproduces the teacher's fine solve
    jump by jump (paper §3.3, Alg. 2). Conditioning keys are passed to teacher and student; ``"weight"``
    weights samples. Returns ``(loss, {"loss": ...})``.

    Solving the teacher costs ``fine_steps`` teacher calls per training step. The paper generates its
    redress data once (Alg. 2); to do the same, precompute a bank ``boss_redress_states(teacher, x0_bank,
    grid).movedim(0, 1)`` of shape (N, len(grid), ...) and pass rows of it under the reserved batch key
    ``"trajectory"`` (batch first, like every other key; ``"x0"`` / ``"x1"`` may then be left out): the
    teacher is not called at all.

    Args:
        teacher: the frozen pretrained velocity model.
        grid: the chosen times (e.g. :func:`boss_time_grid`), increasing, inside [0, 1].
        fine_steps: resolution of the teacher's solve (steps per unit time).
        method: fixed-step method of the teacher's solve (default Euler, the BOSS reference).
    """

    def __init__(self, teacher: Model, grid: Tensor | Sequence[float], *, fine_steps: int = 100,
                 method: str = "euler"):
        if not callable(teacher):
            raise ConfigError(expected("a callable teacher velocity model", type(teacher).__name__,
                                       "pass the pretrained model"))
        self.teacher, self.grid = teacher, _check_grid(grid).detach().clone()
        self.fine_steps = check_positive_int(fine_steps, "fine_steps", fix="pass e.g. fine_steps=100")
        if method not in FIXED_STEP_METHODS:
            raise ConfigError(expected(f"method in {list(FIXED_STEP_METHODS)}", repr(method), "use 'euler'"))
        self.method = method

    def __call__(self, model: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        trajectory = batch.get("trajectory") if isinstance(batch, Mapping) else None
        if trajectory is not None:
            batch = self._trajectory_batch(batch, trajectory)
        data = unpack_batch(batch, generator)
        grid = self.grid.to(data.x0.device, data.x0.dtype)
        if trajectory is not None:
            states = trajectory.to(data.x0.dtype).movedim(1, 0)
        else:
            states = boss_redress_states(self.teacher, data.x0, grid, fine_steps=self.fine_steps,
                                         method=self.method, cond=data.cond or None)
        n = data.x0.shape[0]
        k = torch.randint(0, len(grid) - 1, (n,), generator=generator, device="cpu").to(data.x0.device)
        rows = torch.arange(n, device=data.x0.device)
        start, end = states[k, rows], states[k + 1, rows]
        tau, tau_next = grid[k], grid[k + 1]
        target = (end - start) / (tau_next - tau).reshape(n, *([1] * (start.dim() - 1)))
        prediction = call_model(model, start, tau, data.cond)
        loss = reduce_weighted(per_sample_mean((prediction - target) ** 2), data.weight)
        return loss, {"loss": float(loss.detach())}

    def _trajectory_batch(self, batch: Mapping[str, Tensor], trajectory: object) -> dict[str, Tensor]:
        """Check a precomputed ``"trajectory"`` (B, len(grid), ...) and return the batch without it."""
        trajectory = check_tensor(trajectory, 'batch["trajectory"]', min_dim=3)
        if trajectory.shape[1] != len(self.grid):
            raise ShapeError(expected(f'batch["trajectory"] of shape (B, {len(self.grid)}, ...): one teacher state '
                                      "per grid time, batch first", f"shape {tuple(trajectory.shape)}",
                                      "pass rows of boss_redress_states(teacher, x0, grid).movedim(0, 1)"))
        rest = {k: v for k, v in batch.items() if k != "trajectory"}
        rest.setdefault("x0", trajectory[:, 0])
        rest.setdefault("x1", trajectory[:, -1])
        return rest
