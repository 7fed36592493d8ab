r"""The unit sphere :math:`S^d \subset \mathbb R^{d+1}` (directions, positions on the Earth, normalised features).

Closed forms (used by Chen & Lipman, arXiv 2302.03660, for their sphere data; time 0 = source, 1 = data):

.. math::  \exp_x(u) = \cos\|u\|\,x + \frac{\sin\|u\|}{\|u\|}\,u, \qquad
           \log_x(y) = \frac{\theta}{\sin\theta}\,(y - \langle x, y\rangle x), \quad \theta = d(x, y),

and the geodesic path :math:`x_t = \exp_{x_0}(t u)`, :math:`u = \log_{x_0}(x_1)`, has velocity
:math:`\dot x_t = -\|u\|\sin(t\|u\|)\,x_0 + \cos(t\|u\|)\,u` (the derivative of slerp), computed directly instead
of by forward-mode autodiff. Rationale for the numerics: the distance is :math:`2\,\mathrm{atan2}(\|x-y\|,
\|x+y\|)`, accurate at 0 and at π where :math:`\arccos\langle x,y\rangle` is not; the ratios use their series
below 1e-3; the logarithm of antipodal points (where every direction is a minimising geodesic) returns a fixed
tangent direction of length π instead of 0 or NaN.

Example:
    >>> import torch
    >>> sphere = Sphere()
    >>> x, y = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    >>> [round(v, 4) for v in sphere.logmap(x, y)[0].tolist()], round(sphere.dist(x, y).item(), 4)
    ([0.0, 1.5708, 0.0], 1.5708)
"""

from __future__ import annotations

import math

import torch

from flowzoo.core.manifolds.base import SERIES_BELOW, Manifold, series_sinc
from flowzoo.core.validation import check_count, check_positive_int

__all__ = ["Sphere"]

Tensor = torch.Tensor


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


class Sphere(Manifold):
    """The unit sphere of intrinsic dimension ``dim``; points are unit vectors in :math:`\\mathbb R^{dim+1}`.

    The geometry (exp, log, projections, distance) works for unit vectors of any length; ``dim`` fixes the base
    distribution (uniform) and the shape check.

    Args:
        dim: intrinsic dimension d (2 for the ordinary sphere in R^3).

    Example:
        >>> round(Sphere(2).base_log_prob(torch.tensor([[0.0, 0.0, 1.0]])).item(), 4)  # -log(4 pi)
        -2.531
    """

    def __init__(self, dim: int = 2):
        self.dim = check_positive_int(dim, "dim", fix="pass e.g. Sphere(dim=2) for unit vectors in R^3")
        self.point_shape = (self.dim + 1,)
        half = 0.5 * (self.dim + 1)
        self.log_area = math.log(2.0) + half * math.log(math.pi) - math.lgamma(half)

    def describe(self) -> str:
        return f"{self.dim}-sphere (unit vectors in R^{self.dim + 1})"

    def projx(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u - _dot(x, u) * x

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        n = u.norm(dim=-1, keepdim=True)
        return self.projx(torch.cos(n) * x + series_sinc(n) * u)

    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        n = u.norm(dim=-1, keepdim=True)
        angle = t * n
        cos, sin = torch.cos(angle), torch.sin(angle)
        point = cos * x + (t * series_sinc(angle)) * u
        velocity = -(n * sin) * x + cos * u
        return self.projx(point), velocity

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        # y - <x,y> x from the difference d = y - x (accurate for nearby points): y - <x,y>x = d - <x,d>x.
        d = y - x
        along = _dot(x, d)
        w = d - along * x
        s = w.norm(dim=-1, keepdim=True)
        c = 1.0 + along
        theta = torch.atan2(s, c)
        small = s < SERIES_BELOW
        ratio = torch.where(small & (c > 0), 1.0 + s * s / 6.0, theta / s.clamp_min(torch.finfo(s.dtype).tiny))
        u = ratio * w
        antipodal = (s < 64 * torch.finfo(s.dtype).eps) & (c < 0)
        if bool(antipodal.any()):
            u = torch.where(antipodal, math.pi * self._some_tangent(x), u)
        return u

    def _some_tangent(self, x: Tensor) -> Tensor:
        """A unit tangent vector at x, fixed by x: the projection of the axis along which x has its smallest magnitude."""
        axis = torch.zeros_like(x).scatter_(-1, x.abs().argmin(dim=-1, keepdim=True), 1.0)
        v = self.proju(x, axis)
        return v / v.norm(dim=-1, keepdim=True)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return 2.0 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))

    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        n = check_count(n, "n")
        return self.projx(torch.randn(n, self.dim + 1, generator=generator, device=device, dtype=dtype))

    def base_log_prob(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -self.log_area, dtype=x.dtype, device=x.device)

    def distance_off(self, x: Tensor) -> Tensor:
        return (x.norm(dim=-1) - 1.0).abs()
