"""Metrics against hand computations and POT."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.analysis import (
    coupling_cost,
    energy_distance,
    mmd_rbf,
    path_straightness,
    sliced_wasserstein,
    wasserstein1,
    wasserstein2,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _pot(x, y, metric):
    xn, yn = x.reshape(len(x), -1).double().numpy(), y.reshape(len(y), -1).double().numpy()
    a, b = np.full(len(xn), 1 / len(xn)), np.full(len(yn), 1 / len(yn))
    return float(ot.emd2(a, b, ot.dist(xn, yn, metric=metric), numItermax=10**7))


# ----------------------------------------------------------------------------- Wasserstein


def test_w2_of_a_shift_is_the_shift_norm():
    x = _randn(100, 3)
    shift = torch.tensor([1.0, -2.0, 2.0])
    assert wasserstein2(x, x + shift) == pytest.approx(3.0, rel=1e-6)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-6)  # sqrt of a float64 rounding floor


def test_w2_in_one_dimension_is_sorted_matching():
    x, y = _randn(50, seed=1), 2 * _randn(50, seed=2) + 1
    hand = math.sqrt(float(((x.sort().values - y.sort().values).double() ** 2).mean()))
    assert wasserstein2(x, y) == pytest.approx(hand, rel=1e-6)


def test_w2_and_w1_agree_with_pot_for_different_sizes():
    x, y = _randn(30, 2, seed=3), _randn(45, 2, seed=4) + 0.5
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(_pot(x, y, "sqeuclidean")), rel=1e-6)
    assert wasserstein1(x, y) == pytest.approx(_pot(x, y, "euclidean"), rel=1e-6)
    img_x, img_y = _randn(20, 1, 4, 4, seed=5), _randn(25, 16, seed=6)
    assert wasserstein2(img_x, img_y) == pytest.approx(math.sqrt(_pot(img_x, img_y, "sqeuclidean")), rel=1e-6)
    assert wasserstein1(x, y) <= wasserstein2(x, y) + 1e-9


def test_sliced_wasserstein_in_one_dimension_is_exact():
    x, y = _randn(40, 1, seed=7), _randn(64, 1, seed=8) * 1.5 + 0.3
    assert sliced_wasserstein(x, y, n_projections=4) == pytest.approx(wasserstein2(x, y), rel=1e-6)
    assert sliced_wasserstein(x, y, n_projections=4, p=1) == pytest.approx(wasserstein1(x, y), rel=1e-6)


def test_sliced_wasserstein_bounds_and_seed():
    x, y = _randn(200, 5, seed=9), _randn(200, 5, seed=10) + 1.0
    sw = sliced_wasserstein(x, y, seed=3)
    assert 0 < sw <= wasserstein2(x, y)
    assert sw == sliced_wasserstein(x, y, seed=3)
    # A shift s in d dims moves every projection by ⟨θ, s⟩, so SW2² = E⟨θ, s⟩² = |s|²/d.
    assert sliced_wasserstein(x, x + 2.0, n_projections=2000) == pytest.approx(2.0, rel=0.1)


# ----------------------------------------------------------------------------- MMD, energy


def test_mmd_identical_sets_is_zero_and_grows_with_the_shift():
    x = _randn(200, 2, seed=11)
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    values = [mmd_rbf(x, _randn(200, 2, seed=12) + s, bandwidths=1.0) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < 0.05 < values[-1]
    assert abs(mmd_rbf(x, _randn(200, 2, seed=12), unbiased=True)) < 0.02


def test_mmd_by_hand():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    k = lambda d2: math.exp(-d2 / 2)  # noqa: E731  sigma = 1
    kxx = (2 * k(0) + 2 * k(1)) / 4
    kxy = (k(9) + k(4)) / 2
    assert mmd_rbf(x, y, bandwidths=1.0) == pytest.approx(kxx + 1 - 2 * kxy, rel=1e-9)
    y2 = torch.tensor([[3.0], [5.0]])
    unbiased = k(1) + k(4) - 2 * (k(9) + k(25) + k(4) + k(16)) / 4
    assert mmd_rbf(x, y2, bandwidths=[1.0], unbiased=True) == pytest.approx(unbiased, rel=1e-9)
    two = mmd_rbf(x, y, bandwidths=[1.0, 2.0])
    assert two > mmd_rbf(x, y, bandwidths=1.0)


def test_energy_distance_by_hand_and_nonnegative():
    assert energy_distance(torch.tensor([[0.0]]), torch.tensor([[1.0]])) == pytest.approx(2.0)
    x, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0])
    # 2·E|X−Y| − E|X−X'| − E|Y−Y'| = 2·1 − (0+2+2+0)/4 − 0
    assert energy_distance(x, y) == pytest.approx(1.0)
    a = _randn(100, 3, seed=13)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(a, _randn(80, 3, seed=14)) >= 0
    assert energy_distance(a, a + 1) > energy_distance(a, a + 0.1) > 0


# ----------------------------------------------------------------------------- path diagnostics


def test_path_straightness_zero_for_constant_velocity():
    x0 = _randn(32, 2, seed=15)
    velocity = torch.tensor([1.5, -0.5])
    assert path_straightness(lambda x, t: velocity.expand_as(x), x0, steps=50) == pytest.approx(0.0, abs=1e-10)
    # Straight but time-varying speed is not constant velocity: the definition penalises it too.
    accelerating = path_straightness(lambda x, t: t[:, None] * velocity.expand_as(x), x0, steps=100)
    assert accelerating > 0


def test_path_straightness_of_a_rotation_by_hand():
    # v(x) = A x, A a rotation generator: speed |x| is constant, so the integral can be checked against
    # a direct evaluation that stores every velocity.
    a = torch.tensor([[0.0, -1.0], [1.0, 0.0]]) * 2.0
    model = lambda x, t: x @ a.T  # noqa: E731
    x0 = _randn(16, 2, seed=16)
    steps = 40
    xs, vs = [x0.double()], []
    for _ in range(steps):
        vs.append(xs[-1] @ a.T.double())
        xs.append(xs[-1] + vs[-1] / steps)
    delta = xs[-1] - xs[0]
    direct = sum(((delta - v) ** 2).sum(1) for v in vs) / steps
    assert path_straightness(model, x0, steps=steps) == pytest.approx(float(direct.mean()), rel=1e-5)
    assert float(direct.mean()) > 0.5


def test_path_straightness_passes_conditioning_and_checks_shapes():
    x0 = _randn(8, 2, seed=17)
    seen = {}

    def model(x, t, y):
        seen["y"] = y
        return torch.zeros_like(x)

    assert path_straightness(model, x0, steps=3, cond={"y": torch.arange(8)}) == 0.0
    assert torch.equal(seen["y"], torch.arange(8))
    with pytest.raises(ShapeError):
        path_straightness(lambda x, t: x[:, :1], x0, steps=2)
    with pytest.raises(ConfigError):
        path_straightness(lambda x, t: x, x0, steps=0)
    with pytest.raises(NonFiniteError):
        path_straightness(lambda x, t: x * math.inf, x0, steps=2)


def test_coupling_cost_by_hand():
    x0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x1 = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert coupling_cost(x0, x1) == pytest.approx((25 + 1) / 2)
    with pytest.raises(ShapeError):
        coupling_cost(x0, x1[:1])


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("metric", [wasserstein2, wasserstein1, sliced_wasserstein, mmd_rbf, energy_distance])
def test_metrics_validate_inputs(metric):
    x = _randn(10, 2)
    with pytest.raises(ShapeError):
        metric(x, _randn(10, 3))
    with pytest.raises(NonFiniteError):
        metric(x, torch.full((10, 2), math.nan))
    with pytest.raises(EmptyInputError):
        metric(x, x[:0])
    with pytest.raises(DTypeError):
        metric(x, [[0.0, 1.0]])
    assert metric(x.numpy(), x.numpy() + 1) > 0  # numpy arrays are accepted


def test_metric_parameters_validate():
    x = _randn(10, 2)
    with pytest.raises(ConfigError):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ConfigError):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ConfigError):
        mmd_rbf(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(ShapeError):
        mmd_rbf(x[:1], x, unbiased=True)
