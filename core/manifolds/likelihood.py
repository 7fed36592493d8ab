r"""Exact log-likelihood of a Riemannian flow: the change of variables on the manifold.

For :math:`\dot x = v(x, t)` tangent to :math:`\mathcal M`, the density with respect to the Riemannian volume
obeys :math:`\tfrac{d}{dt}\log p_t(x_t) = -\mathrm{div}_g\, v(x_t, t)` (the continuity equation on a manifold, Chen &
Lipman, arXiv 2302.03660; Mathieu & Nickel, "Riemannian Continuous
Normalizing Flows", arXiv 2006.10605). Hence, with time 0 = base and 1 = data,

.. math::  \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \mathrm{div}_g\, v(x_t, t)\,dt,

integrated backward from :math:`x_1` with the on-manifold solver. For a submanifold with the induced metric and
any ambient extension :math:`\tilde v = P\,v` of the projected field, :math:`\mathrm{div}_g v = \mathrm{tr}(P J P)
= \mathrm{tr}(J P)` with :math:`J = \partial\tilde v/\partial x` the ambient Jacobian and :math:`P` the tangent
projection (for the flat torus, :math:`P = I` and it is the ordinary divergence). It is computed exactly from one
vector–Jacobian product per ambient coordinate, or by Hutchinson's estimator with tangent probes
:math:`z = P\epsilon` (:math:`E[z z^\top] = P`), drawn once per solve as in
:func:`flowzoo.core.sampling.log_likelihood`. Rationale: the augmented state [x, ℓ] is a point of
:math:`\mathcal M \times \mathbb R`, so the solver that keeps samples on the manifold also integrates ℓ.

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import Sphere
    >>> from flowzoo.core.manifolds.so3 import hat
    >>> spin = hat(torch.tensor([0.3, -0.2, 1.0]))             # a rotation field preserves the volume
    >>> logp = manifold_log_likelihood(lambda x, t: x @ spin.T, Sphere().random_base(3), manifold=Sphere(), steps=4)
    >>> [round(v, 4) for v in logp.tolist()]                   # log(1 / 4 pi)
    [-2.531, -2.531, -2.531]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.manifolds.euclidean import Euclidean
from flowzoo.core.manifolds.path import check_manifold
from flowzoo.core.manifolds.product import Product
from flowzoo.core.manifolds.solver import MANIFOLD_METHODS, integrate_manifold
from flowzoo.core.sampling import ESTIMATORS, PROBES, check_cond, draw_probes
from flowzoo.core.validation import check_positive_int

__all__ = ["manifold_log_likelihood", "riemannian_divergence"]

Tensor = torch.Tensor


def riemannian_divergence(manifold: Manifold, field: Tensor, x: Tensor, probes: Tensor | None = None) -> Tensor:
    r""":math:`\mathrm{tr}(J P)`, the divergence of a tangent ``field`` computed from ``x`` (which requires grad).

    Args:
        manifold: the manifold of ``x``.
        field: :math:`P_x v(x)`, shape ``(B, *point_shape)``, built from ``x`` with autograd.
        x: the points ``(B, *point_shape)``, ``requires_grad``.
        probes: None for the exact trace (one vector–Jacobian product per ambient coordinate), or Hutchinson
            probes ``(K, B, *point_shape)`` in the ambient space; they are projected onto the tangent spaces here.

    Returns:
        (B,) divergences.
    """
    batch = x.shape[0]
    flat = field.reshape(batch, -1)
    base = x.detach()
    total = torch.zeros(batch, dtype=field.dtype, device=field.device)
    if probes is None:
        eye = torch.eye(flat.shape[1], dtype=x.dtype, device=x.device)
        for j in range(flat.shape[1]):
            (row,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=True, allow_unused=True)
            if row is None:
                continue
            column = manifold.proju(base, eye[j].reshape(manifold.point_shape).expand_as(base))
            total = total + (row * column).reshape(batch, -1).sum(1)
        return total
    for eps in probes:
        z = manifold.proju(base, eps)
        (vjp,) = torch.autograd.grad((field * z).sum(), x, retain_graph=True, allow_unused=True)
        if vjp is not None:
            total = total + (vjp * z).reshape(batch, -1).sum(1)
    return total / probes.shape[0]


class _AugmentedField:
    """[P v, div] on the flat augmented state [x, ell] of M x R."""

    def __init__(self, model, manifold: Manifold, cond: Mapping[str, Any], probes: Tensor | None):
        self.model, self.manifold, self.cond, self.probes = model, manifold, cond, probes
        self.size = manifold.ambient_size

    def __call__(self, state: Tensor, t: Tensor) -> Tensor:
        batch = state.shape[0]
        with torch.enable_grad():
            x = state[:, :self.size].detach().reshape(batch, *self.manifold.point_shape).requires_grad_(True)
            v = self.model(x, t, **self.cond)
            if not isinstance(v, Tensor) or v.shape != x.shape:
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ShapeError(expected(f"the model to return shape {tuple(x.shape)}", got,
                                          "make model(x, t, **cond) return a velocity shaped like x"))
            field = self.manifold.proju(x, v)
            if field.requires_grad:
                div = riemannian_divergence(self.manifold, field, x, self.probes)
            else:
                div = torch.zeros(batch, dtype=state.dtype, device=state.device)
        return torch.cat([field.detach().reshape(batch, -1), div.detach()[:, None]], dim=1)


def manifold_log_likelihood(
    model: Callable[..., Tensor],
    x1: Tensor,
    *,
    manifold: Manifold,
    steps: int,
    method: str = "rk4",
    estimator: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    cond: Mapping[str, Any] | None = None,
    atol: float = 1e-4,
) -> Tensor:
    r"""Log-density :math:`\log p_1(x_1)` (w.r.t. the Riemannian volume) of data under the flow of ``model``.

    Args:
        model: velocity model ``model(x, t, **cond)``; its output is projected onto the tangent space; it must
            treat samples independently.
        x1: data points ``(B, *manifold.point_shape)`` on the manifold (checked within ``atol``).
        manifold: the manifold; the base density is ``manifold.base_log_prob``.
        steps: number of uniform steps from t = 1 back to t = 0.
        method: ``"euler"``, ``"midpoint"`` or ``"rk4"``.
        estimator: ``"exact"`` (one vector–Jacobian product per ambient coordinate) or ``"hutchinson"``.
        n_probes: Hutchinson probes per sample.
        probe: ``"rademacher"`` or ``"gaussian"``.
        generator: torch generator for the probes.
        cond: conditioning passed to the model.
        atol: tolerance of the on-manifold check of ``x1``.

    Returns:
        (B,) log-densities in nats.

    Raises:
        ConfigError: unknown method, estimator or probe, steps or n_probes < 1.
        OffManifoldError, ShapeError: ``x1`` off the manifold or of the wrong shape.
    """
    manifold = check_manifold(manifold)
    if method not in MANIFOLD_METHODS:
        raise ConfigError(expected(f"method in {list(MANIFOLD_METHODS)}", repr(method), "use method='rk4'"))
    if estimator not in ESTIMATORS:
        raise ConfigError(expected(f"estimator in {list(ESTIMATORS)}", repr(estimator),
                                   "use 'exact' for small dimensions, 'hutchinson' for large ones"))
    if probe not in PROBES:
        raise ConfigError(expected(f"probe in {list(PROBES)}", repr(probe), "use 'rademacher'"))
    check_positive_int(steps, "steps", fix="pass e.g. steps=20")
    check_positive_int(n_probes, "n_probes", fix="pass e.g. n_probes=1")
    x1 = manifold.check_on(x1, atol, "x1")
    cond = check_cond(cond)
    batch = x1.shape[0]
    probes = draw_probes(probe, n_probes, x1, generator) if estimator == "hutchinson" else None
    augmented = Product(manifold, Euclidean(1))
    state = torch.cat([x1.reshape(batch, -1), x1.new_zeros(batch, 1)], dim=1)
    result = integrate_manifold(_AugmentedField(model, manifold, cond, probes), state, manifold=augmented,
                                method=method, steps=steps, t0=1.0, t1=0.0, atol=atol)
    x0 = result.x[:, :-1].reshape(batch, *manifold.point_shape)
    return manifold.base_log_prob(x0) + result.x[:, -1]
