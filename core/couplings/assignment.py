"""Minibatch OT solvers (internal): the cost matrix, the exact-assignment dispatch, log-domain Sinkhorn.

Exact OT between two batches of equal size with uniform weights is a linear assignment problem
(Birkhoff–von Neumann: the optimal plan can be taken to be a permutation), so
:class:`~flowzoo.core.couplings.minibatch.ExactOTCoupling` solves

    σ* = argmin_σ Σ_i C[i, σ(i)],   C[i, j] = ‖x0_i − x1_j‖²,

with one of three exact solvers: SciPy's ``linear_sum_assignment`` (shortest augmenting path,
Crouse 2016), ``lap.lapjv`` (Jonker–Volgenant 1987; optional package ``lap``, extra
``flowzoo[fast-ot]``), both on the row- and column-reduced cost, or POT's network simplex ``ot.emd``
(Bonneel et al. 2011) followed by the row argmax of its vertex plan. All three return an optimal
permutation; they differ only in speed, and which one is fastest depends on the *structure* of C,
not on the nominal dimension of the samples.

What matters is the rank of the interaction part of the cost. Double-centring C removes the row
and column offsets ‖x0_i‖², ‖x1_j‖² (which do not change the assignment) and leaves
K = −2 X0c X1cᵀ. When K has a low effective rank (2-D toys, or data with few intrinsic dimensions
even if embedded in thousands of pixels) the augmenting-path solvers hit long chains of near-ties
and the network simplex is much faster; when K looks like a full-rank random matrix (noise → images,
high-d Gaussians) the augmenting paths are short and lapjv is much faster than the simplex.
``solver="auto"`` therefore estimates the participation ratio PR(K) = (Σλ)²/Σλ² of KᵀK's
eigenvalues (≈ the intrinsic dimension): exactly from the d×d Gram matrices when samples have at
most 256 numbers, otherwise by a Hutchinson estimate on the cost with 16 fixed probes (refined with 64
probes when it reads below 6); both cost little next to the solve. It dispatches

* n0 ≤ 64: ``scipy`` (every solver is fast at that size);
* PR < 3: ``pot``;
* PR ≥ 25 with ``lap`` installed: ``lap``;
* otherwise (and for PR ≥ 25 without ``lap``): ``scipy``.

Between these, lapjv's speed is erratic (on digits it ran from faster to several times slower than SciPy
depending on the draw), so SciPy is the safe choice. Subtracting the row and then the column minima leaves the
optimum unchanged and shortens the augmenting paths of SciPy and lapjv. The thresholds come from timing the
three solvers (single-thread CPU time; every solver returned the same optimal cost) on costs of known
structure: iid Gaussians of 2 to 3072 dimensions, 8 Gaussians → moons, moons embedded linearly in 3072
dimensions, the 8×8 digits, and 3×32×32 Gaussian fields with 1/f and 1/f² amplitude spectra, at n = 256 to
4096. ``python -m benchmarks.core_vs_peers`` measures the resulting ``ExactOTCoupling`` against torchcfm's
``OTPlanSampler`` (``benchmarks/results/core_vs_peers_ot.json``, on the core docs page).

POT's default limit of 1e5 simplex iterations stops short of the optimum at n=4096 (torchcfm keeps
that default), so ``pot`` raises it and falls back to SciPy if the plan is not a permutation.

The cost matrix is computed in torch on the batch's device as ‖a‖² + ‖b‖² − 2ab (one ``addmm``)
after centring both batches on their joint mean, which keeps the float32 cancellation error near
1e-6 of the mean cost; it costs the same as ``torch.cdist(x0, x1) ** 2`` (both are one GEMM) and is
float64 on the CPU for d ≤ 64, where that is nearly free.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected

__all__ = [
    "SOLVERS",
    "squared_euclidean_cost",
    "interaction_rank",
    "data_interaction_rank",
    "choose_solver",
    "solve_assignment",
    "log_sinkhorn",
]

SOLVERS = ("auto", "scipy", "lap", "pot")

# Dispatch thresholds, from the solver timings described in the module docstring.
POT_BELOW_RANK = 3.0
LAP_FROM_RANK = 25.0
SMALL_ROWS = 64
# Up to this many numbers per sample the rank comes exactly from the data (d×d products).
EXACT_RANK_MAX_DIM = 256
_PROBES = 16


def squared_euclidean_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Return C[i, j] = ‖x0_i − x1_j‖² over flattened samples, shape (n0, n1), clamped at 0.

    Computed as ‖a‖² + ‖b‖² − 2 a·b after subtracting the joint mean (distances are translation
    invariant, and centring shrinks the norms that would otherwise cancel). The matrix is float64
    when an input is float64, or on the CPU for samples of at most 64 numbers, where float64 costs
    about as much as float32 plus the conversion to float64 that the solvers need anyway;
    otherwise float32 (relative error about 1e-6 of the mean cost).
    """
    a = x0.reshape(x0.shape[0], -1)
    b = x1.reshape(x1.shape[0], -1)
    wide = x0.dtype == torch.float64 or x1.dtype == torch.float64 or (a.device.type == "cpu" and a.shape[1] <= 64)
    dtype = torch.float64 if wide else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    center = (a.sum(0) + b.sum(0)) / (a.shape[0] + b.shape[0])
    a = a - center
    b = b - center
    cost = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :]
    cost.addmm_(a, b.T, alpha=-2.0)
    return cost.clamp_min_(0.0)


