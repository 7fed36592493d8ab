r"""Exact log-likelihood of a flow model by the instantaneous change of variables.

For :math:`dx/dt = v(x, t)` carrying the source density :math:`p_0` (t = 0) to :math:`p_1` (t = 1), the
log-density along a trajectory obeys :math:`\tfrac{d}{dt}\log p_t(x_t) = -\nabla\!\cdot v(x_t, t)`
(Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018, Thm. 1), so

.. math::  \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\!\cdot v(x_t, t)\, dt,

where :math:`x_0` is :math:`x_1` carried backward to t = 0. We integrate the augmented state
:math:`[x, \ell]` with :math:`d\ell/dt = \nabla\!\cdot v` from t = 1 (:math:`\ell = 0`) to t = 0, which gives
:math:`\ell(0) = -\int_0^1 \nabla\!\cdot v\,dt` and :math:`\log p_1(x_1) = \log p_0(x_0) + \ell(0)`.

The divergence is either exact (one vector–Jacobian product per dimension, fine for small D) or Hutchinson's
unbiased estimate :math:`\mathbb E_\epsilon[\epsilon^\top (\partial v/\partial x)\, \epsilon]` with Rademacher
or Gaussian probes drawn once per solve, so that adaptive solvers see a deterministic ODE (FFJORD, Grathwohl
et al., ICLR 2019, §3.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowzoo.core.validation import check_positive_int, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.sampling.ode import FIXED_STEP_METHODS, check_method, integrate
from flowzoo.core.sampling.result import check_cond

__all__ = ["log_likelihood", "standard_normal_log_prob", "draw_probes", "ESTIMATORS", "PROBES"]

ESTIMATORS = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    r"""Per-sample :math:`\log \mathcal N(x; 0, I)` summed over every non-batch dimension, shape (B,)."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * (flat.pow(2).sum(dim=1) + flat.shape[1] * math.log(2.0 * math.pi))


