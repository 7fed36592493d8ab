"""Couplings: how the (x0, x1) pairs of a minibatch are formed.

Every coupling has one call shape, ``coupling(x0, x1, cond0=None, cond1=None) -> Pairing``, and
returns the paired batches together with the indices that produced them
(``pairing.x0 == x0[pairing.index0]``, ``pairing.x1 == x1[pairing.index1]``), so a caller can permute
conditioning alongside, and optional per-pair weights. Samples may have any shape (B, ...); costs are
the squared Euclidean distance between flattened samples, c(x0, x1) = ‖x0 − x1‖². :class:`Pairing` and the
:class:`Coupling` base class live in :mod:`flowzoo.core.couplings.base` and are re-exported here.

* :class:`IndependentCoupling`: π = q0 ⊗ q1, the pairs as given (I-CFM; Lipman et al. 2023).
* :class:`ExactOTCoupling`: minibatch OT (OT-CFM; Tong et al., TMLR 2024, arXiv 2302.00482). With
  uniform weights the optimal plan is a permutation, so we solve the assignment problem and use
  every source and every target exactly once, never resampling the plan with replacement.
* :class:`SinkhornCoupling`: entropic OT, π_ε = argmin ⟨π, C⟩ − ε H(π) (Cuturi 2013), one target
  drawn per source from the row-conditional π_ε(· | x0_i).
* :class:`SchrodingerBridgeCoupling`: the static Schrödinger bridge for a Brownian reference of
  scale σ, i.e. entropic OT with ε = 2σ² on the unnormalised cost (SB-CFM; Tong et al. 2024).
* :class:`ConditionalOTCoupling`: exact OT inside each condition, so no pair crosses conditions
  (the failure of plain minibatch OT for conditional generation shown by C2OT, arXiv 2503.10636).
* :class:`GibbsWeightedCoupling`: independent pairs weighted by w = exp(−c/ε) (W-CFM;
  Calvo-Ordoñez et al. 2025, arXiv 2507.22270): CFM under the unnormalised entropic coupling
  ∝ e^{−c/ε} q0 ⊗ q1, at the cost of I-CFM.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch

from flowzoo.core.couplings.assignment import (
    EXACT_RANK_MAX_DIM,
    SOLVERS,
    data_interaction_rank,
    log_sinkhorn,
    solve_assignment,
    squared_euclidean_cost,
)
from flowzoo.core.couplings.base import Condition, Coupling, Pairing, cond_rows
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_positive

__all__ = [
    "IndependentCoupling",
    "ExactOTCoupling",
    "SinkhornCoupling",
    "SchrodingerBridgeCoupling",
    "ConditionalOTCoupling",
    "GibbsWeightedCoupling",
    "get_coupling",
]


class IndependentCoupling(Coupling):
    """Keep the pairs as drawn: π = q0 ⊗ q1 (I-CFM).

    Example:
        >>> x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
        >>> IndependentCoupling()(x0, x1).index0.tolist()
        [0, 1, 2, 3]
    """

    def _pair(self, x0, x1, cond0, cond1):
        return Pairing(x0, x1)


def _exact_ot_indices(x0: torch.Tensor, x1: torch.Tensor, solver: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the assignment of x0 rows to distinct x1 rows; return (index0, index1) in x1's order."""
    a, b = x0.detach(), x1.detach()
    cost = squared_euclidean_cost(a, b)
    rank = data_interaction_rank(a, b) if solver == "auto" and a[0].numel() <= EXACT_RANK_MAX_DIM else None
    cols = torch.from_numpy(solve_assignment(cost, solver, rank=rank)).to(x0.device)
    order = torch.argsort(cols)
    return order, cols[order]