def interaction_rank(cost: torch.Tensor | np.ndarray, probes: int = _PROBES) -> float:
    """Estimate the participation ratio (Σλ)²/Σλ² of the double-centred cost's spectrum.

    With the centring projectors P = I − 11ᵀ/n0 and Q = I − 11ᵀ/n1, K = P C Q, so KG is
    "centre the columns of C·(QG)" and KᵀKG is "centre Cᵀ·(KG)": two thin matrix products, no
    n² temporary. Hutchinson's estimator with ``probes`` fixed-seed Gaussian columns G gives
    tr(KᵀK) ≈ ‖KG‖²/p and tr((KᵀK)²) ≈ ‖KᵀKG‖²/p; the estimate is deterministic and leaves the global
    RNG alone. It is near the intrinsic dimension of the data (≈ d for i.i.d. Gaussians in d dims).
    """
    c = torch.as_tensor(cost)
    gen = torch.Generator(device=c.device).manual_seed(0)
    g = torch.randn(c.shape[1], probes, generator=gen, device=c.device, dtype=c.dtype)
    kg = c @ (g - g.mean(0))
    kg -= kg.mean(0)
    ktkg = c.T @ kg
    ktkg -= ktkg.mean(0)
    trace = kg.double().square().sum() / probes
    trace_sq = ktkg.double().square().sum() / probes
    return float(trace * trace / trace_sq) if trace_sq > 0 else 0.0


