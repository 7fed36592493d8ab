r"""Distances between a predicted and an observed cell population, as Meta Flow Matching reports them.

Atanackovic et al. (ICLR 2025, arXiv 2408.14608, experiments; ``compute_distribution_distances`` in their
code) compare populations with

* W1 and W2: exact earth mover's distances between the empirical measures (POT's network simplex), with
  Euclidean ground cost (W2 is the square root of the optimal mean squared cost);
* MMD: the squared RBF maximum mean discrepancy (biased V-statistic), averaged over the kernels
  :math:`k_\gamma(a, b) = \exp(-\gamma \|a - b\|^2)`, γ ∈ {2, 1, 0.5, 0.1, 0.01, 0.005};
* mean-marker MSE: :math:`\frac1d \|\bar x - \bar y\|^2`, the squared error of the per-feature means;
* r2: the Pearson correlation between the vectors of pairwise feature correlations of the two populations
  (the upper triangles of their d x d correlation matrices; from CellOT, Bunne et al. 2023). It needs d >= 3.

W1, W2 and the kernel sums come from :mod:`flowzoo.core.analysis.metrics`; the RBF with parameter γ is its Gaussian
kernel with bandwidth σ = 1/√(2γ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.analysis import mmd_rbf, wasserstein1, wasserstein2

__all__ = ["MMD_GAMMAS", "mmd_multiscale", "mean_marker_mse", "pairwise_correlation_r2", "population_distances"]

MMD_GAMMAS = (2.0, 1.0, 0.5, 0.1, 0.01, 0.005)


def _matrix(x: object, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ShapeError(expected(f"{name} as a (cells, features) tensor or array", type(x).__name__,
                                  "pass torch.as_tensor(cells)"))
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(expected(f"{name} of shape (cells, features), non-empty", f"shape {tuple(x.shape)}",
                                  "pass one row per cell"))
    x = x.detach().cpu().double()
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(expected(f"finite values in {name}", f"{int((~torch.isfinite(x)).sum())} NaN/Inf",
                                      "drop or impute those cells"))
    return x


def _pair(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _matrix(x, "x"), _matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(expected("x and y with the same number of features", f"{a.shape[1]} and {b.shape[1]}",
                                  "compare populations in the same representation"))
    return a, b


def mmd_multiscale(x: object, y: object, gammas: Sequence[float] = MMD_GAMMAS) -> float:
    """Squared RBF-MMD (biased), averaged over kernels exp(-γ‖a − b‖²), one per γ in ``gammas``."""
    a, b = _pair(x, y)
    gammas = list(gammas)
    if not gammas or any(not isinstance(g, (int, float)) or not g > 0 for g in gammas):
        raise ConfigError(expected("positive gammas", gammas, "use the default MMD_GAMMAS"))
    return sum(mmd_rbf(a, b, bandwidths=1.0 / math.sqrt(2.0 * g)) for g in gammas) / len(gammas)


def mean_marker_mse(x: object, y: object) -> float:
    """Mean over features of the squared difference of the per-feature means."""
    a, b = _pair(x, y)
    return float((a.mean(0) - b.mean(0)).square().mean())


def _upper_correlations(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(0)
    scale = centred.norm(dim=0)
    corr = (centred.T @ centred) / (scale[:, None] * scale[None, :])
    rows, cols = torch.triu_indices(x.shape[1], x.shape[1], offset=1)
    return corr[rows, cols]


def pairwise_correlation_r2(x: object, y: object) -> float:
    """Pearson correlation between the pairwise feature-correlation vectors of x and y (needs >= 3 features).

    NaN when a feature is constant in either population (its correlations are undefined).
    """
    a, b = _pair(x, y)
    if a.shape[1] < 3:
        raise ShapeError(expected("at least 3 features (2 or more feature pairs)", f"{a.shape[1]} features",
                                  "use r2 on higher-dimensional cells"))
    u, v = _upper_correlations(a), _upper_correlations(b)
    u, v = u - u.mean(), v - v.mean()
    value = float((u @ v) / (u.norm() * v.norm()))
    return value if math.isfinite(value) else float("nan")


def population_distances(predicted: object, observed: object) -> dict[str, float]:
    """Every metric of the paper between two populations: w1, w2, mmd, mean_mse and r2 (NaN below 3 features)."""
    a, b = _pair(predicted, observed)
    return {"w1": wasserstein1(a, b), "w2": wasserstein2(a, b), "mmd": mmd_multiscale(a, b),
            "mean_mse": mean_marker_mse(a, b),
            "r2": pairwise_correlation_r2(a, b) if a.shape[1] >= 3 else float("nan")}
