r"""Solving image inverse problems :math:`y = A x + \sigma_y\varepsilon` with a flow-matching prior: FLAIR and the
baselines a user would otherwise reach for.

**FLAIR** (Erbach et al., NeurIPS 2025, arXiv 2506.02680, §3) fits a point mass :math:`\mu` (the restored image, or
its latent) by minimising the variational objective

.. math:: \frac{\|y - A D(\mu)\|^2}{2\sigma_y^2} + \int \lambda(t)\, \mathbb{E}\|v_\theta(x_t, t) - u_t(x_t\mid\mu)\|^2 dt

one time at a time along a fixed schedule, with three pieces:

* **the regulariser's gradient, SDS-style**: :math:`g = \lambda(t)\,(\hat v_\theta - u_t)` with :math:`v_\theta`
  *detached* (its Jacobian is never formed), applied as one SGD step of rate 1 on :math:`\mu`;
* **Deterministic Trajectory Adjustment (DTA)**: the noise of step k is not fresh but
  :math:`\varepsilon_k = \alpha\,\hat\varepsilon_{k-1} + \sqrt{1-\alpha^2}\,\xi`, where :math:`\hat\varepsilon_{k-1}`
  is the noise endpoint the model predicted at the previous step;
* **decoupled hard data consistency**: after each regulariser step, up to ``data_steps`` gradient steps on
  :math:`\|A D(\mu) - y\|^2`, stopped early once the per-element error falls below ``data_tolerance``, and an
  exact projection :math:`\mu \leftarrow \mu + A^+(y - A\mu)` early in the schedule (pixel space only);
* **calibrated regularisation weight (CRW)**: :math:`\lambda(t) \propto 1/(\mathrm{MSE}(t) + 10^{-7})`, from the
  model's velocity error per time measured once on held-out images (:func:`measure_velocity_error`; saved with
  :func:`save_error_table` and reused), normalised to mean 1, shifted (by 0 as in the official super-resolution
  configuration, or by its last entry), clipped at 0 and scaled
  by ``reg_weight``.

**Time convention.** FLAIR (SD3's) runs t from data (0) to noise (1), :math:`x_t = (1-t)\mu + t\varepsilon` and
:math:`u_t = \varepsilon - \mu`. flowzoo's s = 1 − t: :math:`x_s = s\mu + (1-s)\varepsilon`, and the model's
velocity is :math:`v = \mu - \varepsilon = -u`, so the gradient is :math:`g = \lambda(s)(\mu - \varepsilon - v_\theta)`,
the predicted noise endpoint :math:`\hat\varepsilon = x_s - s\,v_\theta`, DTA's :math:`\alpha = 1 - t = s`, and the
schedule :math:`t \in` linspace(1, 0.18) becomes s rising from 0 to 0.82. Where this module departs from the
official code: the data-consistency steps use the step size :math:`1/\|A^\top A\|` (estimated by power
iteration), not SD3's learning rate of 12, which is tied to that model's latent scale.

**Baselines** (same interface, same prior):

* :func:`pseudo_inverse_restore`: :math:`A^+ y`;
* :func:`projection_restore`: Euler sampling in which each step's predicted clean image
  :math:`\hat x_1 = x_s + (1-s)v_\theta` is projected onto :math:`\{x : Ax = y\}` before the step
  (the "plain projection" / ΠGDM-style solver);
* :func:`dps_restore`: DPS (Chung et al., arXiv 2209.14687, Alg. 1) through the flow: each Euler step also
  descends :math:`\zeta\,\nabla_{x_s}\|y - A\hat x_1(x_s)\|`, backpropagating through :math:`v_\theta`.

**What each method needs from the operator**: DPS only :math:`A` and :math:`A^\top`; projection and the
pseudo-inverse also :math:`A^+` (``pinv``), and so does FLAIR in pixel space or with an ``encoder`` (its start is
:math:`A^+ y`). :func:`supported_methods` lists the methods an operator allows; the others refuse it with a
:class:`~flowzoo.core.errors.ConfigError` naming those methods before any model evaluation, and with ``check``
they verify once that ``pinv`` is a right inverse on the range (:func:`~flowzoo.vision.operators.check_pseudo_inverse`).

``decoder`` (optional, every function) maps :math:`\mu` to pixels, for a prior in a latent space (Vision I's latent
FM): the data term then runs through :math:`D`; FLAIR starts from the encoding of :math:`A^+ y` (``encoder``), or
from the latent origin without an encoder. Every function returns a
:class:`~flowzoo.core.sampling.SampleResult` whose ``x`` is the restored images and ``nfe`` the model evaluations.

Example:
    >>> import torch
    >>> from flowzoo.vision.operators import build_operator
    >>> op = build_operator("sr2", 8)
    >>> x = torch.rand(2, 1, 8, 8) * 2 - 1
    >>> prior = lambda x, t: torch.zeros_like(x)              # a prior that prefers nothing
    >>> out = flair_restore(prior, op.measure(x), op, shape=(1, 8, 8), steps=4)
    >>> bool(((op(out.x) - op(x)).abs() < 1e-2).all()), out.nfe
    (True, 4)
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.sampling import SampleResult
from flowzoo.core.validation import check_int, check_nonnegative, check_number, check_positive
from flowzoo.vision.operators import Operator, check_adjoint, check_pseudo_inverse, has_pseudo_inverse

__all__ = ["RESTORE_METHODS", "supported_methods", "flair_schedule", "measure_velocity_error", "save_error_table",
           "load_error_table", "calibrated_weights", "operator_norm", "flair_restore", "pseudo_inverse_restore",
           "projection_restore", "dps_restore"]

Tensor = torch.Tensor
Model = Callable[..., Tensor]

RESTORE_METHODS = ("flair", "dps", "projection", "pinv")
"""The restoration methods by their short names (the ``--method`` of ``flowzoo vision restore``)."""


def supported_methods(op: Operator) -> tuple[str, ...]:
    """The methods of :data:`RESTORE_METHODS` that work with ``op``: all of them when it has a pseudo-inverse,
    else only DPS (which needs :math:`A` and :math:`A^\top` alone).

    Example:
        >>> from flowzoo.vision.operators import build_operator
        >>> supported_methods(build_operator("sr4", 8))
        ('flair', 'dps', 'projection', 'pinv')
    """
    return RESTORE_METHODS if has_pseudo_inverse(op) else ("dps",)


def _image_shape(op: Operator, y: Tensor) -> tuple[int, ...]:
    """The image shape (C, H, W) behind measurements ``y``, from the adjoint every method needs anyway."""
    return tuple(op.adjoint(y[:1]).shape[1:])


def _require_pseudo_inverse(op: Operator, method: str, image_shape: Sequence[int], check: bool) -> None:
    """Refuse an operator without ``pinv`` before any work, naming the methods it allows; with ``check``, also
    verify once that its ``pinv`` is a right inverse on the range."""
    if not has_pseudo_inverse(op):
        raise ConfigError(expected(f"an operator with a pseudo-inverse A^+ (pinv) for {method}",
                                   f"{type(op).__name__} (operator {op.name!r}) without pinv",
                                   f"use a method that works with it ({', '.join(supported_methods(op))}), "
                                   f"or implement {type(op).__name__}.pinv"))
    if check:
        check_pseudo_inverse(op, image_shape)


def flair_schedule(steps: int, t_min: float = 0.18) -> Tensor:
    """FLAIR's times in flowzoo's convention: s = 1 − linspace(1, t_min, steps + 2)[1:-1], rising from ~0 to 1 − t_min.

    Example:
        >>> [round(s, 3) for s in flair_schedule(3, 0.2).tolist()]
        [0.2, 0.4, 0.6]
    """
    check_int(steps, "steps", low=1)
    check_number(t_min, "t_min", low=0.0, high=1.0, strict_low=True, strict_high=True)
    return 1.0 - torch.linspace(1.0, t_min, steps + 2, dtype=torch.float64)[1:-1].float()


@torch.no_grad()
def measure_velocity_error(model: Model, images: Tensor, times: Tensor, *, cond: Mapping[str, Tensor] | None = None,
                           repeats: int = 1, batch_size: int = 256, seed: int = 0, progress: bool = False) -> Tensor:
    r"""The model's velocity error per time, :math:`\mathbb{E}\|v_\theta(x_s, s) - (x_1 - x_0)\|^2 / d`, on held-out
    ``images`` at each of ``times`` (the table CRW is built from; ``flowzoo vision measure-crw`` measures and saves
    it for a run). ``progress`` shows a bar over the times on stderr."""
    generator = torch.Generator().manual_seed(seed)
    errors = []
    steps = times.tolist()
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="velocity error", unit="time", file=sys.stderr, dynamic_ncols=True)
    for s in steps:
        total, count = 0.0, 0
        for _ in range(check_int(repeats, "repeats", low=1)):
            for start in range(0, images.shape[0], batch_size):
                x1 = images[start:start + batch_size]
                x0 = torch.randn(x1.shape, generator=generator)
                t = torch.full((x1.shape[0],), float(s))
                part = {k: v[start:start + batch_size] for k, v in (cond or {}).items()}
                v = model(s * x1 + (1 - s) * x0, t, **part)
                total += float(((v - (x1 - x0)) ** 2).mean(dim=tuple(range(1, x1.dim()))).sum())
                count += x1.shape[0]
        errors.append(total / count)
    return torch.tensor(errors)


def save_error_table(path: str | Path, times: Tensor, errors: Tensor) -> Path:
    """Write a velocity-error table as JSON (``{"times": [...], "mse": [...]}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"times": times.tolist(), "mse": errors.tolist()}, indent=1))
    return path


