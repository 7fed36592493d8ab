r"""ODE integrators for velocity models, time grids and NFE counting.

A velocity model is called ``model(x, t, **cond)`` with ``t`` a float tensor of shape (B,) and returns a
tensor shaped like ``x``. Time runs from 0 (source / noise) to 1 (data), so sampling integrates

.. math::  \frac{dx}{dt} = v_\theta(x, t), \qquad x(t_0) = x_0

forward over an increasing grid; a decreasing grid integrates backward (data → source, e.g. to encode data
or to compute a likelihood).

Every fixed-step method is a plain function with one signature, in the style of k-diffusion's samplers:
``step(model, x, t, t_next, cond) -> (x_next, nfe)``; :func:`integrate` loops one of them over a time grid,
or hands adaptive methods (``"dopri5"``, ...) to :func:`torchdiffeq.odeint` behind an NFE-counting wrapper.

``integrate_sde`` (stochastic interpolants, :mod:`flowzoo.core.sampling.sde`) and ``log_likelihood`` (continuous
normalizing flows, :mod:`flowzoo.core.sampling.likelihood`) are re-exported from here.

Example:
    >>> import torch
    >>> from flowzoo.core.sampling.ode import integrate
    >>> velocity = lambda x, t: torch.ones_like(x)          # dx/dt = 1
    >>> result = integrate(velocity, torch.zeros(4, 2), method="rk4", steps=5)
    >>> result.x[0].tolist(), result.nfe
    ([1.0, 1.0], 20)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flowzoo.core.validation import as_time, check_tensor
from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected

__all__ = [
    "ODEResult",
    "StepFunction",
    "euler_step",
    "midpoint_step",
    "heun_step",
    "rk4_step",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "METHODS",
    "integrate",
    "uniform_grid",
    "shifted_grid",
]

Model = Callable[..., torch.Tensor]
StepFunction = Callable[[Model, torch.Tensor, torch.Tensor, torch.Tensor, Mapping[str, Any]],
                        tuple[torch.Tensor, int]]
"""The shared signature of a fixed-step method: ``(model, x, t, t_next, cond) -> (x_next, nfe)``."""


@dataclass
class ODEResult:
    """What an integrator returns.

    Attributes:
        x: the state at the last time of the grid, shaped like the input.
        nfe: number of model evaluations (each batched call counts once; for the SDE, drift and score calls
            are counted separately).
        trajectory: ``(len(times), B, ...)`` states at every grid time, the start included, when
            ``return_trajectory=True``; otherwise ``None``.
        times: the time grid that was used (output times for adaptive methods), shape ``(len(times),)``.
    """

    x: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None
    times: torch.Tensor


# ---------------------------------------------------------------------------------------------- steps

def _velocity(model: Model, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any]) -> torch.Tensor:
    v = model(x, as_time(t, x.shape[0], x), **cond)
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ShapeError(expected(f"the model to return a tensor shaped like x {tuple(x.shape)}", got,
                                  "make model(x, t, **cond) return the velocity with x's shape"))
    return v


def euler_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
               cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Explicit Euler, first order, 1 evaluation: :math:`x' = x + h\,v(x, t)`, :math:`h = t' - t`."""
    h = t_next - t
    return x + h * _velocity(model, x, t, cond or {}), 1


def midpoint_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                  cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Explicit midpoint (RK2), second order, 2 evaluations:
    :math:`x' = x + h\,v(x + \tfrac h2 v(x, t),\ t + \tfrac h2)`."""
    cond = cond or {}
    h = t_next - t
    k1 = _velocity(model, x, t, cond)
    k2 = _velocity(model, x + 0.5 * h * k1, t + 0.5 * h, cond)
    return x + h * k2, 2


def heun_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Heun's method (explicit trapezoid, the EDM sampler's corrector), second order, 2 evaluations:
    :math:`\tilde x = x + h\,k_1`, :math:`x' = x + \tfrac h2 (k_1 + v(\tilde x, t'))` with :math:`k_1 = v(x, t)`.
    """
    cond = cond or {}
    h = t_next - t
    k1 = _velocity(model, x, t, cond)
    k2 = _velocity(model, x + h * k1, t_next, cond)
    return x + 0.5 * h * (k1 + k2), 2


