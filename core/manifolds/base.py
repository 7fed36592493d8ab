r"""The manifold contract of Riemannian flow matching, and the check that points lie on the manifold.

Chen & Lipman, "Flow Matching on General Geometries" (arXiv 2302.03660), train a velocity field on a Riemannian
manifold :math:`\mathcal M` with the geodesic conditional path :math:`x_t = \exp_{x_0}(t \log_{x_0} x_1)`
(their conditional flow with the geodesic distance as premetric; in flowzoo's time: t = 0 source, t = 1 data).
Every manifold here is embedded in a Euclidean space (or is flat), so a point is stored in ambient coordinates of shape
``point_shape``, a tangent vector in the same coordinates, and the Riemannian metric is the ambient (Frobenius)
inner product restricted to the tangent space: the flow-matching loss is then an ordinary squared distance after
projecting the prediction onto the tangent space.

A :class:`Manifold` gives the exponential and logarithm maps, the two projections, the geodesic distance, the
base (prior) distribution with its log-density with respect to the Riemannian volume, and the closed-form
geodesic :meth:`Manifold.exp_curve` :math:`t \mapsto (\exp_x(t u), \tfrac{d}{dt}\exp_x(t u))` that the path
uses instead of automatic differentiation. Rationale: one small object per geometry keeps paths, solvers,
likelihoods and couplings geometry-agnostic.

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import Sphere
    >>> Sphere().check_on(torch.tensor([[0.0, 0.0, 2.0]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    flowzoo.core.manifolds.base.OffManifoldError: expected x on the 2-sphere ... up to 1 off the manifold. Fix: ...
"""

from __future__ import annotations

import abc
import math

import torch

from flowzoo.core.errors import FlowzooError, ShapeError, expected
from flowzoo.core.validation import check_number, check_tensor

__all__ = ["OffManifoldError", "Manifold", "series_sinc"]

Tensor = torch.Tensor

# Below this magnitude the trigonometric ratios switch to their Taylor series (error < 1e-13 there).
SERIES_BELOW = 1e-3


def series_sinc(n: Tensor) -> Tensor:
    r""":math:`\sin(n)/n`, with its series :math:`1 - n^2/6` near 0 so that neither the value nor its gradient is NaN.

    Example:
        >>> series_sinc(torch.tensor([0.0, math.pi / 2])).tolist()
        [1.0, 0.6366197466850281]
    """
    small = n.abs() < SERIES_BELOW
    safe = torch.where(small, torch.ones_like(n), n)
    return torch.where(small, 1.0 - n * n / 6.0, torch.sin(safe) / safe)


class OffManifoldError(FlowzooError, ValueError):
    """Points given as manifold points lie off the manifold (the message states how far)."""


class Manifold(abc.ABC):
    """A Riemannian manifold embedded in (or equal to) a Euclidean space.

    Attributes:
        point_shape: the trailing shape of one point (and of one tangent vector), e.g. ``(3,)`` for the 2-sphere.
        dim: the intrinsic dimension.

    Every method takes tensors whose trailing dimensions are ``point_shape`` and broadcasts over the leading ones;
    per-point quantities (``dist``, ``base_log_prob``) have the leading shape.
    """

    point_shape: tuple[int, ...]
    dim: int

    # ------------------------------------------------------------------ geometry (each manifold implements)
    @abc.abstractmethod
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        r"""The exponential map :math:`\exp_x(u)`: follow the geodesic from ``x`` with initial velocity ``u``."""

    @abc.abstractmethod
    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        r"""The logarithm map :math:`\log_x(y)`: the initial velocity of the minimising geodesic from x to y."""

    @abc.abstractmethod
    def projx(self, x: Tensor) -> Tensor:
        """The nearest point of the manifold (canonical coordinates for the torus)."""

    @abc.abstractmethod
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """The orthogonal projection of an ambient vector ``u`` onto the tangent space at ``x``."""

    @abc.abstractmethod
    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """The geodesic distance, shape = the leading (batch) shape."""

    @abc.abstractmethod
    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""The geodesic :math:`\gamma(t) = \exp_x(t u)` and its velocity :math:`\dot\gamma(t)`, in closed form.

        ``t`` broadcasts against the leading shape with the point dimensions as singletons (e.g. (B, 1)).
        """

    @abc.abstractmethod
    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` samples of the base distribution (uniform / Haar on compact manifolds), shape ``(n, *point_shape)``."""

    @abc.abstractmethod
    def base_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the base distribution with respect to the Riemannian volume, shape = leading shape."""

    @abc.abstractmethod
    def distance_off(self, x: Tensor) -> Tensor:
        """How far each point lies from the manifold (0 on it), shape = leading shape."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The manifold in words, for error messages."""

    # ------------------------------------------------------------------ shared
    @property
    def point_ndim(self) -> int:
        """Number of trailing dimensions of one point."""
        return len(self.point_shape)

    @property
    def ambient_size(self) -> int:
        """Number of ambient coordinates of one point."""
        return math.prod(self.point_shape)

    @property
    def feature_size(self) -> int:
        """Size of :meth:`features` of one point."""
        return self.ambient_size

    def features(self, x: Tensor) -> Tensor:
        """Network input features of points, shape (..., feature_size): the flattened ambient coordinates by
        default; the torus overrides it with (cos, sin) so that a network sees a periodic input."""
        return x.reshape(*x.shape[:x.dim() - self.point_ndim], self.ambient_size)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The Riemannian metric at ``x``: the ambient inner product of two tangent vectors."""
        return (u * v).flatten(start_dim=u.dim() - self.point_ndim).sum(-1)

    def norm(self, x: Tensor, u: Tensor) -> Tensor:
        """The Riemannian norm of a tangent vector."""
        return self.inner(x, u, u).clamp_min(0).sqrt()

    def check_shape(self, x: object, name: str = "x") -> Tensor:
        """``x`` as a floating, finite tensor with a batch dimension and trailing ``point_shape``; ShapeError
        otherwise."""
        x = check_tensor(x, name, min_dim=self.point_ndim + 1)
        if tuple(x.shape[x.dim() - self.point_ndim:]) != tuple(self.point_shape):
            shape = ", ".join(str(s) for s in self.point_shape)
            raise ShapeError(expected(f"{name} of shape (B, {shape}) for the {self.describe()}",
                                      f"shape {tuple(x.shape)}", f"pass points with trailing shape {self.point_shape}"))
        return x

    def check_on(self, x: object, atol: float = 1e-4, name: str = "x") -> Tensor:
        """Return ``x`` if it is a batch of points on the manifold within ``atol``, else raise
        :class:`OffManifoldError` stating the largest distance off it (ShapeError for a wrong shape).

        Example:
            >>> from flowzoo.core.manifolds import FlatTorus
            >>> FlatTorus(dim=2).check_on(torch.tensor([[1.0, 2.0]])).shape
            torch.Size([1, 2])
        """
        x = self.check_shape(x, name)
        atol = check_number(atol, "atol", low=0.0, fix="pass e.g. atol=1e-4")
        off = float(self.distance_off(x.detach()).max())
        if off > atol:
            raise OffManifoldError(expected(f"{name} on the {self.describe()} within atol={atol:g}",
                                            f"points up to {off:.4g} off the manifold",
                                            "project them with manifold.projx(x)"))
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"
