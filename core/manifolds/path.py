r"""Riemannian flow matching: the geodesic conditional path and its training loss.

Chen & Lipman, "Flow Matching on General Geometries" (arXiv 2302.03660). On a manifold with computable geodesics
the conditional flow is the geodesic from the source sample to the data sample (their conditional flow for
simple geometries, written :math:`\exp_{x_1}(\kappa(t)\log_{x_1} x_0)` with :math:`\kappa(t) = 1 - t`, the same
geodesic traversed from the source); in flowzoo's time (t = 0 source, t = 1 data)

.. math::  x_t = \exp_{x_0}\!\big(\kappa(t)\,\log_{x_0} x_1\big), \qquad
           u_t = \dot\kappa(t)\,\frac{d}{ds}\exp_{x_0}(s \log_{x_0} x_1)\Big|_{s = \kappa(t)},

with :math:`\kappa(t) = t` by default (the paper's linear schedule; a flowzoo scheduler's ``beta`` otherwise).
The Riemannian CFM loss (their RCFM objective) is :math:`E\,\|v_\theta(x_t, t) - u_t\|_g^2`, the metric norm at
:math:`x_t`; for the embedded manifolds of :mod:`flowzoo.core.manifolds` the metric is the ambient inner product
restricted to the tangent space, so after projecting the prediction onto :math:`T_{x_t}\mathcal M` the loss is an
ordinary squared error (averaged over coordinates, as :class:`~flowzoo.core.objectives.FlowMatchingLoss` does).
Rationale: the velocity comes from :meth:`~flowzoo.core.manifolds.base.Manifold.exp_curve` in closed form, with
no forward-mode autodiff through the exponential map.

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import Sphere
    >>> path = GeodesicPath(Sphere())
    >>> x0, x1 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    >>> s = path.sample(x0, x1, torch.tensor([0.5]))
    >>> [round(v, 4) for v in s.x_t[0].tolist()], [round(v, 4) for v in s.dx_t[0].tolist()]
    ([0.7071, 0.7071, 0.0], [-1.1107, 1.1107, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from flowzoo.core.batching import (Model, call_model, check_time_sampler, couple_batch, per_sample_mean,
                                   raise_if_batch_not_finite, reduce_weighted, sample_time, unpack_batch)
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.paths import PathSample
from flowzoo.core.validation import check_bool, check_number, check_pair, check_unit_time

__all__ = ["GeodesicPath", "RiemannianFlowMatchingLoss", "check_manifold"]

Tensor = torch.Tensor


def check_manifold(manifold: object) -> Manifold:
    """``manifold`` if it is a :class:`~flowzoo.core.manifolds.base.Manifold`, else ConfigError."""
    if not isinstance(manifold, Manifold):
        raise ConfigError(expected("a flowzoo.core.manifolds.Manifold", type(manifold).__name__,
                                   "pass e.g. manifold=Sphere(), FlatTorus(2), SO3() or Product(...)"))
    return manifold


class GeodesicPath:
    r"""The geodesic conditional path :math:`x_t = \exp_{x_0}(\kappa(t)\log_{x_0}x_1)` with its closed-form velocity.

    Args:
        manifold: the manifold.
        scheduler: None for :math:`\kappa(t) = t`, or a flowzoo scheduler whose ``beta`` (the data weight) is
            :math:`\kappa` (e.g. :class:`~flowzoo.core.paths.schedulers.CosineScheduler`).

    Example:
        >>> from flowzoo.core.manifolds import FlatTorus
        >>> s = GeodesicPath(FlatTorus(1)).sample(torch.tensor([[6.0]]), torch.tensor([[0.5]]), torch.tensor([1.0]))
        >>> round(s.x_t.item(), 4), round(s.dx_t.item(), 4)       # through the seam: 0.5 + 2 pi - 6
        (0.5, 0.7832)
    """

    def __init__(self, manifold: Manifold, scheduler=None):
        self.manifold = check_manifold(manifold)
        if scheduler is not None and not callable(scheduler):
            raise ConfigError(expected("None or a scheduler t -> SchedulerOutput", type(scheduler).__name__,
                                       "pass e.g. flowzoo.core.paths.CosineScheduler()"))
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"GeodesicPath({self.manifold!r}, scheduler={self.scheduler!r})"

    def sample(self, x0: Tensor, x1: Tensor, t: float | Tensor) -> PathSample:
        """Points and velocities at times ``t`` ((B,) in [0, 1]) between source ``x0`` and data ``x1`` (B, ...)."""
        x0, x1 = check_pair(x0, x1, ("x0", "x1"))
        self.manifold.check_on(x0, name="x0")
        self.manifold.check_on(x1, name="x1")
        return self.sample_unchecked(x0, x1, check_unit_time(t, x1))

    def sample_unchecked(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        """:meth:`sample` without the input checks (for callers that validated the batch already)."""
        shape = (t.shape[0], *([1] * (x1.dim() - 1)))
        if self.scheduler is None:
            kappa, d_kappa = t.reshape(shape), None
        else:
            out = self.scheduler(t)
            kappa, d_kappa = out.beta.reshape(shape), out.d_beta.reshape(shape)
        x_t, dx_t = self.manifold.exp_curve(x0, self.manifold.logmap(x0, x1), kappa)
        if d_kappa is not None:
            dx_t = d_kappa * dx_t
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)


class RiemannianFlowMatchingLoss:
    r"""Riemannian conditional flow matching: :math:`E_{t,(x_0,x_1)}\,w\,\|P_{x_t} v_\theta(x_t, t) - u_t\|^2`.

    Chen & Lipman (arXiv 2302.03660, the RCFM objective) on the geodesic path of :class:`GeodesicPath`;
    :math:`P_{x_t}` is the tangent projection (``manifold.proju``), so any network output becomes a tangent vector.

    Args:
        manifold: the manifold of the data.
        coupling: how (x0, x1) are paired (e.g.
            :class:`~flowzoo.core.manifolds.coupling.GeodesicOTCoupling`); None keeps the batch's pairs.
        time_sampler: distribution of t; default uniform.
        scheduler: passed to :class:`GeodesicPath` (None: :math:`\kappa(t) = t`).
        check_points: check on every call that the data (and a given source) lie on the manifold within
            ``atol`` (one reduction per call); False skips it for pre-validated data.
        atol: tolerance of that check.

    Batches follow the library's convention (``x1``, optional ``x0``, ``weight``, conditioning); when ``x0`` is
    absent the source is drawn from ``manifold.random_base`` (uniform / Haar on compact manifolds).
    Returns ``(loss, {"loss": ...})`` (and ``mse``, ``weight_mean`` with weights).

    Example:
        >>> from flowzoo.core.manifolds import Sphere
        >>> objective = RiemannianFlowMatchingLoss(Sphere())
        >>> x1 = torch.tensor([[0.0, 0.0, 1.0]]).repeat(8, 1)
        >>> loss, metrics = objective(lambda x, t: torch.zeros_like(x), {"x1": x1})
        >>> loss.item() > 0
        True
    """

    def __init__(self, manifold: Manifold, coupling=None, time_sampler=None, scheduler=None,
                 check_points: bool = True, atol: float = 1e-4):
        self.manifold = check_manifold(manifold)
        self.path = GeodesicPath(manifold, scheduler)
        if coupling is not None and not callable(coupling):
            raise ConfigError(expected("a coupling callable (x0, x1, cond0=None, cond1=None) -> Pairing",
                                       type(coupling).__name__, "use GeodesicOTCoupling(manifold)"))
        self.coupling = coupling
        self.time_sampler = check_time_sampler(time_sampler)
        self.check_points = check_bool(check_points, "check_points")
        self.atol = check_number(atol, "atol", low=0.0, fix="pass e.g. atol=1e-4")

    def __repr__(self) -> str:
        return (f"RiemannianFlowMatchingLoss({self.manifold!r}, coupling={self.coupling!r}, "
                f"time_sampler={self.time_sampler!r})")

    def _with_source(self, batch: object, generator: torch.Generator | None) -> object:
        """The batch with ``x0`` drawn from the manifold's base when it has none (before unpack_batch, which would
        otherwise draw Gaussian noise)."""
        if not isinstance(batch, Mapping) or batch.get("x0") is not None:
            return batch
        x1 = batch.get("x1")
        if not isinstance(x1, Tensor) or x1.dim() == 0 or x1.shape[0] == 0 or not x1.is_floating_point():
            return batch  # unpack_batch names the problem
        x0 = self.manifold.random_base(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        return {**batch, "x0": x0}

    def __call__(self, model: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        given_source = isinstance(batch, Mapping) and batch.get("x0") is not None
        data = unpack_batch(self._with_source(batch, generator), generator)
        self.manifold.check_shape(data.x1, 'batch["x1"]')
        if self.check_points:
            self.manifold.check_on(data.x1, self.atol, 'batch["x1"]')
            if given_source:
                self.manifold.check_on(data.x0, self.atol, 'batch["x0"]')
        if self.coupling is not None:
            data = couple_batch(self.coupling, data)
        t = sample_time(self.time_sampler, data.x1.shape[0], data.x1, generator)
        sample = self.path.sample_unchecked(data.x0, data.x1, t)
        prediction = self.manifold.proju(sample.x_t, call_model(model, sample.x_t, sample.t, data.cond))
        if data.weight is None:
            loss = torch.nn.functional.mse_loss(prediction, sample.dx_t)
            metrics = {"loss": loss.item()}
        else:
            per_sample = per_sample_mean((prediction - sample.dx_t) ** 2)
            loss = reduce_weighted(per_sample, data.weight)
            values = torch.stack([loss.detach(), per_sample.detach().mean(), data.weight.mean()]).double().tolist()
            metrics = dict(zip(["loss", "mse", "weight_mean"], values))
        if not math.isfinite(metrics["loss"]):
            raise_if_batch_not_finite(batch)
        return loss, metrics