def rk4_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
             cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Classical Runge–Kutta, fourth order, 4 evaluations (weights 1/6, 1/3, 1/3, 1/6)."""
    cond = cond or {}
    h = t_next - t
    half = t + 0.5 * h
    k1 = _velocity(model, x, t, cond)
    k2 = _velocity(model, x + 0.5 * h * k1, half, cond)
    k3 = _velocity(model, x + 0.5 * h * k2, half, cond)
    k4 = _velocity(model, x + h * k3, t_next, cond)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4), 4


FIXED_STEP_METHODS: dict[str, StepFunction] = {
    "euler": euler_step,
    "midpoint": midpoint_step,
    "heun": heun_step,
    "rk4": rk4_step,
}
"""Fixed-step methods by name; each value has the :data:`StepFunction` signature."""

ADAPTIVE_METHODS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
"""Adaptive methods, run by :func:`torchdiffeq.odeint` with ``atol`` / ``rtol``."""

METHODS: tuple[str, ...] = tuple(FIXED_STEP_METHODS) + ADAPTIVE_METHODS


# ---------------------------------------------------------------------------------------------- grids

def _check_steps(steps: object, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(expected(f"{name} as a positive integer", repr(steps), f"pass e.g. {name}=50"))
    return steps


def uniform_grid(steps: int, t0: float = 0.0, t1: float = 1.0, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """``steps + 1`` equally spaced times from ``t0`` to ``t1`` (both included; ``t1 < t0`` runs backward).

    Example:
        >>> uniform_grid(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    steps = _check_steps(steps)
    if not (torch.isfinite(torch.tensor([t0, t1])).all() and t0 != t1):
        raise ConfigError(expected("finite t0 != t1", f"t0={t0}, t1={t1}", "pass e.g. t0=0.0, t1=1.0"))
    grid = torch.linspace(t0, t1, steps + 1, dtype=dtype, device=device)
    grid[0], grid[-1] = t0, t1  # exact endpoints whatever the rounding of linspace
    return grid


def shifted_grid(steps: int, shift: float, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    r"""A time grid from 0 to 1 warped by the timestep shift of SD3 (Esser et al. 2024, arXiv 2403.03206, §5.3.2).

    SD3 counts noise with :math:`\sigma` (1 = noise) and shifts a uniform :math:`\sigma` grid as
    :math:`\sigma' = s\sigma / (1 + (s - 1)\sigma)`. In flowzoo's convention (t = 0 noise, t = 1 data) we take
    :math:`\sigma = 1 - t` on a uniform grid and return :math:`t' = 1 - \sigma'`. The endpoints stay at 0 and 1
    and the grid stays increasing; ``shift > 1`` packs the steps towards the source / noise end (t ≈ 0), where
    large images need more of them, ``shift < 1`` towards the data end, and ``shift = 1`` is
    :func:`uniform_grid`.

    Example:
        >>> [round(v, 4) for v in shifted_grid(4, shift=3.0).tolist()]
        [0.0, 0.1, 0.25, 0.5, 1.0]
    """
    steps = _check_steps(steps)
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (0 < float(shift) < float("inf")):
        raise ConfigError(expected("shift as a positive finite number", repr(shift),
                                   "pass e.g. shift=3.0 (1.0 means no shift)"))
    sigma = 1.0 - torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    shifted = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    grid = (1.0 - shifted).to(dtype=dtype, device=device)
    grid[0], grid[-1] = 0.0, 1.0
    return grid


def _resolve_grid(steps: int | None, time_grid: torch.Tensor | Sequence[float] | None, t0: float, t1: float,
                  x: torch.Tensor, *, adaptive: bool) -> torch.Tensor:
    """The grid to integrate over, validated and moved to ``x``'s device and dtype."""
    if steps is not None and time_grid is not None:
        raise ConfigError(expected("either steps or time_grid", "both",
                                   "pass steps (with t0, t1) for a uniform grid, or an explicit time_grid"))
    if time_grid is None:
        if steps is None:
            if not adaptive:
                raise ConfigError(expected("steps or time_grid for a fixed-step method", "neither",
                                           "pass e.g. steps=100, or use method='dopri5'"))
            steps = 1  # adaptive methods pick their own steps; output only the endpoints
        return uniform_grid(steps, t0, t1, dtype=x.dtype, device=x.device)
    grid = torch.as_tensor(time_grid)
    if not grid.is_floating_point() and not grid.is_complex() and grid.dtype != torch.bool:
        grid = grid.to(x.dtype)  # an integer grid such as [1, 0] is a fine grid
    if grid.dim() != 1 or grid.shape[0] < 2:
        raise ShapeError(expected("time_grid as a 1-D tensor with at least 2 times", f"shape {tuple(grid.shape)}",
                                  "pass e.g. uniform_grid(50)"))
    check_tensor(grid, "time_grid")
    grid = grid.to(device=x.device, dtype=x.dtype)
    diffs = grid[1:] - grid[:-1]
    if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
        raise ConfigError(expected("a strictly monotone time_grid (increasing: source→data, decreasing: "
                                   "data→source)", grid.tolist()[:8], "sort the grid and remove repeated times"))
    return grid


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(expected(f"method in {list(METHODS)}", repr(method), "pick one of the listed methods"))


def _check_cond(cond: Mapping[str, Any] | None) -> dict[str, Any]:
    if cond is None:
        return {}
    if not isinstance(cond, Mapping) or not all(isinstance(k, str) for k in cond):
        raise ConfigError(expected("cond as a mapping from keyword names to values", type(cond).__name__,
                                   "pass e.g. cond={'y': labels}"))
    return dict(cond)


class _CountingVelocity:
    """``func(t, x)`` for torchdiffeq: calls the model with (B,) times and counts the calls."""

    def __init__(self, model: Model, cond: Mapping[str, Any], on_call: Callable[[], None] | None = None):
        self.model, self.cond, self.nfe, self.on_call = model, cond, 0, on_call

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.on_call is not None:
            self.on_call()
        return _velocity(self.model, x, t.to(x.dtype), self.cond)


# ---------------------------------------------------------------------------------------------- integrate

def integrate(
    model: Model,
    x: torch.Tensor,
    *,
    method: str = "euler",
    steps: int | None = None,
    time_grid: torch.Tensor | Sequence[float] | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    cond: Mapping[str, Any] | None = None,
    return_trajectory: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    enable_grad: bool = False,
) -> ODEResult:
    r"""Integrate :math:`dx/dt = v(x, t)` from the first time of the grid to the last.

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape (B,).
        x: the start state (B, ...), e.g. source samples at ``t0 = 0``.
        method: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (fixed step; 1, 2, 2, 4 evaluations per
            step) or an adaptive torchdiffeq method (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``), which choose their own steps within ``atol`` / ``rtol``.
        steps: number of uniform steps from ``t0`` to ``t1``. For adaptive methods it only sets the output
            times (default: just the endpoints).
        time_grid: explicit grid instead of ``steps`` (e.g. :func:`shifted_grid`); strictly increasing
            (forward, source → data) or strictly decreasing (backward, data → source).
        t0, t1: start and end time of the uniform grid; ``t1 < t0`` integrates backward.
        atol, rtol: tolerances of adaptive methods.
        cond: conditioning passed to the model as keyword arguments (e.g. ``{"y": labels}``).
        return_trajectory: also return the state at every grid time.
        callback: called after every step with ``{"i", "t", "t_next", "x"}`` (``x`` at ``t_next``); for
            adaptive methods once per output time, after the solve.
        progress: show a tqdm bar (steps, or model calls for adaptive methods).
        enable_grad: keep the autograd graph (e.g. to backpropagate through the sampler); off by default.

    Returns:
        :class:`ODEResult` with the end state, the exact number of model calls, the optional trajectory
        and the grid.

    Raises:
        ConfigError: unknown method, missing or conflicting steps / time_grid, non-monotone grid.
        ShapeError, DTypeError, EmptyInputError, NonFiniteError: bad ``x``, a model output not shaped like
            ``x``, or an integration that produced NaN / Inf.

    Example:
        >>> import torch
        >>> decay = lambda x, t: -x                              # x(1) = x(0) / e
        >>> out = integrate(decay, torch.ones(2, 3), method="dopri5")
        >>> round(out.x[0, 0].item(), 4), out.nfe > 0
        (0.3679, True)
    """
    _check_method(method)
    check_tensor(x, "x")
    cond = _check_cond(cond)
    adaptive = method in ADAPTIVE_METHODS
    grid = _resolve_grid(steps, time_grid, t0, t1, x, adaptive=adaptive)
    with torch.set_grad_enabled(enable_grad):
        if adaptive:
            x_end, nfe, trajectory = _integrate_adaptive(model, x, grid, method, atol, rtol, cond,
                                                         return_trajectory, callback, progress)
        else:
            x_end, nfe, trajectory = _integrate_fixed(model, x, grid, FIXED_STEP_METHODS[method], cond,
                                                      return_trajectory, callback, progress)
    if not bool(torch.isfinite(x_end).all()):
        raise NonFiniteError(expected("a finite end state", "NaN/Inf after integration",
                                      "check the model for NaN outputs, or use more steps / a smaller grid"))
    return ODEResult(x=x_end, nfe=nfe, trajectory=trajectory, times=grid)


def _progress_bar(total: int | None, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _integrate_fixed(model, x, grid, step, cond, return_trajectory, callback, progress):
    bar = _progress_bar(len(grid) - 1, progress, "integrate")
    states = [x] if return_trajectory else None
    nfe = 0
    for i in range(len(grid) - 1):
        x, calls = step(model, x, grid[i], grid[i + 1], cond)
        nfe += calls
        if states is not None:
            states.append(x)
        if callback is not None:
            callback({"i": i, "t": grid[i], "t_next": grid[i + 1], "x": x})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x, nfe, (torch.stack(states) if states is not None else None)


def _integrate_adaptive(model, x, grid, method, atol, rtol, cond, return_trajectory, callback, progress):
    import torchdiffeq

    bar = _progress_bar(None, progress, f"integrate ({method}, model calls)")
    func = _CountingVelocity(model, cond, on_call=(lambda: bar.update(1)) if bar is not None else None)
    states = torchdiffeq.odeint(func, x, grid, method=method, atol=atol, rtol=rtol)
    if bar is not None:
        bar.close()
    if callback is not None:
        for i in range(len(grid) - 1):
            callback({"i": i, "t": grid[i], "t_next": grid[i + 1], "x": states[i + 1]})
    return states[-1], func.nfe, (states if return_trajectory else None)