class ExactOTCoupling(Coupling):
    """Exact minibatch OT as a permutation (OT-CFM; Tong et al., TMLR 2024).

    Solves min over permutations σ of Σ_i ‖x0_i − x1_σ(i)‖²; with uniform weights this is an exact
    W2 plan (Birkhoff–von Neumann). Every source and every target is used once; torchcfm's ``OTPlanSampler``
    instead draws n pairs from the plan with replacement and keeps ≈ 63% of the sources. The pairs
    come back in x1's order (``index1 = arange``), so conditioning attached to x1 needs no permuting.
    With fewer sources than targets (n0 < n1) each source gets a distinct target and the unused
    targets are dropped (``index1`` is then increasing but not ``arange``).

    Args:
        solver: ``"auto"`` (picks the fastest exact solver from the cost's structure, see
            ``flowzoo.core.couplings.assignment``), ``"scipy"``, ``"lap"`` (``flowzoo[fast-ot]``) or ``"pot"``.

    Example:
        >>> x0 = torch.tensor([[0.0], [10.0]]); x1 = torch.tensor([[11.0], [1.0]])
        >>> ExactOTCoupling()(x0, x1).x0.flatten().tolist()
        [10.0, 0.0]
    """

    same_batch = False

    def __init__(self, solver: str = "auto") -> None:
        if solver not in SOLVERS:
            raise ConfigError(expected(f"solver in {SOLVERS}", repr(solver), "pick one of the listed solvers"))
        self.solver = solver

    def _pair(self, x0, x1, cond0, cond1):
        if x0.shape[0] > x1.shape[0]:
            raise ShapeError(expected("no more sources than targets (n0 <= n1) for an exact OT permutation",
                                      f"n0={x0.shape[0]}, n1={x1.shape[0]}",
                                      "draw at least as many targets as sources, or use SinkhornCoupling"))
        index0, index1 = _exact_ot_indices(x0, x1, self.solver)
        # Square batches keep x1 as it is (index1 = arange): no copy of the data.
        paired1 = x1 if x0.shape[0] == x1.shape[0] else x1[index1]
        return Pairing(x0[index0], paired1, index0=index0, index1=index1)


