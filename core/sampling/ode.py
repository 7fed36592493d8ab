r"""ODE integrators for velocity models, with NFE counting.

A velocity model is called ``model(x, t, **cond)`` with ``t`` a float tensor of shape (B,) and returns a
tensor shaped like ``x``. Time runs from 0 (source / noise) to 1 (data), so sampling integrates

.. math::  \frac{dx}{dt} = v_\theta(x, t), \qquad x(t_0) = x_0

forward over an increasing grid; a decreasing grid integrates backward (data → source, e.g. to encode data
or to compute a likelihood).

Every fixed-step method is a plain function with one signature, in the style of k-diffusion's samplers:
``step(model, x, t, t_next, cond) -> (x_next, nfe)``; :func:`integrate` loops one of them over a time grid,
or hands adaptive methods (``"dopri5"``, ...) to :func:`torchdiffeq.odeint` behind an NFE-counting wrapper.

Time grids (:func:`~flowzoo.core.sampling.grids.uniform_grid`, ...) live in :mod:`flowzoo.core.sampling.grids`;
the result type and the per-step bookkeeping shared by every sampler in :mod:`flowzoo.core.sampling.result`.

Example:
    >>> import torch
    >>> from flowzoo.core.sampling.ode import integrate
    >>> velocity = lambda x, t: torch.ones_like(x)          # dx/dt = 1
    >>> result = integrate(velocity, torch.zeros(4, 2), method="rk4", steps=5)
    >>> result.x[0].tolist(), result.nfe
    ([1.0, 1.0], 20)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flowzoo.core.validation import as_time, check_tensor
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.sampling.grids import resolve_grid
from flowzoo.core.sampling.result import (Callback, SampleResult, StepRecorder, check_cond, check_end_state,
                                          check_output, progress_bar)

__all__ = [
    "StepFunction",
    "euler_step",
    "midpoint_step",
    "heun_step",
    "rk4_step",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "METHODS",
    "check_method",
    "integrate",
]

Model = Callable[..., torch.Tensor]
StepFunction = Callable[[Model, torch.Tensor, torch.Tensor, torch.Tensor, Mapping[str, Any]],
                        tuple[torch.Tensor, int]]
"""The shared signature of a fixed-step method: ``(model, x, t, t_next, cond) -> (x_next, nfe)``."""


# ---------------------------------------------------------------------------------------------- steps
# A kernel advances one step with the model already bound to its conditioning, ``f(x, t)``. ``h`` is the step
# size: a Python float inside :func:`integrate` (read from the grid once, so each update is one fused
# ``x.add(v, alpha=h)`` and no step builds a tensor for h), a tensor when a public step function is called
# with tensor times. ``t``, ``t_mid`` and ``t_next`` are the (B,) times at the start, middle and end.

def _axpy(x: torch.Tensor, h: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return x.add(v, alpha=h) if isinstance(h, float) else x + h * v


def _euler(f, x, h, t, t_mid, t_next):
    return _axpy(x, h, f(x, t))


def _midpoint(f, x, h, t, t_mid, t_next):
    return _axpy(x, h, f(_axpy(x, 0.5 * h, f(x, t)), t_mid))


def _heun(f, x, h, t, t_mid, t_next):
    k1 = f(x, t)
    k2 = f(_axpy(x, h, k1), t_next)
    return _axpy(x, 0.5 * h, k1 + k2)


def _rk4(f, x, h, t, t_mid, t_next):
    k1 = f(x, t)
    k2 = f(_axpy(x, 0.5 * h, k1), t_mid)
    k3 = f(_axpy(x, 0.5 * h, k2), t_mid)
    k4 = f(_axpy(x, h, k3), t_next)
    return _axpy(x, h / 6.0, torch.add(k1, k2 + k3, alpha=2.0) + k4)


_KERNELS = {"euler": (_euler, 1), "midpoint": (_midpoint, 2), "heun": (_heun, 2), "rk4": (_rk4, 4)}

_MODEL_CALL = "model(x, t, **cond)"


def _checked(model: Model, cond: Mapping[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``f(x, t)`` that calls the model and checks that its output is shaped like ``x``."""
    return lambda x, t: check_output(model(x, t, **cond), x, _MODEL_CALL)


def _public_step(kernel, calls: int, model: Model, x: torch.Tensor, t, t_next,
                 cond: Mapping[str, Any] | None) -> tuple[torch.Tensor, int]:
    h = t_next - t
    batch = x.shape[0]
    times = as_time(t, batch, x), as_time(t + 0.5 * h, batch, x), as_time(t_next, batch, x)
    return kernel(_checked(model, cond or {}), x, h, *times), calls


def euler_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
               cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Explicit Euler, first order, 1 evaluation: :math:`x' = x + h\,v(x, t)`, :math:`h = t' - t`."""
    return _public_step(_euler, 1, model, x, t, t_next, cond)


def midpoint_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                  cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Explicit midpoint (RK2), second order, 2 evaluations:
    :math:`x' = x + h\,v(x + \tfrac h2 v(x, t),\ t + \tfrac h2)`."""
    return _public_step(_midpoint, 2, model, x, t, t_next, cond)


