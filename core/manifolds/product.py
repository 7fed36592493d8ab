r"""Products of manifolds, e.g. :math:`\mathbb T^2 \times S^2`, SE(3)-like :math:`\mathbb R^3 \times SO(3)`.

A point of :math:`\mathcal M_1 \times \dots \times \mathcal M_k` is the concatenation of the factors' flattened
ambient coordinates, shape (B, D) with :math:`D = \sum_i |\text{point}_i|`. The product metric is the sum of the
factors' metrics, so every operation (exp, log, projections, the geodesic and its velocity) acts factor by factor,
the squared distance is the sum of the factors' squared distances, and the base distribution is the product of
the factors' bases (its log-density the sum). The geodesic path of Chen & Lipman (arXiv 2302.03660; time
0 = source, 1 = data) on a product is the product of the factors' geodesic paths. Rationale: one flat vector per
point lets every network, coupling and metric of flowzoo take product points unchanged.

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import FlatTorus, Sphere
    >>> space = Product(FlatTorus(2), Sphere(2))
    >>> x = space.random_base(4, generator=torch.Generator().manual_seed(0))
    >>> x.shape, space.dim
    (torch.Size([4, 5]), 4)
"""

from __future__ import annotations

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.validation import check_count

__all__ = ["Product"]

Tensor = torch.Tensor


class Product(Manifold):
    """The product of ``factors`` with concatenated flat coordinates.

    Args:
        factors: one or more :class:`~flowzoo.core.manifolds.base.Manifold` objects (a product may be a factor).

    Example:
        >>> from flowzoo.core.manifolds import Euclidean, SO3
        >>> Product(Euclidean(3), SO3()).point_shape
        (12,)
    """

    def __init__(self, *factors: Manifold):
        if len(factors) < 1 or not all(isinstance(f, Manifold) for f in factors):
            raise ConfigError(expected("one or more Manifold factors", [type(f).__name__ for f in factors],
                                       "pass e.g. Product(FlatTorus(2), Sphere(2))"))
        self.factors = tuple(factors)
        self.sizes = tuple(f.ambient_size for f in factors)
        self.point_shape = (sum(self.sizes),)
        self.dim = sum(f.dim for f in factors)

    def describe(self) -> str:
        return "product " + " x ".join(f"[{f.describe()}]" for f in self.factors)

    # ---------------------------------------------------------------- split / join
    def split(self, x: Tensor) -> list[Tensor]:
        """The factors' points of flat product points (..., D), each reshaped to ``(..., *factor.point_shape)``."""
        lead = x.shape[:-1]
        return [part.reshape(*lead, *f.point_shape)
                for part, f in zip(torch.split(x, self.sizes, dim=-1), self.factors)]

    def join(self, parts: list[Tensor]) -> Tensor:
        """The inverse of :meth:`split`."""
        return torch.cat([p.reshape(*p.shape[:p.dim() - f.point_ndim], f.ambient_size)
                          for p, f in zip(parts, self.factors)], dim=-1)

    def _per_factor(self, method: str, *tensors: Tensor) -> Tensor:
        pieces = zip(*(self.split(t) for t in tensors))
        return self.join([getattr(f, method)(*args) for f, args in zip(self.factors, pieces)])

    def _factor_time(self, t: Tensor, factor: Manifold) -> Tensor:
        # t arrives as (..., 1) for the flat product point; a factor wants one singleton per point dimension.
        return t.reshape(*t.shape[:-1], *([1] * factor.point_ndim))

    # ---------------------------------------------------------------- manifold
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._per_factor("expmap", x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._per_factor("logmap", x, y)

    def projx(self, x: Tensor) -> Tensor:
        return self._per_factor("projx", x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._per_factor("proju", x, u)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        squares = [f.dist(a, b) ** 2 for f, a, b in zip(self.factors, self.split(x), self.split(y))]
        return torch.stack(torch.broadcast_tensors(*squares)).sum(0).sqrt()

    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        points, velocities = [], []
        for f, a, b in zip(self.factors, self.split(x), self.split(u)):
            point, velocity = f.exp_curve(a, b, self._factor_time(t, f))
            points.append(point)
            velocities.append(velocity)
        return self.join(points), self.join(velocities)

    @property
    def feature_size(self) -> int:
        return sum(f.feature_size for f in self.factors)

    def features(self, x: Tensor) -> Tensor:
        return torch.cat([f.features(p) for f, p in zip(self.factors, self.split(x))], dim=-1)

    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        n = check_count(n, "n")
        return self.join([f.random_base(n, generator=generator, device=device, dtype=dtype) for f in self.factors])

    def base_log_prob(self, x: Tensor) -> Tensor:
        return sum(f.base_log_prob(p) for f, p in zip(self.factors, self.split(x)))

    def distance_off(self, x: Tensor) -> Tensor:
        squares = [f.distance_off(p) ** 2 for f, p in zip(self.factors, self.split(x))]
        return torch.stack(squares).sum(0).sqrt()