class SinkhornCoupling(Coupling):
    """Entropic OT plan, one target sampled per source: every x0 is kept exactly once.

    π_ε = argmin_π ⟨π, C⟩ − ε H(π) with uniform marginals (Cuturi 2013), solved in the log domain;
    row i's conditional π_ε(j | i) = softmax_j((g_j − C_ij)/ε) is sampled once per source, so the
    targets may repeat (their marginal is uniform only in expectation). ε → 0 gives exact OT,
    ε → ∞ independent pairs.

    Args:
        reg: ε; with ``relative=True`` it multiplies the batch's mean cost, which makes it
            independent of the data's scale and dimension.
        relative: see ``reg``.
        max_iter, tol: Sinkhorn iterations and the tolerance on the row marginals (relative).
        generator: optional torch.Generator (on the batch's device) for the row sampling.
    """

    same_batch = False

    def __init__(self, reg: float = 0.05, relative: bool = True, max_iter: int = 1000, tol: float = 1e-4,
                 generator: torch.Generator | None = None) -> None:
        self.reg = check_positive(reg, "reg", fix="pass e.g. reg=0.1")
        self.relative = bool(relative)
        self.max_iter = int(check_positive(max_iter, "max_iter", fix="pass e.g. max_iter=1000"))
        self.tol = check_positive(tol, "tol", fix="pass e.g. tol=1e-4")
        self.generator = generator

    def _epsilon(self, cost: torch.Tensor) -> float:
        scale = float(cost.mean()) if self.relative else 1.0
        return self.reg * scale if scale > 0 else self.reg

    def log_conditional(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Return log π_ε(j | i), shape (n0, n1): each row is a log-distribution over the targets."""
        cost = squared_euclidean_cost(x0.detach(), x1.detach())
        eps = self._epsilon(cost)
        g = log_sinkhorn(cost, eps, self.max_iter, self.tol)
        return torch.log_softmax((g[None, :] - cost) / eps, dim=1)

    def plan(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Return the entropic plan π_ε (n0, n1), in x0's dtype, with rows summing to exactly 1/n0."""
        return (self.log_conditional(x0, x1).exp() / x0.shape[0]).to(x0.dtype)

    def _pair(self, x0, x1, cond0, cond1):
        probs = self.log_conditional(x0, x1).exp()
        index1 = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        index0 = torch.arange(x0.shape[0], device=x0.device)
        return Pairing(x0, x1[index1], index0=index0, index1=index1)


class SchrodingerBridgeCoupling(SinkhornCoupling):
    """Static Schrödinger bridge coupling for a Brownian reference σW: entropic OT with ε = 2σ².

    As in SB-CFM (Tong et al. 2024, and torchcfm), ε is absolute and the cost is not
    normalised. Pair it with a path that adds the Brownian-bridge noise σ√(t(1−t)) z.

    Args:
        sigma: the reference process's noise scale σ > 0.
        max_iter, tol, generator: as in :class:`SinkhornCoupling`.
    """

    def __init__(self, sigma: float = 1.0, max_iter: int = 1000, tol: float = 1e-4,
                 generator: torch.Generator | None = None) -> None:
        self.sigma = check_positive(sigma, "sigma", fix="pass e.g. sigma=0.1")
        super().__init__(reg=2.0 * self.sigma**2, relative=False, max_iter=max_iter, tol=tol, generator=generator)


def _group_ids(cond0: Condition | None, cond1: Condition) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Map conditions (tensors (B,) / (B, k), or mappings of them) to integer group ids shared by both batches."""
    rows1 = cond_rows(cond1, "cond1")
    if cond0 is None:
        return None, torch.unique(rows1, dim=0, return_inverse=True)[1]
    keys0 = sorted(cond0) if isinstance(cond0, Mapping) else None
    keys1 = sorted(cond1) if isinstance(cond1, Mapping) else None
    rows0 = cond_rows(cond0, "cond0")
    if keys0 != keys1 or rows0.shape[1] != rows1.shape[1]:
        raise ShapeError(expected("cond0 and cond1 of the same kind (same keys, same per-sample shape)",
                                  f"{keys0 or tuple(rows0.shape)} and {keys1 or tuple(rows1.shape)}",
                                  "label both batches the same way"))
    ids = torch.unique(torch.cat([rows0, rows1]), dim=0, return_inverse=True)[1]
    return ids[: rows0.shape[0]], ids[rows0.shape[0]:]


def _proportional_sizes(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Split ``total`` into integer parts proportional to ``counts`` (largest remainder), each ≤ count."""
    quota = counts.double() * total / counts.sum()
    sizes = quota.floor().long()
    remainder = total - int(sizes.sum())
    if remainder:
        sizes[torch.argsort(quota - sizes, descending=True, stable=True)[:remainder]] += 1
    return sizes


class ConditionalOTCoupling(Coupling):
    """Exact OT solved separately within each condition; pairs never cross conditions.

    Conditions are label tensors (B,) or (B, k) whose rows are compared for equality, or mappings of
    such tensors (the conditioning dict that the objectives pass; rows then match on every key). With ``cond0``
    given, sources of label y are matched to targets of label y (each group needs n0_y ≤ n1_y).
    With ``cond0=None`` (a shared source such as N(0, I)) the sources are split at random among
    the target groups in proportion to their sizes, then matched inside each group: a random split
    keeps each group's source distribution equal to q0, which an optimised split would not.
    Pairs come back in x1's order, as in :class:`ExactOTCoupling`.

    Args:
        solver: the assignment solver, as in :class:`ExactOTCoupling`.
        generator: optional torch.Generator (on the batch's device) for the random split.
    """

    same_batch = False

    def __init__(self, solver: str = "auto", generator: torch.Generator | None = None) -> None:
        if solver not in SOLVERS:
            raise ConfigError(expected(f"solver in {SOLVERS}", repr(solver), "pick one of the listed solvers"))
        self.solver = solver
        self.generator = generator

    def _pair(self, x0, x1, cond0, cond1):
        n0, n1 = x0.shape[0], x1.shape[0]
        if cond1 is None:
            raise ConfigError(expected("cond1 (the targets' labels) for ConditionalOTCoupling", "None",
                                       "pass cond1, or use ExactOTCoupling for unconditional data"))
        if n0 > n1:
            raise ShapeError(expected("no more sources than targets (n0 <= n1)", f"n0={n0}, n1={n1}",
                                      "draw at least as many targets as sources"))
        ids0, ids1 = _group_ids(cond0, cond1)
        groups = int(ids1.max()) + 1 if ids0 is None else int(torch.cat([ids0, ids1]).max()) + 1
        counts1 = torch.bincount(ids1, minlength=groups)
        if ids0 is None:
            sizes = _proportional_sizes(counts1, n0).to(x0.device)
            shuffled = torch.randperm(n0, generator=self.generator, device=x0.device)
            ids0 = torch.empty(n0, dtype=torch.long, device=x0.device)
            ids0[shuffled] = torch.repeat_interleave(torch.arange(groups, device=x0.device), sizes)
        counts0 = torch.bincount(ids0, minlength=groups)
        short = torch.nonzero(counts0 > counts1).flatten()
        if short.numel():
            g = int(short[0])
            raise ShapeError(expected("at least as many targets as sources in every condition",
                                      f"{int(counts0[g])} sources but {int(counts1[g])} targets in one condition",
                                      "balance the batches per condition, or pass cond0=None for a shared source"))
        index0_parts, index1_parts = [], []
        for g in range(groups):
            rows0 = torch.nonzero(ids0 == g).flatten()
            if rows0.numel() == 0:
                continue
            rows1 = torch.nonzero(ids1 == g).flatten()
            local0, local1 = _exact_ot_indices(x0[rows0], x1[rows1], self.solver)
            index0_parts.append(rows0[local0])
            index1_parts.append(rows1[local1])
        index0, index1 = torch.cat(index0_parts), torch.cat(index1_parts)
        order = torch.argsort(index1)
        index0, index1 = index0[order], index1[order]
        return Pairing(x0[index0], x1[index1], index0=index0, index1=index1)


class GibbsWeightedCoupling(Coupling):
    """Independent pairs with Gibbs weights w_i = exp(−‖x0_i − x1_i‖²/ε) (W-CFM).

    Calvo-Ordoñez et al. (2025) weight the I-CFM loss by the Gibbs kernel of the cost; the loss is
    then CFM under the unnormalised entropic coupling ∝ e^{−c/ε} q0 ⊗ q1, whose marginals are
    tilted unless ε is large against the spread of costs. In high dimension a fixed ε underflows
    every weight, so by default ε is relative: ε = eps · mean_i c_i over the batch's pairs.

    Args:
        eps: ε (relative: a multiple of the mean pair cost; absolute: in cost units).
        relative: see ``eps``.
        normalize: divide the weights by their batch mean (mean 1), computed as n·softmax(−c/ε) so
            that it never underflows; this changes the effective learning rate less across batches.
    """

    def __init__(self, eps: float = 1.0, relative: bool = True, normalize: bool = False) -> None:
        self.eps = check_positive(eps, "eps", fix="pass e.g. eps=0.1")
        self.relative = bool(relative)
        self.normalize = bool(normalize)

    def _pair(self, x0, x1, cond0, cond1):
        diff = (x1.detach() - x0.detach()).reshape(x0.shape[0], -1).double()
        cost = diff.square().sum(1)
        scale = float(cost.mean()) if self.relative else 1.0
        eps = self.eps * scale if scale > 0 else self.eps
        log_weight = -cost / eps
        if self.normalize:
            weight = torch.softmax(log_weight, dim=0) * cost.shape[0]
        else:
            weight = log_weight.exp()
            if not bool((weight > 0).any()):
                warnings.warn(f"every Gibbs weight underflowed to 0 (eps={eps:.3g} against costs around "
                              f"{float(cost.mean()):.3g}); use relative=True or normalize=True", RuntimeWarning,
                              stacklevel=3)
        weight = weight.to(x0.dtype)
        return Pairing(x0, x1, weight=weight)


_REGISTRY: dict[str, Callable[..., Coupling]] = {
    "independent": IndependentCoupling,
    "exact_ot": ExactOTCoupling,
    "sinkhorn": SinkhornCoupling,
    "conditional_ot": ConditionalOTCoupling,
    "schrodinger_bridge": SchrodingerBridgeCoupling,
    "gibbs": GibbsWeightedCoupling,
}


def get_coupling(name: str, **kwargs) -> Coupling:
    """Build a coupling by name: ``"independent"``, ``"exact_ot"``, ``"sinkhorn"``, ``"conditional_ot"``,
    ``"schrodinger_bridge"`` or ``"gibbs"``; ``kwargs`` go to its constructor.

    Example:
        >>> get_coupling("sinkhorn", reg=0.1)
        SinkhornCoupling(reg=0.1, relative=True, max_iter=1000, tol=0.0001)
    """
    if name not in _REGISTRY:
        raise ConfigError(expected(f"a coupling name in {sorted(_REGISTRY)}", repr(name), "pick one of them"))
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as err:
        raise ConfigError(expected(f"keyword arguments accepted by {_REGISTRY[name].__name__}", sorted(kwargs),
                                   f"see help({_REGISTRY[name].__name__}); {err}")) from err