class _AugmentedVelocity:
    """The model on the flat augmented state ``[x, ell]`` of shape (B, D + 1), returning ``[v, div v]``."""

    def __init__(self, model: Callable[..., torch.Tensor], shape: tuple[int, ...], cond: Mapping[str, Any],
                 probes: torch.Tensor | None, create_graph: bool):
        self.model, self.shape, self.cond = model, shape, cond
        self.probes, self.create_graph = probes, create_graph

    def __call__(self, state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, dim = state.shape[0], state.shape[1] - 1
        with torch.enable_grad():
            x = state[:, :dim]
            if not (self.create_graph and x.requires_grad):
                x = x.detach().requires_grad_(True)
            v = self.model(x.reshape(batch, *self.shape), t, **self.cond)
            if not isinstance(v, torch.Tensor) or v.shape != (batch, *self.shape):
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ShapeError(expected(f"the model to return shape {(batch, *self.shape)}", got,
                                          "make model(x, t, **cond) return the velocity with x's shape"))
            v = v.reshape(batch, dim)
            div = self._divergence(v, x) if v.requires_grad else torch.zeros(batch, dtype=v.dtype, device=v.device)
        if not self.create_graph:
            v, div = v.detach(), div.detach()
        return torch.cat([v, div[:, None]], dim=1)

    def _grad(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(output, x, retain_graph=True, create_graph=self.create_graph, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    def _divergence(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Samples never interact inside the model, so the gradient of a batch sum gives every sample's
        # own row of the Jacobian at once (this assumes no batch statistics, e.g. BatchNorm in train mode).
        if self.probes is None:
            return sum(self._grad(v[:, i].sum(), x)[:, i] for i in range(v.shape[1]))
        estimates = [(self._grad((v * eps).sum(), x) * eps).sum(dim=1) for eps in self.probes]
        return torch.stack(estimates).mean(dim=0)


def draw_probes(probe: str, n_probes: int, like: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_probes`` Hutchinson probes, shape ``(n_probes, *like.shape)``: Rademacher ±1 or N(0, I).

    Example:
        >>> sorted(draw_probes("rademacher", 2, torch.zeros(3, 4)).unique().tolist())
        [-1.0, 1.0]
    """
    size = (n_probes, *like.shape)
    if probe == "rademacher":
        return torch.randint(0, 2, size, generator=generator, device=like.device).to(like.dtype) * 2 - 1
    return torch.randn(size, generator=generator, device=like.device, dtype=like.dtype)


def log_likelihood(
    model: Callable[..., torch.Tensor],
    x1: torch.Tensor,
    *,
    source_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
    method: str = "dopri5",
    steps: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    estimator: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    cond: Mapping[str, Any] | None = None,
    enable_grad: bool = False,
) -> tuple[torch.Tensor, int]:
    r"""Log-density :math:`\log p_1(x_1)` of data under the flow of ``model`` from the source :math:`p_0`.

    Args:
        model: velocity model ``model(x, t, **cond)``; it must treat samples independently.
        x1: data points (B, ...).
        source_log_prob: :math:`\log p_0`, a callable ``x0 -> (B,)``; default standard normal over all
            non-batch dimensions (:func:`standard_normal_log_prob`).
        method: any method of :func:`~flowzoo.core.sampling.ode.integrate`; fixed-step methods need ``steps``.
        steps: number of uniform steps from t = 1 to t = 0 (fixed-step methods).
        atol, rtol: tolerances of adaptive methods (they apply to the log-density too).
        estimator: ``"exact"`` divergence (D vector–Jacobian products per evaluation) or ``"hutchinson"``
            (``n_probes`` products; unbiased, noisier).
        n_probes: Hutchinson probes per sample, averaged.
        probe: ``"rademacher"`` (±1, lower variance) or ``"gaussian"``.
        generator: torch generator for the probes.
        cond: conditioning passed to the model as keyword arguments.
        enable_grad: keep the graph through the solve (``create_graph``) so the log-likelihood can be
            maximised by backpropagation; off by default.

    Returns:
        ``(logp, nfe)``: log-densities of shape (B,) (nats, summed over dimensions) and the number of model
        calls (the vector–Jacobian products of the divergence are not counted).

    Raises:
        ConfigError: unknown method, estimator or probe; ``n_probes < 1``; a fixed-step method without steps.
        ShapeError, DTypeError, EmptyInputError, NonFiniteError: bad ``x1`` or model output.

    Example:
        >>> import torch
        >>> shift = lambda x, t: torch.full_like(x, 2.0)        # carries N(0, 1) to N(2, 1)
        >>> logp, nfe = log_likelihood(shift, torch.tensor([[2.0]]), method="euler", steps=4)
        >>> round(logp.item(), 4)                               # log N(2; 2, 1) = -log(2 pi) / 2
        -0.9189
    """
    check_method(method)
    check_tensor(x1, "x1")
    if estimator not in ESTIMATORS:
        raise ConfigError(expected(f"estimator in {list(ESTIMATORS)}", repr(estimator),
                                   "use 'exact' for small dimensions, 'hutchinson' for large ones"))
    if probe not in PROBES:
        raise ConfigError(expected(f"probe in {list(PROBES)}", repr(probe), "use 'rademacher'"))
    check_positive_int(n_probes, "n_probes", fix="pass e.g. n_probes=1")
    if steps is None and method in FIXED_STEP_METHODS:
        raise ConfigError(expected(f"steps for the fixed-step method {method!r}", "steps=None",
                                   "pass e.g. steps=100, or use method='dopri5'"))
    cond = check_cond(cond)
    batch, shape = x1.shape[0], tuple(x1.shape[1:])
    flat = x1.reshape(batch, -1)
    probes = draw_probes(probe, n_probes, flat, generator) if estimator == "hutchinson" else None
    dynamics = _AugmentedVelocity(model, shape, cond, probes, create_graph=enable_grad)
    state = torch.cat([flat, flat.new_zeros(batch, 1)], dim=1)
    result = integrate(dynamics, state, method=method, steps=steps, t0=1.0, t1=0.0, atol=atol, rtol=rtol,
                       enable_grad=enable_grad)
    x0, ell = result.x[:, :-1].reshape(batch, *shape), result.x[:, -1]
    log_p0 = (source_log_prob or standard_normal_log_prob)(x0)
    if not isinstance(log_p0, torch.Tensor) or log_p0.shape != (batch,):
        got = tuple(log_p0.shape) if isinstance(log_p0, torch.Tensor) else type(log_p0).__name__
        raise ShapeError(expected(f"source_log_prob(x0) of shape ({batch},)", got,
                                  "sum the log-density over every non-batch dimension"))
    return log_p0 + ell, result.nfe