def data_interaction_rank(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """The exact participation ratio of K = −2 X0c X1cᵀ, computed from the samples in O(n d²).

    KᵀK's nonzero eigenvalues are those of the d×d product (X0cᵀX0c)(X1cᵀX1c), so for samples of
    a few hundred numbers this is exact and cheaper than probing the n×n cost.
    """
    a = x0.reshape(x0.shape[0], -1).double()
    b = x1.reshape(x1.shape[0], -1).double()
    a = a - a.mean(0)
    b = b - b.mean(0)
    product = (a.T @ a) @ (b.T @ b)
    trace = product.diagonal().sum()
    trace_sq = (product * product.T).sum()
    return float(trace * trace / trace_sq) if trace_sq > 0 else 0.0


def _lap_available() -> bool:
    try:
        import lap  # noqa: F401
    except ImportError:
        return False
    return True


def choose_solver(cost: torch.Tensor | np.ndarray, rank: float | None = None) -> str:
    """Return the solver that ``"auto"`` uses for ``cost`` (see the rule in the module docstring).

    ``rank`` is the interaction rank if already known (e.g. from :func:`data_interaction_rank`);
    otherwise it is estimated from ``cost``.
    """
    rows = cost.shape[0]
    if rows <= SMALL_ROWS:
        return "scipy"
    if rank is None:
        rank = interaction_rank(cost)
        if rank < 2 * POT_BELOW_RANK:
            # At low rank 16 probes are least precise (2 reads anywhere in 1.2–2.9); 64 narrow it to 1.3–2.5.
            rank = interaction_rank(cost, probes=64)
    if rank < POT_BELOW_RANK:
        return "pot"
    if rank >= LAP_FROM_RANK and _lap_available():
        return "lap"
    return "scipy"


def _reduce(cost: np.ndarray) -> np.ndarray:
    """Subtract row minima, then column minima when every column is used.

    The optimal assignment is unchanged (each row pays its offset once; in a square problem each
    column does too), and the augmenting-path solvers find shorter paths, which makes SciPy and lapjv
    markedly faster on high-rank costs.
    """
    reduced = cost - cost.min(1, keepdims=True)
    if cost.shape[0] == cost.shape[1]:
        reduced -= reduced.min(0, keepdims=True)
    return reduced


def _solve_scipy(cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(_reduce(cost))
    return cols


def _solve_lap(cost: np.ndarray) -> np.ndarray:
    try:
        import lap
    except ImportError as err:
        raise MissingDependencyError(expected(
            "the optional package 'lap' for solver='lap'", "ImportError",
            "pip install flowzoo[fast-ot] (or pass solver='auto', which falls back to SciPy)")) from err
    n0, n1 = cost.shape
    cols, _ = lap.lapjv(_reduce(cost), extend_cost=n0 != n1, return_cost=False)
    return np.asarray(cols[:n0], dtype=np.int64)


def _solve_pot(cost: np.ndarray) -> np.ndarray:
    import ot

    n0, n1 = cost.shape
    if n0 < n1:
        # Zero-cost dummy rows absorb the columns no real row takes; the real rows' optimum is unchanged.
        cost = np.concatenate([cost, np.zeros((n1 - n0, n1), dtype=cost.dtype)], axis=0)
    weights = np.full(n1, 1.0 / n1)
    # torchcfm keeps POT's default of 1e5 iterations, which stops short of optimality at n=4096.
    plan, log = ot.emd(weights, weights, cost, numItermax=max(100_000, 50 * n1 * n1), log=True)
    cols = plan[:n0].argmax(1)
    # A vertex of the Birkhoff polytope is a permutation; anything else means POT stopped early.
    if log.get("warning") is not None or np.unique(cols).size != n0:
        return _solve_scipy(cost[:n0])
    return cols


_BACKENDS = {"scipy": _solve_scipy, "lap": _solve_lap, "pot": _solve_pot}


def solve_assignment(cost: np.ndarray | torch.Tensor, solver: str = "auto", rank: float | None = None) -> np.ndarray:
    """Solve min_σ Σ_i cost[i, σ(i)] over injective σ; return σ as an int64 array of length n0.

    Args:
        cost: an (n0, n1) matrix with n0 ≤ n1 (each row gets a distinct column).
        solver: ``"auto"`` (dispatch on the cost's structure, see the module docstring),
            ``"scipy"``, ``"lap"`` (needs ``flowzoo[fast-ot]``) or ``"pot"``.
        rank: the cost's interaction rank for ``"auto"``, when the caller knows it.

    Example:
        >>> solve_assignment(np.array([[4.0, 1.0], [1.0, 4.0]])).tolist()
        [1, 0]
    """
    if solver not in SOLVERS:
        raise ConfigError(expected(f"solver in {SOLVERS}", repr(solver), "pick one of the listed solvers"))
    stat_source = cost if isinstance(cost, torch.Tensor) else None
    matrix = cost.detach().cpu().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost)
    if matrix.ndim != 2 or matrix.shape[0] > matrix.shape[1] or matrix.shape[0] == 0:
        raise ShapeError(expected("a non-empty (n0, n1) cost matrix with n0 <= n1", f"shape {matrix.shape}",
                                  "pass at least as many targets (columns) as sources (rows)"))
    if solver == "auto":
        solver = choose_solver(stat_source if stat_source is not None else matrix, rank)
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    return np.asarray(_BACKENDS[solver](matrix), dtype=np.int64)


def log_sinkhorn(cost: torch.Tensor, reg: float, max_iter: int, tol: float) -> torch.Tensor:
    """Log-domain Sinkhorn with uniform marginals; returns the column potential g (Peyré–Cuturi §4.4).

    f_i = −ε log Σ_j exp((g_j − C_ij)/ε) − ε log n0,  g_j likewise; no underflow for small ε.
    """
    n0, n1 = cost.shape
    scaled = cost / reg
    log_a, log_b = -math.log(n0), -math.log(n1)
    g = torch.zeros(n1, dtype=cost.dtype, device=cost.device)
    for step in range(max_iter):
        f = log_a - torch.logsumexp(g[None, :] - scaled, dim=1)
        g_new = log_b - torch.logsumexp(f[:, None] - scaled, dim=0)
        # After the g-update the columns are exact; the row marginal error measures convergence.
        if step % 10 == 9 or step == max_iter - 1:
            row = torch.logsumexp(f[:, None] + g_new[None, :] - scaled, dim=1).exp()
            if float((row * n0 - 1).abs().max()) < tol:
                return g_new * reg
        g = g_new
    return g * reg
