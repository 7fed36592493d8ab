"""Riemannian flow matching: manifolds, the geodesic path and its loss, an on-manifold ODE solver, likelihoods,
geodesic OT couplings, networks and data on the sphere, the torus and SO(3).

Import from the subpackage (``from flowzoo.core.manifolds import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.manifolds.base import OffManifoldError, Manifold, series_sinc
from flowzoo.core.manifolds.euclidean import Euclidean
from flowzoo.core.manifolds.sphere import Sphere
from flowzoo.core.manifolds.torus import FlatTorus, TWO_PI
from flowzoo.core.manifolds.so3 import SO3, hat, vee, quaternion_to_matrix
from flowzoo.core.manifolds.product import Product
from flowzoo.core.manifolds.path import GeodesicPath, RiemannianFlowMatchingLoss, check_manifold
from flowzoo.core.manifolds.solver import MANIFOLD_METHODS, UPDATES, integrate_manifold, manifold_step
from flowzoo.core.manifolds.likelihood import manifold_log_likelihood, riemannian_divergence
from flowzoo.core.manifolds.coupling import GeodesicOTCoupling, geodesic_cost
from flowzoo.core.manifolds.metrics import geodesic_mmd, geodesic_w2
from flowzoo.core.manifolds.nets import TangentProjected, ManifoldMLP
from flowzoo.core.manifolds.data import (VonMisesFisherMixture, WrappedNormalMixture, IsotropicSO3Mixture,
                                         earth_like_mixture, ramachandran_like_mixture, symmetric_so3_mixture)

__all__ = [
    "OffManifoldError",
    "Manifold",
    "series_sinc",
    "Euclidean",
    "Sphere",
    "FlatTorus",
    "TWO_PI",
    "SO3",
    "hat",
    "vee",
    "quaternion_to_matrix",
    "Product",
    "GeodesicPath",
    "RiemannianFlowMatchingLoss",
    "check_manifold",
    "MANIFOLD_METHODS",
    "UPDATES",
    "integrate_manifold",
    "manifold_step",
    "manifold_log_likelihood",
    "riemannian_divergence",
    "GeodesicOTCoupling",
    "geodesic_cost",
    "geodesic_mmd",
    "geodesic_w2",
    "TangentProjected",
    "ManifoldMLP",
    "VonMisesFisherMixture",
    "WrappedNormalMixture",
    "IsotropicSO3Mixture",
    "earth_like_mixture",
    "ramachandran_like_mixture",
    "symmetric_so3_mixture",
]
