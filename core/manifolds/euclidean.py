r"""Euclidean space as a manifold: the flat case of Riemannian flow matching.

With :math:`\exp_x(u) = x + u` and :math:`\log_x(y) = y - x` the geodesic conditional flow of Chen & Lipman
(arXiv 2302.03660) is the straight line :math:`x_t = x_0 + t (x_1 - x_0)` of conditional OT flow matching
(time 0 = source, 1 = data), so this manifold reproduces ordinary flow matching inside the Riemannian code path
(and is a factor of :class:`~flowzoo.core.manifolds.product.Product`, e.g. for positions beside rotations).

Example:
    >>> import torch
    >>> space = Euclidean(2)
    >>> space.logmap(torch.zeros(1, 2), torch.ones(1, 2)).tolist()
    [[1.0, 1.0]]
"""

from __future__ import annotations

import math

import torch

from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.validation import check_count, check_positive_int

__all__ = ["Euclidean"]

Tensor = torch.Tensor


class Euclidean(Manifold):
    """:math:`\\mathbb R^d` with the standard metric; the base distribution is :math:`N(0, I)`.

    Args:
        dim: the dimension d.

    Example:
        >>> Euclidean(3).base_log_prob(torch.zeros(1, 3)).tolist()  # -3/2 log(2 pi)
        [-2.7568156719207764]
    """

    def __init__(self, dim: int):
        self.dim = check_positive_int(dim, "dim", fix="pass e.g. Euclidean(dim=2)")
        self.point_shape = (self.dim,)

    def describe(self) -> str:
        return f"{self.dim}-dimensional Euclidean space"

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def projx(self, x: Tensor) -> Tensor:
        return x

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return (y - x).norm(dim=-1)

    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x + t * u, u.expand_as(torch.broadcast_tensors(x, t * u)[0])

    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        n = check_count(n, "n")
        return torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)

    def base_log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * (x.pow(2).sum(-1) + self.dim * math.log(2.0 * math.pi))

    def distance_off(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
