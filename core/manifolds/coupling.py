r"""Minibatch optimal transport on a manifold: pairs that minimise the total squared geodesic distance.

OT-CFM (Tong et al., arXiv 2302.00482, Alg. 3) pairs the source and data samples of a batch by an exact OT plan
so that conditional paths cross less; Chen & Lipman (arXiv 2302.03660) note that any coupling of the base and
data distributions is allowed in Riemannian flow matching. Here the cost is the squared geodesic distance
:math:`C_{ij} = d_g(x_0^{(i)}, x_1^{(j)})^2`, so on the sphere the paired geodesics are short great-circle arcs
and on the torus pairs are matched across the seam. With uniform weights and equal batch sizes the optimal plan is
a permutation (Birkhoff–von Neumann), solved exactly by :func:`flowzoo.core.couplings.solve_assignment`.
Rationale: the straight-line cost of :class:`~flowzoo.core.couplings.ExactOTCoupling` is wrong on curved or
periodic spaces (two angles 0.1 and 6.2 are close on the circle, not 6.1 apart).

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import FlatTorus
    >>> x0, x1 = torch.tensor([[0.1], [3.0]]), torch.tensor([[2.9], [6.2]])
    >>> GeodesicOTCoupling(FlatTorus(1))(x0, x1).x0.flatten().tolist()    # 0.1 goes to 6.2 across the seam
    [3.0, 0.10000000149011612]
"""

from __future__ import annotations

import torch

from flowzoo.core.couplings import SOLVERS, Coupling, Pairing, solve_assignment
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.manifolds.path import check_manifold

__all__ = ["GeodesicOTCoupling", "geodesic_cost"]

Tensor = torch.Tensor


def geodesic_cost(manifold: Manifold, x0: Tensor, x1: Tensor) -> Tensor:
    """The (n0, n1) matrix of squared geodesic distances between two batches of points."""
    a = x0.reshape(x0.shape[0], 1, *manifold.point_shape)
    b = x1.reshape(1, x1.shape[0], *manifold.point_shape)
    return manifold.dist(a, b) ** 2


class GeodesicOTCoupling(Coupling):
    """Exact minibatch OT with the squared geodesic distance as cost; every sample is used once.

    The pairs come back in x1's order (``index1 = arange``), so conditioning attached to x1 needs no permuting.

    Args:
        manifold: the manifold of the samples.
        solver: the assignment solver of :func:`~flowzoo.core.couplings.solve_assignment` (``"auto"``, ``"scipy"``,
            ``"lap"``, ``"pot"``).

    Example:
        >>> from flowzoo.core.manifolds import Sphere
        >>> sphere = Sphere()
        >>> x0 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> x1 = torch.tensor([[0.0, 0.1, 0.995], [1.0, 0.0, 0.0]])
        >>> GeodesicOTCoupling(sphere)(x0, sphere.projx(x1)).index0.tolist()
        [1, 0]
    """

    def __init__(self, manifold: Manifold, solver: str = "scipy"):
        self.manifold = check_manifold(manifold)
        if solver not in SOLVERS:
            raise ConfigError(expected(f"solver in {SOLVERS}", repr(solver), "pick one of the listed solvers"))
        self.solver = solver

    def _pair(self, x0, x1, cond0, cond1) -> Pairing:
        self.manifold.check_shape(x0, "x0")
        self.manifold.check_shape(x1, "x1")
        # Rows are the targets so that the data keep their order; column sigma[j] is the source of target j.
        cost = geodesic_cost(self.manifold, x1.detach(), x0.detach())
        sigma = torch.as_tensor(solve_assignment(cost.double(), self.solver), device=x0.device)
        return Pairing(x0[sigma], x1, index0=sigma, index1=torch.arange(x1.shape[0], device=x1.device))