def heun_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Heun's method (explicit trapezoid, the EDM sampler's corrector), second order, 2 evaluations:
    :math:`\tilde x = x + h\,k_1`, :math:`x' = x + \tfrac h2 (k_1 + v(\tilde x, t'))` with :math:`k_1 = v(x, t)`.
    """
    return _public_step(_heun, 2, model, x, t, t_next, cond)


def rk4_step(model: Model, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
             cond: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, int]:
    r"""Classical Runge–Kutta, fourth order, 4 evaluations (weights 1/6, 1/3, 1/3, 1/6)."""
    return _public_step(_rk4, 4, model, x, t, t_next, cond)


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


def check_method(method: object) -> str:
    """``method`` if it names one of :data:`METHODS`, else ConfigError listing them."""
    if method not in METHODS:
        raise ConfigError(expected(f"method in {list(METHODS)}", repr(method), "pick one of the listed methods"))
    return method


class _CountingVelocity:
    """``func(t, x)`` for torchdiffeq: calls the model with (B,) times and counts the calls."""

    def __init__(self, model: Model, cond: Mapping[str, Any], on_call: Callable[[], None] | None = None):
        self.model, self.cond, self.nfe, self.on_call = model, cond, 0, on_call

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.on_call is not None:
            self.on_call()
        v = self.model(x, as_time(t, x.shape[0], x), **self.cond)
        return check_output(v, x, _MODEL_CALL) if self.nfe == 1 else v


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
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    enable_grad: bool = False,
) -> SampleResult:
    r"""Integrate :math:`dx/dt = v(x, t)` from the first time of the grid to the last.

    Args:
        model: velocity model ``model(x, t, **cond)``, ``t`` of shape (B,).
        x: the start state (B, ...), e.g. source samples at ``t0 = 0``.
        method: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (fixed step; 1, 2, 2, 4 evaluations per
            step) or an adaptive torchdiffeq method (``"dopri5"``, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``), which choose their own steps within ``atol`` / ``rtol``.
        steps: number of uniform steps from ``t0`` to ``t1``. For adaptive methods it only sets the output
            times (default: just the endpoints).
        time_grid: explicit grid instead of ``steps`` (e.g. :func:`~flowzoo.core.sampling.grids.shifted_grid`);
            strictly increasing (forward, source → data) or strictly decreasing (backward, data → source).
        t0, t1: start and end time of the uniform grid; ``t1 < t0`` integrates backward.
        atol, rtol: tolerances of adaptive methods.
        cond: conditioning passed to the model as keyword arguments (e.g. ``{"y": labels}``).
        generator: unused (the ODE is deterministic); accepted so that every sampler has one call shape.
        callback: called after every step with ``{"i", "t", "t_next", "x"}`` (``x`` at ``t_next``); for
            adaptive methods once per output time, after the solve.
        return_trajectory: also return the state at every grid time.
        progress: show a tqdm bar (steps, or model calls for adaptive methods).
        enable_grad: keep the autograd graph (e.g. to backpropagate through the sampler); off by default.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult` with the end state, the exact number of model
        calls, the optional trajectory and the grid (``times``; the output times for adaptive methods).

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
    check_method(method)
    check_tensor(x, "x")
    cond = check_cond(cond)
    adaptive = method in ADAPTIVE_METHODS
    grid = resolve_grid(steps, time_grid, x, t0=t0, t1=t1, default_steps=1 if adaptive else None,
                        missing_fix="pass e.g. steps=100, or use method='dopri5'")
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory and not adaptive,
                            progress=progress and not adaptive, desc="integrate")
    with torch.set_grad_enabled(enable_grad):
        if adaptive:
            x_end, nfe, trajectory = _integrate_adaptive(model, x, grid, method, atol, rtol, cond, recorder,
                                                         progress, return_trajectory)
        else:
            x_end, nfe, trajectory = _integrate_fixed(model, x, grid, method, cond, recorder)
    check_end_state(x_end, "check the model for NaN outputs, or use more steps / a smaller grid")
    return SampleResult(x=x_end, nfe=nfe, trajectory=trajectory, times=grid)


def _integrate_fixed(model, x, grid, method, cond, recorder):
    # Everything a step needs is built before the loop: the step sizes as Python floats (one transfer), the
    # (B,) time views, and the model bound to its conditioning. Only the first call checks the output shape.
    kernel, calls = _KERNELS[method]
    f = functools.partial(model, **cond) if cond else model
    first = _checked(model, cond)
    batch = x.shape[0]
    sizes = (grid[1:] - grid[:-1]).tolist()
    times = grid[:, None].expand(-1, batch).unbind(0)
    mids = (grid[:-1] + 0.5 * (grid[1:] - grid[:-1]))[:, None].expand(-1, batch).unbind(0)
    for i, h in enumerate(sizes):
        x = kernel(first if i == 0 else f, x, h, times[i], mids[i], times[i + 1])
        if recorder.active:
            recorder.record(i, x)
    return x, calls * len(sizes), recorder.trajectory()


def _integrate_adaptive(model, x, grid, method, atol, rtol, cond, recorder, progress, return_trajectory):
    import torchdiffeq

    bar = progress_bar(None, progress, f"integrate ({method}, model calls)")
    func = _CountingVelocity(model, cond, on_call=(lambda: bar.update(1)) if bar is not None else None)
    states = torchdiffeq.odeint(func, x, grid, method=method, atol=atol, rtol=rtol)
    if bar is not None:
        bar.close()
    if recorder.active:
        for i in range(len(grid) - 1):
            recorder.record(i, states[i + 1])
    return states[-1], func.nfe, (states if return_trajectory else None)