def load_error_table(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read a table written by :func:`save_error_table`: ``(times, mse)``."""
    try:
        data = json.loads(Path(path).read_text())
        times, mse = torch.tensor(data["times"], dtype=torch.float32), torch.tensor(data["mse"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(expected("a velocity-error table written by save_error_table (JSON with times and mse)",
                                   f"{path} ({error})", "measure one: flowzoo vision measure-crw --checkpoint RUN --out TABLE")) from None
    if times.shape != mse.shape or times.numel() < 2 or not bool(torch.isfinite(mse).all()):
        raise ConfigError(expected("matching times and finite mse lists of at least two entries", f"{path}",
                                   "measure it again: flowzoo vision measure-crw --checkpoint RUN --out TABLE"))
    return times, mse


def calibrated_weights(schedule: Tensor, times: Tensor, mse: Tensor, reg_weight: float = 0.5,
                       shift: float | None = 0.0) -> Tensor:
    r"""CRW's :math:`\lambda` on ``schedule``: :math:`1/(\mathrm{MSE}+10^{-7})` interpolated from the table,
    normalised to mean 1, minus ``shift``, clipped at 0, times ``reg_weight``.

    ``shift`` 0 is the official super-resolution configuration's ``reg-shift``; ``None`` subtracts the last
    entry, the code's fallback, which zeroes the whole schedule when the model is most accurate at its last time
    (as for the small priors benchmarked here), so the regulariser switches off.

    Example:
        >>> w = calibrated_weights(torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0.0, 1.0]), torch.tensor([4.0, 1.0]),
        ...                        reg_weight=1.0)
        >>> [round(v, 2) for v in w.tolist()]                   # larger where the model is more accurate
        [0.67, 0.91, 1.42]
    """
    order = torch.argsort(times)
    table = np.interp(schedule.double().numpy(), times[order].double().numpy(), mse[order].double().numpy())
    weights = 1.0 / (torch.from_numpy(table) + 1e-7)
    weights = weights / weights.mean()
    weights = weights - (weights[-1] if shift is None else shift)
    return (weights.clamp_min(0) * reg_weight).float()


def operator_norm(op: Operator, shape: Sequence[int], iterations: int = 30, seed: int = 0) -> float:
    r""":math:`\|A^\top A\|` (its largest eigenvalue) by power iteration, for the data-consistency step size."""
    v = torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))
    value = 1.0
    for _ in range(iterations):
        w = op.adjoint(op.forward(v))
        value = float(w.norm())
        if value == 0:
            return 1.0
        v = w / value
    return value


def _start(y: Tensor, op: Operator, shape: Sequence[int], decoder: Callable | None, encoder: Callable | None) -> Tensor:
    """The initial point mass: :math:`A^+ y`, encoded with ``encoder``; the latent origin for a decoder without one."""
    if decoder is not None and encoder is None:
        return torch.zeros(y.shape[0], *shape, device=y.device, dtype=y.dtype)
    x = op.pinv(y)
    if decoder is None and tuple(x.shape[1:]) != tuple(shape):
        raise ShapeError(expected(f"A^+ y shaped like the prior's images {tuple(shape)}", f"{tuple(x.shape[1:])}",
                                  "pass the operator built for these images"))
    mu = encoder(x).to(y) if encoder is not None else x
    if tuple(mu.shape[1:]) != tuple(shape):
        raise ShapeError(expected(f"encoder(A^+ y) shaped like the prior's latents {tuple(shape)}",
                                  f"{tuple(mu.shape[1:])}", "pass shape=the latent shape with decoder and encoder"))
    return mu


def _data_consistency(mu: Tensor, y: Tensor, op: Operator, decoder: Callable | None, steps: int, step_size: float,
                      tolerance: float) -> Tensor:
    for _ in range(steps):
        if decoder is None:
            residual = op.forward(mu) - y
            if float((residual.detach() ** 2).mean()) < tolerance:
                break
            mu = mu - step_size * op.adjoint(residual)
        else:
            mu = mu.detach().requires_grad_(True)
            residual = op.forward(decoder(mu)) - y
            if float((residual.detach() ** 2).mean()) < tolerance:
                break
            (grad,) = torch.autograd.grad(0.5 * (residual ** 2).sum(), mu)
            mu = (mu - step_size * grad).detach()
    return mu.detach()


def flair_restore(model: Model, y: Tensor, op: Operator, *, shape: Sequence[int], steps: int = 50, t_min: float = 0.18,
                  cond: Mapping[str, Tensor] | None = None, dta: bool = True, weights: Tensor | None = None,
                  reg_weight: float = 0.5, data_steps: int = 15, data_tolerance: float = 1e-4,
                  project_until: float = 0.3, decoder: Callable | None = None, encoder: Callable | None = None,
                  generator: torch.Generator | None = None, check: bool = True) -> SampleResult:
    r"""FLAIR (module doc) on measurements ``y`` of images shaped ``shape`` (C, H, W) — a latent shape with ``decoder``.

    Args:
        weights: :math:`\lambda` per step (:func:`calibrated_weights`; CRW); None: the constant ``reg_weight``.
        dta: Deterministic Trajectory Adjustment (False: fresh noise every step, the ablation).
        data_steps: hard data-consistency steps after each regulariser step (0: the ablation without it).
        project_until: exact projection onto the measurement while s < this (pixel space; 0 turns it off).
    Returns ``x`` (restored images, decoded), ``nfe`` and ``extras["mu"]`` (the fitted point mass).
    """
    schedule = flair_schedule(steps, t_min)
    check_nonnegative(reg_weight, "reg_weight")
    check_int(data_steps, "data_steps", low=0)
    if weights is not None and weights.shape != schedule.shape:
        raise ShapeError(expected(f"one weight per step ({steps})", f"shape {tuple(weights.shape)}",
                                  "build them with calibrated_weights(flair_schedule(steps), ...)"))
    image_shape = _image_shape(op, y)
    if decoder is None or encoder is not None:                  # the start A^+ y (and the projection) need pinv
        _require_pseudo_inverse(op, "FLAIR", image_shape, check)
    if check:
        check_adjoint(op, image_shape)
    lam = weights if weights is not None else torch.full_like(schedule, reg_weight)
    step_size = 1.0 / operator_norm(op, image_shape)
    mu = _start(y, op, shape, decoder, encoder).detach()
    cond = dict(cond or {})
    previous_noise = None
    for k, s in enumerate(schedule.tolist()):
        fresh = torch.randn(mu.shape, generator=generator).to(mu)
        if dta and previous_noise is not None:
            noise = s * previous_noise + math.sqrt(max(0.0, 1.0 - s * s)) * fresh
        else:
            noise = fresh
        x_s = s * mu + (1 - s) * noise
        with torch.no_grad():
            v = model(x_s, torch.full((mu.shape[0],), s, device=mu.device), **cond)
        previous_noise = x_s - s * v
        mu = mu - lam[k].item() * (mu - noise - v)          # the SDS-style step: v carries no gradient
        if decoder is None and s < project_until:
            mu = op.project(mu, y)
        mu = _data_consistency(mu, y, op, decoder, data_steps, step_size, data_tolerance)
    x = decoder(mu).detach() if decoder is not None else mu
    return SampleResult(x=x, nfe=len(schedule), extras={"mu": mu})


def pseudo_inverse_restore(y: Tensor, op: Operator) -> SampleResult:
    """The measurement's pseudo-inverse :math:`A^+ y` (no prior; zero model evaluations); an operator without
    ``pinv`` is refused with the methods it allows."""
    _require_pseudo_inverse(op, "the pseudo-inverse baseline", (), check=False)
    return SampleResult(x=op.pinv(y), nfe=0)


def _euler_grid(steps: int) -> list[float]:
    return torch.linspace(0.0, 1.0, check_int(steps, "steps", low=1) + 1).tolist()


def projection_restore(model: Model, y: Tensor, op: Operator, *, shape: Sequence[int], steps: int = 50,
                       cond: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None,
                       check: bool = True) -> SampleResult:
    r"""Euler sampling from noise with each step's clean estimate projected onto :math:`\{x : Ax = y\}`
    (``check``: verify the operator's adjoint and pseudo-inverse once first; it needs ``pinv``)."""
    image_shape = _image_shape(op, y)
    _require_pseudo_inverse(op, "projection", image_shape, check)
    if check:
        check_adjoint(op, image_shape)
    x = torch.randn(y.shape[0], *shape, generator=generator).to(y)
    grid, cond = _euler_grid(steps), dict(cond or {})
    for s, s_next in zip(grid[:-1], grid[1:]):
        with torch.no_grad():
            v = model(x, torch.full((x.shape[0],), s, device=x.device), **cond)
        clean = op.project(x + (1 - s) * v, y)
        x = x + (s_next - s) * (clean - x) / (1 - s)
    return SampleResult(x=op.project(x, y), nfe=steps)


def dps_restore(model: Model, y: Tensor, op: Operator, *, shape: Sequence[int], steps: int = 50, zeta: float = 1.0,
                cond: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None,
                check: bool = True) -> SampleResult:
    r"""DPS through a flow prior: Euler steps minus :math:`\zeta\nabla_{x_s}\|y - A\hat x_1(x_s)\|` (arXiv 2209.14687;
    ``check``: verify the operator's adjoint once first)."""
    check_positive(zeta, "zeta")
    if check:
        check_adjoint(op, _image_shape(op, y))
    x = torch.randn(y.shape[0], *shape, generator=generator).to(y)
    grid, cond = _euler_grid(steps), dict(cond or {})
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = x.detach().requires_grad_(True)
        v = model(x, torch.full((x.shape[0],), s, device=x.device), **cond)
        residual = (y - op.forward(x + (1 - s) * v)).flatten(1).norm(dim=1)
        (grad,) = torch.autograd.grad(residual.sum(), x)
        x = (x + (s_next - s) * v - zeta * grad).detach()
    return SampleResult(x=x, nfe=steps)
