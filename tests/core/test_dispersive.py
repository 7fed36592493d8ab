"""Dispersive regularisers: hand values on three points, invariances, collapse vs spread, learning, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.fewstep import (DISPERSIVE_KINDS, dispersive_loss, effective_rank, mean_pairwise_distance,
                                     pairwise_sq_distances)
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError

torch.set_num_threads(1)

# A 3-4-5 triangle: squared distances 9, 16, 25.
TRIANGLE = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
# Three unit vectors: cos(0,1) = 0, cos(0,2) = -1, cos(1,2) = 0.
COMPASS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
e = math.exp


def test_hand_values_on_three_points():
    # MP1: squared distances over their max, diagonal included, tau = 1.
    mp1 = math.log((3 + 2 * e(-9 / 25) + 2 * e(-16 / 25) + 2 * e(-1)) / 9)
    # D&D: squared distances over the feature size D = 2.
    dd = math.log((3 + 2 * e(-4.5) + 2 * e(-8) + 2 * e(-12.5)) / 9)
    # Unclamped InfoNCE-L2, tau = 0.5: per row log mean_j exp(-2 d_ij), diagonal included.
    rows = [(3, 4), (3, 5), (4, 5)]
    l2 = sum(math.log((1 + e(-2 * a) + e(-2 * b)) / 3) for a, b in rows) / 3
    # DM1: -s = d/tau = 2d off the diagonal, clamped at 10; the clamped -1e9 diagonal contributes e^10.
    l2_dm1 = -sum(math.log(e(10) + e(min(2 * a, 10)) + e(min(2 * b, 10))) for a, b in rows) / 3
    hinge = 2 * (4 - 3) / 6  # margin 4: only the pair at distance 3 is inside, counted twice over 6 ordered pairs
    got = {k: dispersive_loss(TRIANGLE, k).item() for k in ("mp1", "dd", "infonce_l2", "infonce_l2_dm1")}
    assert got["mp1"] == pytest.approx(mp1, rel=1e-10)
    assert got["dd"] == pytest.approx(dd, rel=1e-10)
    assert got["infonce_l2"] == pytest.approx(l2, rel=1e-9)
    assert got["infonce_l2_dm1"] == pytest.approx(l2_dm1, rel=1e-9)
    assert dispersive_loss(TRIANGLE, "hinge", margin=4.0).item() == pytest.approx(hinge, rel=1e-9)

    cos_rows = [(0.0, -1.0), (0.0, 0.0), (-1.0, 0.0)]
    cosine = sum(math.log((e(2 * a) + e(2 * b)) / 2) for a, b in cos_rows) / 3
    cosine_dm1 = -sum(math.log(e(10) + e(-2 * a) + e(-2 * b)) for a, b in cos_rows) / 3
    assert dispersive_loss(COMPASS, "infonce_cosine").item() == pytest.approx(cosine, rel=1e-10)
    assert dispersive_loss(COMPASS, "infonce_cosine_dm1").item() == pytest.approx(cosine_dm1, rel=1e-10)

    # Covariance of the triangle scaled by 1/10: var 0.03, 16/300, cov -0.02.
    small = TRIANGLE / 10
    covariance = (0.02 ** 2) + ((1 - 0.03) + (1 - 16 / 300)) / 2
    assert dispersive_loss(small, "covariance").item() == pytest.approx(covariance, rel=1e-9)


def test_dm1_saturation_and_collapsed_values():
    collapsed = torch.zeros(64, 8)
    assert dispersive_loss(collapsed, "infonce_l2_dm1").item() == pytest.approx(-math.log(e(10) + 63), rel=1e-6)
    far = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) * 100
    # every distance beyond 10 tau: the loss sits at its floor -log(64 e^10) and has no gradient left
    assert dispersive_loss(far, "infonce_l2_dm1").item() == pytest.approx(-(10 + math.log(64)), rel=1e-6)
    assert dispersive_loss(collapsed, "mp1").item() == 0.0
    assert dispersive_loss(collapsed, "infonce_l2").item() == pytest.approx(0.0, abs=1e-5)


def test_pairwise_distances_small_and_large_paths_agree():
    h = torch.randn(80, 700, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # > direct limit
    large = pairwise_sq_distances(h)
    small = torch.stack([pairwise_sq_distances(h[:, i * 70:(i + 1) * 70]) for i in range(10)]).sum(0)
    assert torch.allclose(large, small, rtol=1e-9, atol=1e-8)
    assert torch.all(torch.diagonal(large) == 0)


def test_mp1_is_scale_invariant_and_dd_is_not():
    h = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    for scale in (1e-3, 7.0, 1e3):
        assert dispersive_loss(h * scale, "mp1").item() == pytest.approx(dispersive_loss(h, "mp1").item(), rel=1e-5)
    assert dispersive_loss(h * 10, "dd").item() < dispersive_loss(h, "dd").item() - 0.5


@pytest.mark.parametrize("kind", DISPERSIVE_KINDS)
def test_spread_features_score_lower_than_collapsed(kind):
    gen = torch.Generator().manual_seed(3)
    spread = torch.randn(32, 16, generator=gen)
    collapsed = spread[:1].expand(32, 16).clone()
    assert dispersive_loss(spread, kind).item() < dispersive_loss(collapsed, kind).item()
    if kind in ("mp1", "dd", "infonce_l2", "infonce_cosine", "hinge", "covariance"):
        clustered = torch.sign(spread[:, :1]) * 0.5 + 0.01 * spread  # two tight clusters
        assert dispersive_loss(spread, kind).item() < dispersive_loss(clustered, kind).item()


@pytest.mark.parametrize("kind", DISPERSIVE_KINDS)
def test_gradients_are_finite_on_identical_features(kind):
    h = torch.ones(8, 5, requires_grad=True)
    dispersive_loss([h, h * 2], kind).backward()
    assert torch.isfinite(h.grad).all()


def test_sequence_of_levels_is_summed():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, 3, 4, generator=gen), torch.randn(6, 10, generator=gen)
    assert dispersive_loss([a, b], "mp1").item() == pytest.approx(
        dispersive_loss(a, "mp1").item() + dispersive_loss(b, "mp1").item(), rel=1e-6)


def _near_pair_fraction(h: torch.Tensor) -> float:
    d = pairwise_sq_distances(h.detach()).sqrt()
    off = ~torch.eye(len(h), dtype=torch.bool)
    return float((d[off] < 0.1 * d.max()).float().mean())


def test_minimising_each_loss_breaks_up_clusters():
    """Gradient descent on the loss alone turns two tight clusters into a spread cloud.

    DM1's exact cosine form is the documented exception: its clamped e^10 diagonal leaves almost no gradient.
    """
    gen = torch.Generator().manual_seed(0)
    start = (torch.sign(torch.randn(32, 1, generator=gen)) * torch.tensor([[1.0, 0, 0, 0]])
             + 0.01 * torch.randn(32, 4, generator=gen) + torch.tensor([[0, 2.0, 0, 0]]))
    assert _near_pair_fraction(start) > 0.4
    for kind in DISPERSIVE_KINDS:
        h = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([h], lr=0.05)
        for _ in range(60):
            loss = dispersive_loss(h, kind)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if kind == "infonce_cosine_dm1":
            assert _near_pair_fraction(h) > 0.4, kind
        else:
            assert _near_pair_fraction(h) < 0.15, kind
            assert effective_rank(h) > 2.5, kind


def test_diagnostics():
    line = torch.arange(10.0)[:, None] * torch.tensor([[1.0, 2.0, 2.0]])
    assert effective_rank(line) == pytest.approx(1.0)
    assert effective_rank(torch.eye(50)) == pytest.approx(49.0, rel=1e-6)
    pair = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(pair) == pytest.approx(5.0)


def test_bad_input():
    h = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="dispersive kind"):
        dispersive_loss(h, "infonce")
    with pytest.raises(ConfigError, match="temperature"):
        dispersive_loss(h, "mp1", temperature=0.0)
    with pytest.raises(ConfigError, match="margin"):
        dispersive_loss(h, "hinge", margin=-1.0)
    with pytest.raises(ShapeError, match="B >= 2"):
        dispersive_loss(h[:1], "mp1")
    with pytest.raises(ShapeError, match="B >= 2"):
        dispersive_loss(torch.randn(4), "mp1")
    with pytest.raises(DTypeError, match="floating-point"):
        dispersive_loss(torch.ones(4, 3, dtype=torch.long), "mp1")
    with pytest.raises(DTypeError, match="features\\[1\\]"):
        dispersive_loss([h, "not a tensor"], "mp1")
    with pytest.raises(ShapeError, match="non-empty"):
        dispersive_loss([], "mp1")
