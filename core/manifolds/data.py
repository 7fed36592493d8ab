r"""Data on manifolds with exact samplers and exact log-densities, so that NLLs can be checked.

* :class:`VonMisesFisherMixture` on :math:`S^{p-1}`: components :math:`C_p(\kappa)\exp(\kappa\,\mu^\top x)` with
  :math:`C_p(\kappa) = \kappa^{p/2-1} / ((2\pi)^{p/2} I_{p/2-1}(\kappa))`, sampled exactly by Wood's rejection
  scheme (Wood, "Simulation of the von Mises Fisher distribution", 1994); :func:`earth_like_mixture` places a
  few of them on S² like continents (as the earth-science data sets of Chen & Lipman, arXiv 2302.03660).
* :class:`WrappedNormalMixture` on the flat torus: each angle a wrapped normal (the density sums the normal over
  shifts by 2πk for k = −3, ..., 3, exact to machine precision for σ ≤ 1.5); :func:`ramachandran_like_mixture` has the
  α-helix, β-sheet, polyproline and left-handed-helix modes of protein backbone angles (φ, ψ).
* :class:`IsotropicSO3Mixture` on SO(3): :math:`R = C\exp(\hat\omega)`, :math:`\omega \sim N(0, \sigma^2 I_3)`; with
  θ the angle of :math:`C^\top R` the density w.r.t. the normalised Haar measure is
  :math:`\frac{4\pi^2}{1-\cos\theta}\sum_k s_k^2\,\mathcal N_3(s_k)`, :math:`s_k = \theta + 2\pi k` (the Haar density
  in exponential coordinates is :math:`(1-\cos|\omega|)/(4\pi^2|\omega|^2)`); :func:`symmetric_so3_mixture`
  centres it on the rotations by multiples of 2π/n about a few symmetry axes.

Every ``log_prob`` is w.r.t. the Riemannian volume of the matching manifold (the Frobenius metric for SO(3)), as the
manifolds' ``base_log_prob`` and :func:`~flowzoo.core.manifolds.likelihood.manifold_log_likelihood` are, so
NLLs compare directly. Rationale: toy data whose density is known makes likelihood bugs visible.

Example:
    >>> import torch
    >>> data = earth_like_mixture()
    >>> x = data.sample(5, generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool(torch.allclose(x.norm(dim=-1), torch.ones(5)))
    (torch.Size([5, 3]), True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.manifolds.so3 import SO3
from flowzoo.core.manifolds.torus import TWO_PI
from flowzoo.core.validation import check_count, check_tensor

__all__ = ["VonMisesFisherMixture", "WrappedNormalMixture", "IsotropicSO3Mixture", "earth_like_mixture",
           "ramachandran_like_mixture", "symmetric_so3_mixture"]

Tensor = torch.Tensor


def _weights(weights, k: int) -> Tensor:
    w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ConfigError(expected(f"{k} non-negative mixture weights", w.tolist(), "pass one weight per component"))
    return w / w.sum()


def _positive(values, shape: tuple[int, ...], name: str) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64).expand(shape).clone()
    if not bool(torch.isfinite(v).all()) or bool((v <= 0).any()):
        raise ConfigError(expected(f"positive finite {name}", v.tolist(), f"pass {name} > 0"))
    return v


def _components(n: int, weights: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.multinomial(weights, check_count(n, "n"), replacement=True, generator=generator)


class VonMisesFisherMixture:
    """A mixture of von Mises–Fisher distributions on the unit sphere in R^p.

    Args:
        means: (K, p) mean directions (normalised here).
        kappas: (K,) concentrations > 0 (a number applies to all).
        weights: (K,) mixture weights (None: equal).

    Example:
        >>> vmf = VonMisesFisherMixture(torch.tensor([[0.0, 0.0, 1.0]]), 10.0)
        >>> round(vmf.log_prob(torch.tensor([[0.0, 0.0, 1.0]])).item(), 4)   # log(10 / (2 pi (1 - e^-20)))
        0.4647
    """

    def __init__(self, means, kappas, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2 or means.shape[1] < 2:
            raise ShapeError(expected("means of shape (K, p), p >= 2", tuple(means.shape),
                                      "pass one row per component"))
        self.means = means / means.norm(dim=1, keepdim=True)
        k, self.p = means.shape
        self.kappas = _positive(kappas, (k,), "kappas")
        self.weights = _weights(weights, k)
        order = self.p / 2.0 - 1.0
        kap = self.kappas.numpy()
        log_bessel = np.log(special.ive(order, kap)) + kap
        self.log_norm = torch.as_tensor(order * np.log(kap) - (self.p / 2.0) * math.log(TWO_PI) - log_bessel)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the surface measure of the sphere, shape (B,)."""
        x = check_tensor(x, "x", min_dim=2)
        terms = self.log_norm + torch.log(self.weights) + self.kappas * (x.double() @ self.means.T)
        return torch.logsumexp(terms, dim=1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples (float32), shape (n, p)."""
        which = _components(n, self.weights, generator)
        mu, kappa = self.means[which], self.kappas[which]
        w = self._wood_cosines(kappa, generator)
        # A uniform direction orthogonal to mu, then x = w mu + sqrt(1 - w^2) v.
        v = torch.randn(mu.shape, generator=generator, dtype=torch.float64)
        v = v - (v * mu).sum(1, keepdim=True) * mu
        v = v / v.norm(dim=1, keepdim=True)
        x = w[:, None] * mu + (1.0 - w * w).clamp_min(0).sqrt()[:, None] * v
        return (x / x.norm(dim=1, keepdim=True)).float()

    def _wood_cosines(self, kappa: Tensor, generator: torch.Generator | None) -> Tensor:
        """The cosines w = mu^T x by Wood's rejection sampler (Beta((p-1)/2, (p-1)/2) drawn from chi-squares)."""
        m = self.p - 1.0
        b = m / (2.0 * kappa + torch.sqrt(4.0 * kappa * kappa + m * m))
        x0 = (1.0 - b) / (1.0 + b)
        c = kappa * x0 + m * torch.log(1.0 - x0 * x0)
        w = torch.empty_like(kappa)
        todo = torch.arange(kappa.shape[0])
        while todo.numel():
            g1 = torch.randn(todo.numel(), self.p - 1, generator=generator, dtype=torch.float64).pow(2).sum(1)
            g2 = torch.randn(todo.numel(), self.p - 1, generator=generator, dtype=torch.float64).pow(2).sum(1)
            z = g1 / (g1 + g2)
            bb, kk = b[todo], kappa[todo]
            cand = (1.0 - (1.0 + bb) * z) / (1.0 - (1.0 - bb) * z)
            u = torch.rand(todo.numel(), generator=generator, dtype=torch.float64)
            ok = kk * cand + m * torch.log(1.0 - x0[todo] * cand) - c[todo] >= torch.log(u)
            w[todo[ok]] = cand[ok]
            todo = todo[~ok]
        return w


class WrappedNormalMixture:
    """A mixture of products of wrapped normals on the flat torus [0, 2π)^d.

    Args:
        means: (K, d) mode angles (any real values; wrapped).
        scales: (K, d), (K,) or a number: the normal's standard deviations (radians).
        weights: (K,) mixture weights (None: equal).

    Example:
        >>> data = WrappedNormalMixture(torch.tensor([[0.0]]), 0.1)
        >>> round(data.log_prob(torch.tensor([[0.0]])).item(), 4)            # log N(0; 0, 0.1^2)
        1.3836
    """

    wraps = 3

    def __init__(self, means, scales, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ShapeError(expected("means of shape (K, d)", tuple(means.shape), "pass one row per component"))
        self.means = torch.remainder(means, TWO_PI)
        k, self.d = means.shape
        scales = torch.as_tensor(scales, dtype=torch.float64)
        self.scales = _positive(scales[:, None] if scales.dim() == 1 else scales, (k, self.d), "scales")
        self.weights = _weights(weights, k)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the flat volume of the torus, shape (B,)."""
        x = check_tensor(x, "x", min_dim=2).double()
        shifts = TWO_PI * torch.arange(-self.wraps, self.wraps + 1, dtype=torch.float64)
        diff = x[:, None, :, None] - self.means[None, :, :, None] + shifts        # (B, K, d, wraps)
        scale = self.scales[None, :, :, None]
        per_wrap = -0.5 * (diff / scale) ** 2 - torch.log(scale) - 0.5 * math.log(TWO_PI)
        per_dim = torch.logsumexp(per_wrap, dim=-1).sum(-1)                          # (B, K)
        return torch.logsumexp(per_dim + torch.log(self.weights), dim=1).float()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = _components(n, self.weights, generator)
        noise = torch.randn(which.shape[0], self.d, generator=generator, dtype=torch.float64)
        return torch.remainder(self.means[which] + self.scales[which] * noise, TWO_PI).float()


class IsotropicSO3Mixture:
    """A mixture of isotropic Gaussians in the Lie algebra of SO(3), pushed to rotations around centres.

    Args:
        centres: (K, 3, 3) rotation matrices.
        scales: (K,) or a number: σ of the rotation vector (radians).
        weights: (K,) mixture weights (None: equal).

    Example:
        >>> data = IsotropicSO3Mixture(torch.eye(3)[None], 0.2)
        >>> data.sample(2, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 3])
    """

    wraps = 2

    def __init__(self, centres, scales, weights=None):
        centres = torch.as_tensor(centres, dtype=torch.float64)
        if centres.dim() != 3 or centres.shape[1:] != (3, 3):
            raise ShapeError(expected("centres of shape (K, 3, 3)", tuple(centres.shape), "pass rotation matrices"))
        self.centres = SO3().projx(centres)
        k = centres.shape[0]
        self.scales = _positive(scales, (k,), "scales")
        self.weights = _weights(weights, k)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density w.r.t. the Riemannian volume of SO(3) with the Frobenius metric, shape (B,)."""
        x = check_tensor(x, "x", min_dim=3).double()
        theta = SO3().angle(self.centres[None], x[:, None])                         # (B, K)
        k = torch.arange(-self.wraps, self.wraps + 1, dtype=torch.float64)
        s = theta[..., None] + TWO_PI * k                                            # (B, K, wraps)
        sigma = self.scales[None, :, None]
        log_normal = -0.5 * (s / sigma) ** 2 - 3.0 * torch.log(sigma) - 1.5 * math.log(TWO_PI)
        # log(s^2 / (1 - cos theta)) = log(s^2 / (2 sin^2(theta/2))); at k = 0 it is -2 log sinc(theta/2) + log 2.
        half = 0.5 * theta[..., None]
        sin_half = torch.sin(half).clamp_min(1e-300)
        ratio = 2.0 * torch.log(s.abs().clamp_min(1e-300)) - math.log(2.0) - 2.0 * torch.log(sin_half)
        sinc_half = torch.where(half < 1e-4, 1.0 - half * half / 6.0, torch.sin(half) / half.clamp_min(1e-300))
        ratio = torch.where(k == 0, math.log(2.0) - 2.0 * torch.log(sinc_half), ratio)
        log_haar = math.log(4.0 * math.pi ** 2) + torch.logsumexp(log_normal + ratio, dim=-1)
        mixture = torch.logsumexp(log_haar + torch.log(self.weights), dim=1)
        return (mixture - SO3.log_volume).float()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = _components(n, self.weights, generator)
        w = self.scales[which, None] * torch.randn(which.shape[0], 3, generator=generator, dtype=torch.float64)
        return (self.centres[which] @ SO3().exp_algebra(w)).float()


def _direction(lat: float, lon: float) -> list[float]:
    lat, lon = math.radians(lat), math.radians(lon)
    return [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]


def earth_like_mixture() -> VonMisesFisherMixture:
    """Six vMF "continents" on S² (latitude/longitude of rough continent centres, concentrations 8 to 40)."""
    sites = [(50, 15, 25.0), (5, 20, 12.0), (45, 95, 10.0), (-25, 135, 20.0), (45, -100, 12.0), (-15, -60, 15.0)]
    return VonMisesFisherMixture([_direction(a, b) for a, b, _ in sites], [k for *_, k in sites],
                                 [0.2, 0.2, 0.2, 0.1, 0.15, 0.15])


def ramachandran_like_mixture() -> WrappedNormalMixture:
    """Backbone angles (φ, ψ) on T²: right-handed α-helix, β-sheet, polyproline II and left-handed helix modes."""
    modes = [(-63.0, -43.0, 12.0, 12.0, 0.45), (-120.0, 130.0, 18.0, 16.0, 0.3), (-70.0, 145.0, 8.0, 10.0, 0.15),
             (57.0, 47.0, 10.0, 10.0, 0.1)]
    means = [[math.radians(phi), math.radians(psi)] for phi, psi, *_ in modes]
    scales = [[math.radians(a), math.radians(b)] for _, _, a, b, _ in modes]
    return WrappedNormalMixture(means, scales, [m[-1] for m in modes])


def symmetric_so3_mixture(scale: float = 0.15) -> IsotropicSO3Mixture:
    """Rotations near the symmetries of a few axes: multiples of 2π/4 about z, of 2π/3 about x, π about (1,1,1)."""
    centres = []
    for axis, order, ks in (((0.0, 0.0, 1.0), 4, range(4)), ((1.0, 0.0, 0.0), 3, (1, 2)),
                            ((1.0, 1.0, 1.0), 2, (1,))):
        a = torch.tensor(axis, dtype=torch.float64)
        a = a / a.norm()
        centres += [SO3().exp_algebra((TWO_PI * k / order) * a) for k in ks]
    return IsotropicSO3Mixture(torch.stack(centres), scale)
