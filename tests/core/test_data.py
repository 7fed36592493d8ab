"""Toy distributions: shapes, seeding, and the geometry each one promises."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.data import TOY_DISTRIBUTIONS, sample_toy
from flowzoo.core.errors import ConfigError

NAMES = ["8gaussians", "moons", "checkerboard", "circles", "spirals", "gaussian_mixture", "normal"]


def test_registry_lists_every_distribution():
    assert sorted(TOY_DISTRIBUTIONS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_seeding(name):
    x = sample_toy(name, 300, seed=1)
    assert x.shape == (300, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert torch.equal(x, sample_toy(name, 300, seed=1))
    assert not torch.equal(x, sample_toy(name, 300, seed=2))
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(sample_toy(name, 300, generator=gen), x)
    assert not torch.equal(sample_toy(name, 300, generator=gen), x)  # the generator advanced
    torch.manual_seed(5)
    a = sample_toy(name, 10)
    torch.manual_seed(5)
    assert torch.equal(a, sample_toy(name, 10))  # no seed: the global RNG


@pytest.mark.parametrize("name,dim", [("gaussian_mixture", 1), ("gaussian_mixture", 10), ("normal", 7)])
def test_any_dimension(name, dim):
    assert sample_toy(name, 50, dim=dim, seed=0).shape == (50, dim)


def test_eight_gaussians_has_eight_equal_modes_on_radius_five():
    x = sample_toy("8gaussians", 8000, seed=0).double()
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centers = 5 * torch.stack([angles.cos(), angles.sin()], 1)
    nearest = torch.cdist(x, centers).argmin(1)
    counts = torch.bincount(nearest, minlength=8).double() / len(x)
    assert bool(((counts - 0.125).abs() < 0.02).all())
    residual = x - centers[nearest]
    assert float(residual.std()) == pytest.approx(0.1**0.25, rel=0.05)
    assert float(x.norm(dim=1).mean()) == pytest.approx(5.0, rel=0.03)


def test_moons_geometry():
    x = sample_toy("moons", 8000, seed=0).double()
    # torchcfm's 3x − 1 map of sklearn's moons (mean (0.5, 0.25)) puts the mean at (0.5, −0.25).
    torch.testing.assert_close(x.mean(0), torch.tensor([0.5, -0.25], dtype=torch.float64), atol=0.06, rtol=0)
    u = (x + 1) / 3
    upper = (u - torch.tensor([0.0, 0.0])).norm(dim=1)
    lower = (u - torch.tensor([1.0, 0.5])).norm(dim=1)
    on_arc = torch.minimum((upper - 1).abs(), (lower - 1).abs())
    assert float(on_arc.median()) < 0.1


def test_checkerboard_only_dark_squares():
    x = sample_toy("checkerboard", 5000, seed=0)
    assert float(x.abs().max()) <= 4.0
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)).remainder(2)
    assert bool((parity == 0).all())
    squares = torch.unique(torch.floor(x / 2), dim=0)
    assert len(squares) == 8


def test_circles_and_spirals_geometry():
    r = sample_toy("circles", 4000, seed=0).norm(dim=1)
    inner, outer = r[r < 3], r[r >= 3]
    assert float(inner.mean()) == pytest.approx(2.0, abs=0.05) and float(outer.mean()) == pytest.approx(4.0, abs=0.05)
    assert 0.4 < len(inner) / len(r) < 0.6
    s = sample_toy("spirals", 4000, seed=0)
    assert float(s.norm(dim=1).max()) < math.pi + 0.6
    torch.testing.assert_close(s.mean(0), torch.zeros(2), atol=0.1, rtol=0)


def test_gaussian_mixture_components_on_a_sphere():
    x = sample_toy("gaussian_mixture", 4000, dim=10, seed=0, components=4, radius=6.0, std=0.1)
    # With a small std every sample sits near one of 4 points at distance 6 from the origin.
    assert float(x.norm(dim=1).mean()) == pytest.approx(6.0, rel=0.02)
    clusters, remaining = 0, x
    while len(remaining):
        remaining = remaining[(remaining - remaining[0]).norm(dim=1) > 1.5]
        clusters += 1
    assert clusters == 4
    a = sample_toy("gaussian_mixture", 100, dim=10, seed=1)
    b = sample_toy("gaussian_mixture", 100, dim=10, seed=2)
    # The centres do not depend on the sample seed: both draws are close to the same 8 centres.
    assert float(torch.cdist(a, b).min(1).values.mean()) < 3.0


def test_normal_statistics():
    x = sample_toy("normal", 20000, dim=3, seed=0)
    torch.testing.assert_close(x.mean(0), torch.zeros(3), atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(3), atol=0.03, rtol=0)


def test_bad_requests_raise_config_errors():
    with pytest.raises(ConfigError, match="8gaussians"):
        sample_toy("swissroll", 10)
    with pytest.raises(ConfigError, match="dim=2"):
        sample_toy("moons", 10, dim=3)
    for n in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            sample_toy("normal", n)
    with pytest.raises(ConfigError):
        sample_toy("normal", 10, dim=0)
    with pytest.raises(ConfigError, match="at most one"):
        sample_toy("normal", 10, seed=0, generator=torch.Generator())
    with pytest.raises(ConfigError):
        sample_toy("moons", 10, components=3)
    with pytest.raises(ConfigError):
        sample_toy("gaussian_mixture", 10, components=0)
