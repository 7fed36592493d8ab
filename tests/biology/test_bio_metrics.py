"""flowzoo.biology.cells.metrics: every population distance against a hand computation, and bad input."""

import math

import numpy as np
import pytest
import torch

from flowzoo.biology.cells.metrics import (MMD_GAMMAS, mean_marker_mse, mmd_multiscale, pairwise_correlation_r2, population_distances)
from flowzoo.core.analysis import wasserstein1, wasserstein2
from flowzoo.core.errors import NonFiniteError, ShapeError


def test_wasserstein_of_a_translated_pair_by_hand():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[2.0], [3.0]])
    assert wasserstein1(x, y) == pytest.approx(2.0)
    assert wasserstein2(x, y) == pytest.approx(2.0)
    # Unequal displacements: the optimal plan matches in order, costs 1 and 3.
    z = torch.tensor([[1.0], [4.0]])
    assert wasserstein1(x, z) == pytest.approx((1 + 3) / 2)
    assert wasserstein2(x, z) == pytest.approx(math.sqrt((1 + 9) / 2))


def test_mmd_averages_the_six_rbf_kernels():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # One point each: k(x,x) = k(y,y) = 1 and k(x,y) = exp(-gamma), so MMD^2 = 2 - 2 exp(-gamma).
    by_hand = sum(2 - 2 * math.exp(-g) for g in MMD_GAMMAS) / len(MMD_GAMMAS)
    assert mmd_multiscale(x, y) == pytest.approx(by_hand, rel=1e-9)
    assert mmd_multiscale(x, y, gammas=[1.0]) == pytest.approx(2 - 2 * math.exp(-1.0))
    two = torch.tensor([[0.0], [3.0]])
    assert mmd_multiscale(two, two) == pytest.approx(0.0, abs=1e-12)


def test_mean_marker_mse_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # means (1, 1)
    y = torch.tensor([[1.0, 3.0]])              # means (1, 3)
    assert mean_marker_mse(x, y) == pytest.approx((0.0 + 4.0) / 2)


def test_r2_of_pairwise_correlations_by_hand():
    a = np.array([1.0, -1.0, 1.0, -1.0])
    b = np.array([1.0, 1.0, -1.0, -1.0])  # centred and orthogonal to a
    x = torch.tensor(np.stack([a, a, b], 1))  # correlations (12, 13, 23) = (1, 0, 0)
    y = torch.tensor(np.stack([a, b, b], 1))  # correlations (0, 0, 1)
    # Pearson of (1, 0, 0) and (0, 0, 1): (-1/3) / (2/3) = -1/2.
    assert pairwise_correlation_r2(x, y) == pytest.approx(-0.5)
    gen = torch.Generator().manual_seed(0)
    cells = torch.randn(50, 4, generator=gen) @ torch.randn(4, 4, generator=gen)
    rescaled = cells * torch.tensor([2.0, 0.5, 3.0, 1.0]) + 7.0  # per-feature affine maps keep correlations
    assert pairwise_correlation_r2(cells, rescaled) == pytest.approx(1.0)


def test_population_distances_reports_every_metric():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=gen), torch.randn(30, 3, generator=gen) + 1.0
    out = population_distances(x, y)
    assert set(out) == {"w1", "w2", "mmd", "mean_mse", "r2"}
    assert out["w1"] <= out["w2"] + 1e-9 and out["mmd"] > 0 and out["mean_mse"] > 0.5
    assert math.isnan(population_distances(x[:, :2], y[:, :2])["r2"])


def test_bad_input_is_named():
    with pytest.raises(ShapeError, match="same number of features"):
        mmd_multiscale(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(NonFiniteError, match="NaN"):
        mean_marker_mse(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ShapeError, match="at least 3 features"):
        pairwise_correlation_r2(torch.randn(5, 2), torch.randn(5, 2))
    with pytest.raises(ShapeError, match="cells, features"):
        population_distances(torch.zeros(0, 3), torch.zeros(2, 3))
