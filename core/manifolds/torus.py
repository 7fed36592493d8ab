r"""The flat torus :math:`\mathbb T^d = (\mathbb R / 2\pi\mathbb Z)^d`: dihedral angles, phases, periodic data.

Points are angles in canonical coordinates :math:`[0, 2\pi)^d`; the metric is flat, so geodesics are straight
lines wrapped around, :math:`\exp_x(u) = (x + u) \bmod 2\pi`, and :math:`\log_x(y)` is the difference wrapped
into :math:`[-\pi, \pi)` (Chen & Lipman, arXiv 2302.03660, their torus experiments; time 0 = source,
1 = data). The geodesic path moves at the constant velocity :math:`\log_{x_0}(x_1)`. The base distribution is
uniform, with density :math:`(2\pi)^{-d}` with respect to the flat volume. Networks should see the angles
through :meth:`FlatTorus.features` (cos, sin), which makes them periodic.

Example:
    >>> import torch
    >>> torus = FlatTorus(dim=1)
    >>> round(torus.logmap(torch.tensor([[0.1]]), torch.tensor([[6.2]])).item(), 4)   # wraps the short way
    -0.1832
"""

from __future__ import annotations

import math

import torch

from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.validation import check_count, check_positive_int

__all__ = ["FlatTorus", "TWO_PI"]

Tensor = torch.Tensor
TWO_PI = 2.0 * math.pi


class FlatTorus(Manifold):
    """The flat torus of dimension ``dim`` (angles with period 2π).

    Args:
        dim: number of angles d.

    Example:
        >>> FlatTorus(2).projx(torch.tensor([[-0.5, 7.0]])).tolist()
        [[5.7831854820251465, 0.7168145179748535]]
    """

    def __init__(self, dim: int = 2):
        self.dim = check_positive_int(dim, "dim", fix="pass e.g. FlatTorus(dim=2)")
        self.point_shape = (self.dim,)

    def describe(self) -> str:
        return f"{self.dim}-torus (angles in [0, 2pi))"

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.remainder(x + u, TWO_PI)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.remainder(y - x + math.pi, TWO_PI) - math.pi

    def projx(self, x: Tensor) -> Tensor:
        return torch.remainder(x, TWO_PI)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return self.logmap(x, y).norm(dim=-1)

    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        point = torch.remainder(x + t * u, TWO_PI)
        return point, u.expand_as(point)

    @property
    def feature_size(self) -> int:
        return 2 * self.dim

    def features(self, x: Tensor) -> Tensor:
        """(cos x, sin x): continuous across the seam at 0 = 2π, shape (..., 2 dim)."""
        return torch.cat([torch.cos(x), torch.sin(x)], dim=-1)

    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        n = check_count(n, "n")
        return TWO_PI * torch.rand(n, self.dim, generator=generator, device=device, dtype=dtype)

    def base_log_prob(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-1], -self.dim * math.log(TWO_PI), dtype=x.dtype, device=x.device)

    def distance_off(self, x: Tensor) -> Tensor:
        # Any real angle names a torus point, but the library works in canonical coordinates [0, 2pi].
        below, above = (-x).clamp_min(0), (x - TWO_PI).clamp_min(0)
        return (below + above).norm(dim=-1)
