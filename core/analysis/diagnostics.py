r"""Is a learned field a gradient? Differential and integral tests of non-conservativeness.

Vuong, McCann, Santos, Lin, "Are We Really Learning the Score Function?" (arXiv 2509.00336) observe that
trained diffusion / flow networks are not conservative: the score :math:`s_\theta` violates both the differential
constraint of a gradient field (a symmetric Jacobian, :math:`J = J^\top` with :math:`J = \partial_x s_\theta`) and
the integral one (zero circulation :math:`\oint_C s_\theta\cdot dl` around
every closed loop). Two diagnostics measure this for any field ``field(x, t, **cond)``:

* :func:`jacobian_asymmetry`: :math:`A(x, t) = \|J - J^\top\|_F / \|J\|_F` per sample; 0 for a gradient
  field, 2 for a purely rotational linear field :math:`f = Ax`, :math:`A^\top = -A`.
* :func:`loop_integral`: :math:`\oint_C f\cdot dl / \oint_C \|f\|\,dl` over small circles around each sample
  in random 2-D planes; 0 for a gradient field up to quadrature error, :math:`\pm 1` for a pure rotation about
  the circle's centre.

Time convention: the diagnostics only evaluate ``field(x, t)`` at the given t, so any convention works. In
flowzoo's (t = 0 noise, 1 data; linear path :math:`x_t = (1-t)x_0 + t x_1`, Gaussian source) the score is
:math:`s = (t\,v - x)/(1 - t)` (``AffinePath.velocity_to_score``), so
:math:`\partial_x s = (t\,\partial_x v - I)/(1 - t)`: the antisymmetric part of the score's Jacobian is
:math:`t/(1-t)` times the velocity's, and a velocity field is conservative iff its score is. The *ratio*
:math:`A` differs between the two (the identity term enters the denominator), so compute it on the score when
comparing with the paper (which measures the score's), and report it per t-bin (it blows up as t -> 1 for the score).

Both functions assume the field treats samples independently (no batch statistics), so that the Jacobian of
the batch output with respect to the batch input is block diagonal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import jacrev

from flowzoo.core.validation import (as_time, check_bool, check_int, check_number, check_positive, check_positive_int,
                                     check_tensor)
from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["jacobian_asymmetry", "loop_integral", "LoopIntegralResult", "random_planes"]

Field = Callable[..., torch.Tensor]
_TINY = 1e-30


def _prepare(x: object, t: object, cond: Mapping[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = check_tensor(x, "x", min_dim=2)
    if isinstance(t, torch.Tensor):
        check_tensor(t.reshape(-1), "t", min_dim=1)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != x.shape[0]):
            raise ShapeError(expected(f"t as a number or a tensor of shape ({x.shape[0]},)", f"shape {tuple(t.shape)}",
                                      "pass one time per sample"))
    else:
        check_number(t, "t", fix="pass a number or a (B,) tensor, e.g. t=0.5")
    if cond is not None and not isinstance(cond, Mapping):
        raise ConfigError(expected("cond as a mapping of keyword arguments", type(cond).__name__, "pass cond={'y': y}"))
    return x, as_time(t, x.shape[0], x), dict(cond or {})


def _repeat_cond(cond: dict, batch: int, times: int) -> dict:
    """Repeat every batch-first tensor of ``cond`` ``times`` times per sample (sample-major order)."""
    return {k: v.repeat_interleave(times, dim=0) if isinstance(v, torch.Tensor) and v.dim() > 0
            and v.shape[0] == batch else v for k, v in cond.items()}


def _call(field: Field, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    out = field(x, t, **cond)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(expected(f"the field to return a tensor shaped like x {tuple(x.shape)}", got,
                                  "make field(x, t, **cond) return a vector field on x's space"))
    return out


def jacobian_asymmetry(field: Field, x: torch.Tensor, t: float | torch.Tensor, *, exact: bool = True,
                       n_probes: int = 64, generator: torch.Generator | None = None,
                       cond: Mapping[str, Any] | None = None) -> torch.Tensor:
    r"""Relative asymmetry of the Jacobian, :math:`\|J - J^\top\|_F / \|J\|_F` with :math:`J = \partial_x f(x, t)`.

    Vuong et al. (arXiv 2509.00336), the differential test of §21: a gradient field has a symmetric Jacobian
    (the Hessian of its potential), so the ratio is 0 up to float error; :math:`f = Ax` with :math:`A`
    antisymmetric gives exactly 2, and :math:`f = (S + A)x` with :math:`S` symmetric gives
    :math:`2\|A\|_F / \sqrt{\|S\|_F^2 + \|A\|_F^2}` (symmetric and antisymmetric matrices are Frobenius-orthogonal).

    ``exact=True`` builds the per-sample Jacobian with :func:`torch.func.jacrev` (N reverse passes for N
    features: use it up to a few hundred features). ``exact=False`` is a Hutchinson estimate from two VJPs per
    probe pair :math:`v, w \sim N(0, I)`: with :math:`K = J - J^\top`,
    :math:`E[(w^\top J v - v^\top J w)^2] = E[(w^\top K v)^2] = \|K\|_F^2` and
    :math:`E\|v^\top J\|^2 = \|J\|_F^2`; both VJPs come from one forward pass on ``n_probes`` copies of the batch.
    The ratio of the two averages is consistent, with relative error :math:`O(1/\sqrt{n_{probes}})`.

    Args:
        field: ``field(x, t, **cond)`` returning a tensor shaped like ``x`` (velocity, score, ...); it must be
            differentiable in ``x`` (an energy model may call ``torch.autograd.grad(..., create_graph=True)``).
        x: points (B, ...), at least 2-D (batch first); all non-batch dims are flattened into N features.
        t: a number or a (B,) tensor.
        exact: Jacobian by jacrev (True) or the Hutchinson estimate (False).
        n_probes: probe pairs of the estimate.
        generator: for the probes.
        cond: conditioning keyword arguments (batch-first tensors are repeated with the probes).

    Returns:
        (B,) tensor of asymmetries, detached (0 where the Jacobian vanishes).

    Example:
        >>> rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> jacobian_asymmetry(lambda x, t: x @ rotation.T, torch.randn(3, 2), 0.5).tolist()
        [2.0, 2.0, 2.0]
    """
    x, t, cond = _prepare(x, t, cond)
    batch, shape = x.shape[0], x.shape
    check_bool(exact, "exact", fix="pass exact=True or exact=False")
    with torch.enable_grad():
        if exact:
            def summed(flat: torch.Tensor) -> torch.Tensor:
                return _call(field, flat.reshape(shape), t, cond).reshape(batch, -1).sum(0)

            jac = jacrev(summed)(x.detach().reshape(batch, -1)).detach()   # (N_out, B, N_in)
            jac = jac.permute(1, 0, 2)
            antisym = (jac - jac.transpose(1, 2)).flatten(1).norm(dim=1)
            return antisym / jac.flatten(1).norm(dim=1).clamp_min(_TINY)
        probes = check_positive_int(n_probes, "n_probes", fix="pass e.g. n_probes=8")
        xs = x.detach().repeat_interleave(probes, dim=0).requires_grad_(True)
        out = _call(field, xs, t.repeat_interleave(probes), _repeat_cond(cond, batch, probes))
        v = torch.randn(xs.shape, generator=generator, dtype=xs.dtype, device=xs.device)
        w = torch.randn(xs.shape, generator=generator, dtype=xs.dtype, device=xs.device)
        vjp_v = torch.autograd.grad(out, xs, v, retain_graph=True)[0]     # v^T J
        vjp_w = torch.autograd.grad(out, xs, w)[0]                        # w^T J
    flat = lambda a: a.detach().reshape(batch, probes, -1)  # noqa: E731
    antisym_sq = ((flat(vjp_w) * flat(v)).sum(-1) - (flat(vjp_v) * flat(w)).sum(-1)).pow(2).mean(1)
    frob_sq = 0.5 * (flat(vjp_v).pow(2).sum(-1) + flat(vjp_w).pow(2).sum(-1)).mean(1)
    return (antisym_sq / frob_sq.clamp_min(_TINY)).sqrt()


@dataclass
class LoopIntegralResult:
    """What :func:`loop_integral` returns; every tensor but ``planes`` has shape (B, P).

    Attributes:
        circulation: :math:`\\oint_C f\\cdot dl` around the circle of sample b in plane p.
        normaliser: :math:`\\oint_C \\|f\\|\\,dl`.
        ratio: circulation / normaliser, in [-1, 1]; 0 for a conservative field.
        planes: (P, 2, N) orthonormal pairs (e1, e2) spanning the planes; the circles run from e1 towards e2.
    """

    circulation: torch.Tensor
    normaliser: torch.Tensor
    ratio: torch.Tensor
    planes: torch.Tensor


def random_planes(n_planes: int, dim: int, *, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """``n_planes`` uniformly random 2-D planes in R^dim as orthonormal pairs, shape (n_planes, 2, dim)."""
    check_positive_int(n_planes, "planes", fix="pass e.g. planes=8")
    if dim < 2:
        raise ShapeError(expected("at least 2 features for a plane", f"{dim}", "loop integrals need N >= 2"))
    gauss = torch.randn(n_planes, dim, 2, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gauss).Q.transpose(1, 2).to(dtype=dtype, device=device)


def _orthonormal(planes: torch.Tensor, dim: int) -> torch.Tensor:
    planes = check_tensor(planes, "planes", min_dim=3)
    if planes.dim() != 3 or planes.shape[1:] != (2, dim):
        raise ShapeError(expected(f"planes of shape (P, 2, {dim})", f"shape {tuple(planes.shape)}",
                                  "pass pairs of vectors (e1, e2) spanning each plane"))
    e1 = planes[:, 0] / planes[:, 0].norm(dim=1, keepdim=True).clamp_min(_TINY)
    e2 = planes[:, 1] - (planes[:, 1] * e1).sum(1, keepdim=True) * e1
    norm2 = e2.norm(dim=1, keepdim=True)
    degenerate = (norm2 < 1e-6 * planes[:, 1].norm(dim=1, keepdim=True)).any() | (planes[:, 0].norm(dim=1) == 0).any()
    if bool(degenerate):
        raise ConfigError(expected("two linearly independent vectors per plane", "a degenerate pair",
                                   "pass non-parallel, non-zero (e1, e2)"))
    return torch.stack([e1, e2 / norm2], dim=1)


def loop_integral(field: Field, x: torch.Tensor, t: float | torch.Tensor, radius: float, *, n_points: int = 128,
                  planes: int | torch.Tensor = 4, generator: torch.Generator | None = None,
                  cond: Mapping[str, Any] | None = None) -> LoopIntegralResult:
    r"""Normalised circulation of a field around small circles centred at each sample (integral test, §21).

    For a plane spanned by orthonormal :math:`e_1, e_2` the circle is
    :math:`c(\theta) = x + r(\cos\theta\,e_1 + \sin\theta\,e_2)`, :math:`dl = r(-\sin\theta\,e_1 +
    \cos\theta\,e_2)\,d\theta`, and the integrals :math:`\oint f\cdot dl` and :math:`\oint \|f\|\,dl` are taken
    by the rectangle rule on ``n_points`` equally spaced angles (spectrally accurate for smooth periodic
    integrands). By Stokes, for a linear field :math:`f = Mx` the circulation is
    :math:`\pi r^2\, e_2^\top (M - M^\top) e_1`, and :math:`2\pi r^2 e_2^\top A e_1` for antisymmetric
    :math:`M = A`; for :math:`f = -\nabla E` it is 0. A small radius probes the local curl. The ratio is
    invariant to rescaling the field, but for a circle around a point where :math:`f \ne 0` it grows linearly
    with the radius (circulation :math:`\propto r^2`, :math:`\oint\|f\|dl \approx 2\pi r\|f(x)\|`), so
    compare ratios at equal radius (an untrained 6-D MLP gives ~1e-3 at r = 0.1 while its Jacobian asymmetry
    is ~1).

    Args:
        field: ``field(x, t, **cond)``, shaped like ``x``.
        x: circle centres (B, ...), N >= 2 features after flattening.
        t: a number or a (B,) tensor.
        radius: circle radius r > 0 (in the units of x).
        n_points: quadrature points per circle (>= 8).
        planes: the number of random planes (shared by all samples; drawn with ``generator``), or a (P, 2, N)
            tensor of vector pairs (orthonormalised by Gram–Schmidt).
        generator: for the random planes.
        cond: conditioning keyword arguments (batch-first tensors are repeated along the circles).

    Returns:
        :class:`LoopIntegralResult` with (B, P) circulation, normaliser and ratio (detached).

    Example:
        >>> rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])          # counter-clockwise in (x0, x1)
        >>> out = loop_integral(lambda x, t: x @ rotation.T, torch.zeros(1, 2), 0.0, 0.5,
        ...                     planes=torch.eye(2)[None])
        >>> round(out.ratio.item(), 6), round(out.circulation.item() / (2 * math.pi * 0.25), 6)
        (1.0, 1.0)
    """
    x, t, cond = _prepare(x, t, cond)
    batch, dim = x.shape[0], math.prod(x.shape[1:])
    check_positive(radius, "radius", fix="pass e.g. radius=0.05")
    points = check_int(n_points, "n_points", low=8, fix="pass e.g. n_points=64")
    if isinstance(planes, torch.Tensor):
        basis = _orthonormal(planes.to(torch.float64), dim)
    elif isinstance(planes, int) and not isinstance(planes, bool):
        basis = random_planes(planes, dim, generator=generator, dtype=torch.float64)
    else:
        raise ConfigError(expected("planes as a number of random planes or a (P, 2, N) tensor", repr(planes),
                                   "pass e.g. planes=4"))
    basis = basis.to(device=x.device)
    n_planes = basis.shape[0]
    theta = torch.arange(points, dtype=torch.float64, device=x.device) * (2 * math.pi / points)
    cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    # (P, K, N) offsets on the unit circle and unit tangents
    offset = cos[None] * basis[:, None, 0] + sin[None] * basis[:, None, 1]
    tangent = -sin[None] * basis[:, None, 0] + cos[None] * basis[:, None, 1]
    centres = x.detach().reshape(batch, 1, 1, dim).to(torch.float64)
    circle = (centres + radius * offset[None]).to(x.dtype)                       # (B, P, K, N)
    per_sample = n_planes * points
    values = _call(field, circle.reshape(batch * per_sample, *x.shape[1:]), t.repeat_interleave(per_sample),
                   _repeat_cond(cond, batch, per_sample)).detach()
    values = values.reshape(batch, n_planes, points, dim).to(torch.float64)
    step = radius * 2 * math.pi / points
    circulation = (values * tangent[None]).sum(-1).sum(-1) * step
    normaliser = values.norm(dim=-1).sum(-1) * step
    ratio = circulation / normaliser.clamp_min(_TINY)
    out_dtype = x.dtype
    return LoopIntegralResult(circulation.to(out_dtype), normaliser.to(out_dtype), ratio.to(out_dtype),
                              basis.to(out_dtype))
