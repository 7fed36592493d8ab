"""Toy distributions with seeded samplers, for tests, demos and CPU benchmarks.

``sample_toy(name, n, dim=2, seed=None, generator=None, **options)`` returns an (n, dim) float32
CPU tensor. The 2-D sets follow the conventions of torchcfm and FFJORD, so numbers are comparable
across libraries (all of them span roughly [−6, 6]²). Mixture components (modes, moons, squares,
rings, arms) get balanced counts in random order, as sklearn's ``make_moons`` does, instead of
multinomial ones: a batch is then a stratified sample of the same distribution, and W2 between two
sample sets is far less noisy (numbers in ``_balanced_labels``).

* ``"8gaussians"``: 8 equal modes on the circle of radius 5 at angles kπ/4, isotropic std
  0.1^{1/4} ≈ 0.562 (torchcfm's ``sample_8gaussians``: scale 5, covariance √0.1·I).
* ``"moons"``: two interleaved half circles as in sklearn's ``make_moons`` (upper: (cos θ, sin θ),
  lower: (1 − cos θ, ½ − sin θ)), θ ~ U(0, π) i.i.d. (not a grid), Gaussian noise std 0.1, then
  mapped by x ↦ 3x − 1 as torchcfm does; the mean is therefore (0.5, −0.25), not 0.
* ``"checkerboard"``: uniform on the 8 dark squares of a 4×4 board of side-2 squares over [−4, 4]².
* ``"circles"``: two concentric circles of radii 4 and 2 (equal mass), Gaussian noise std 0.2.
* ``"spirals"``: two interleaved Archimedean spirals r = s/3, angle s, s = 3π√U, noise std 0.1.
* ``"gaussian_mixture"``: ``components`` (default 8) equal Gaussians of std ``std`` (0.5) whose
  centres lie on the sphere of radius ``radius`` (4) in ``dim`` dimensions: evenly spaced on the
  circle for dim = 2, fixed pseudo-random directions (seed 0, independent of the sample seed)
  otherwise.
* ``"normal"``: N(0, I_dim).

Example:
    >>> x = sample_toy("moons", 512, seed=0)
    >>> x.shape, bool((x == sample_toy("moons", 512, seed=0)).all())
    (torch.Size([512, 2]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_positive_int

__all__ = ["sample_toy", "TOY_DISTRIBUTIONS"]

Generator = torch.Generator


def _balanced_labels(n: int, k: int, gen: Generator) -> torch.Tensor:
    """Component labels in random order with every count within one of n/k (stratified sampling).

    Drawing the counts from a multinomial instead (as torchcfm's 8gaussians does) moves whole
    chunks of mass between distant modes and dominates the sampling noise of W2: two 1000-point
    moons sets were 0.22–0.47 apart with i.i.d. halves and 0.20–0.30 with exact ones (8gaussians:
    0.38–0.49 with multinomial counts, 0.25–0.27 balanced).
    """
    offset = int(torch.randint(0, k, (1,), generator=gen))
    return ((torch.arange(n) + offset) % k)[torch.randperm(n, generator=gen)]


def _eight_gaussians(n: int, dim: int, gen: Generator) -> torch.Tensor:
    angle = _balanced_labels(n, 8, gen).double() * (math.pi / 4)
    centers = 5.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centers + 0.1**0.25 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _moons(n: int, dim: int, gen: Generator, noise: float = 0.1) -> torch.Tensor:
    theta = torch.rand(n, generator=gen, dtype=torch.float64) * math.pi
    upper = _balanced_labels(n, 2, gen) == 0
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return 3.0 * points - 1.0


def _checkerboard(n: int, dim: int, gen: Generator) -> torch.Tensor:
    square = _balanced_labels(n, 8, gen)
    column = (square % 4).double() - 2.0  # -2 .. 1
    # Dark squares are those with column + row even: two rows per column.
    row = 2.0 * (square // 4).double() - 2.0 + torch.remainder(column, 2.0)
    x = 2.0 * (column + torch.rand(n, generator=gen, dtype=torch.float64))
    y = 2.0 * (row + torch.rand(n, generator=gen, dtype=torch.float64))
    return torch.stack([x, y], dim=1)


def _circles(n: int, dim: int, gen: Generator, noise: float = 0.2) -> torch.Tensor:
    radius = torch.where(_balanced_labels(n, 2, gen) == 0, 4.0, 2.0).double()
    angle = 2.0 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return points + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _spirals(n: int, dim: int, gen: Generator, noise: float = 0.1) -> torch.Tensor:
    s = 3.0 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64).sqrt()
    arm = torch.where(_balanced_labels(n, 2, gen) == 0, 1.0, -1.0).double()[:, None]
    points = arm * (s[:, None] / 3.0) * torch.stack([-torch.cos(s), torch.sin(s)], dim=1)
    return points + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)


def _mixture_centers(dim: int, components: int = 8, radius: float = 4.0) -> torch.Tensor:
    """The fixed centres of ``"gaussian_mixture"``: (components, dim), all at distance ``radius``."""
    if dim == 1:
        return radius * torch.where(torch.arange(components) % 2 == 0, 1.0, -1.0).double()[:, None]
    if dim == 2:
        angle = 2.0 * math.pi * torch.arange(components, dtype=torch.float64) / components
        return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    directions = torch.randn(components, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return radius * directions / directions.norm(dim=1, keepdim=True)


def _gaussian_mixture(n: int, dim: int, gen: Generator, components: int = 8, radius: float = 4.0,
                      std: float = 0.5) -> torch.Tensor:
    if not isinstance(components, int) or components < 1 or not radius >= 0 or not std >= 0:
        raise ConfigError(expected("components >= 1, radius >= 0 and std >= 0",
                                   f"components={components!r}, radius={radius!r}, std={std!r}",
                                   "pass e.g. components=8, radius=4.0, std=0.5"))
    centers = _mixture_centers(dim, components, radius)
    pick = _balanced_labels(n, components, gen)
    return centers[pick] + std * torch.randn(n, dim, generator=gen, dtype=torch.float64)


def _normal(n: int, dim: int, gen: Generator) -> torch.Tensor:
    return torch.randn(n, dim, generator=gen, dtype=torch.float64)


TOY_DISTRIBUTIONS: Mapping[str, Callable[..., torch.Tensor]] = MappingProxyType({
    "8gaussians": _eight_gaussians,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "spirals": _spirals,
    "gaussian_mixture": _gaussian_mixture,
    "normal": _normal,
})
"""Name → sampler ``(n, dim, generator, **options) -> (n, dim) float64``; use :func:`sample_toy`."""

_ANY_DIM = {"gaussian_mixture", "normal"}


def sample_toy(name: str, n: int, *, dim: int = 2, seed: int | None = None,
               generator: torch.Generator | None = None, **options: float) -> torch.Tensor:
    """Draw ``n`` samples of the toy distribution ``name`` as an (n, dim) float32 tensor.

    Args:
        name: one of :data:`TOY_DISTRIBUTIONS` (see the module docstring).
        n: number of samples, ≥ 1.
        dim: dimension; only ``"gaussian_mixture"`` and ``"normal"`` accept dim ≠ 2.
        seed: seed of a fresh generator (same seed, same samples).
        generator: a CPU torch.Generator to draw from (advances it); at most one of seed/generator.
            With neither, the global torch RNG is used.
        **options: distribution parameters, e.g. ``noise`` for moons/circles/spirals and
            ``components``, ``radius``, ``std`` for gaussian_mixture.
    """
    if name not in TOY_DISTRIBUTIONS:
        raise ConfigError(expected(f"a toy distribution in {sorted(TOY_DISTRIBUTIONS)}", repr(name),
                                   "pick one of the listed names"))
    check_positive_int(n, "n", fix="ask for at least one sample")
    check_positive_int(dim, "dim", fix="pass e.g. dim=2")
    if dim != 2 and name not in _ANY_DIM:
        raise ConfigError(expected(f"dim=2 for the 2-D distribution {name!r}", f"dim={dim}",
                                   "use dim=2, or 'gaussian_mixture' / 'normal' for other dimensions"))
    if seed is not None and generator is not None:
        raise ConfigError(expected("at most one of seed and generator", "both", "pass only one of them"))
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    try:
        samples = TOY_DISTRIBUTIONS[name](n, dim, generator, **options)
    except TypeError as err:
        raise ConfigError(expected(f"options accepted by {name!r}", sorted(options), str(err))) from err
    return samples.float()
