r"""Euler–Maruyama sampling of the generative SDE of a stochastic interpolant.

Albergo, Boffi & Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for Flows and Diffusions"
(arXiv 2303.08797), Thm. 2.21 / Cor. 2.22: for any diffusion coefficient :math:`\varepsilon(t) \ge 0` the
SDEs

.. math::
    dX_t = \big[b(X_t, t) + \varepsilon(t)\, s(X_t, t)\big]\, dt + \sqrt{2\varepsilon(t)}\, dW_t
    \qquad \text{(forward, } t: 0 \to 1\text{)}

    dX_t = \big[b(X_t, t) - \varepsilon(t)\, s(X_t, t)\big]\, dt + \sqrt{2\varepsilon(t)}\, d\bar W_t
    \qquad \text{(backward, } t: 1 \to 0\text{)}

have the interpolant's marginals :math:`\rho_t`, where :math:`b` is the drift (the velocity of the
probability-flow ODE) and :math:`s = \nabla \log \rho_t` the score. :math:`\varepsilon = 0` recovers the ODE
(and then this integrator is exactly Euler's method).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flowzoo.core.validation import as_time, broadcast_time, check_nonnegative, check_tensor
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.sampling.grids import resolve_grid
from flowzoo.core.sampling.result import Callback, SampleResult, StepRecorder, check_cond, check_end_state, check_output

__all__ = ["integrate_sde"]

Model = Callable[..., torch.Tensor]
Diffusion = float | Callable[[torch.Tensor], float | torch.Tensor]


def integrate_sde(
    model: Model,
    x: torch.Tensor,
    *,
    score_model: Model | None = None,
    eps: Diffusion = 1.0,
    steps: int | None = None,
    time_grid: torch.Tensor | Sequence[float] | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    cond: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    return_trajectory: bool = False,
    final_noise: bool = False,
    progress: bool = False,
    enable_grad: bool = False,
) -> SampleResult:
    r"""Sample the stochastic-interpolant SDE with Euler–Maruyama.

    One step from :math:`t` to :math:`t' = t + h` (``h < 0`` on a decreasing grid) is

    .. math::  x' = x + h\,\big[b(x, t) + \operatorname{sign}(h)\,\varepsilon(t)\,s(x, t)\big]
               + \sqrt{2\,\varepsilon(t)\,|h|}\;\xi, \qquad \xi \sim \mathcal N(0, I).

    By default the **last step adds no noise** (``final_noise=False``), the usual practice in diffusion
    samplers: the returned sample is the drift's last prediction rather than one carrying a final
    :math:`O(\sqrt{h})` kick that no later step can remove. Pass ``final_noise=True`` for the plain
    Euler–Maruyama chain (e.g. to check marginals at a fixed step size).

    The score :math:`s = -\mathbb E[z \mid x_t]/\gamma(t)` is singular where :math:`\gamma(t) = 0` (often at
    t = 0 and t = 1): start or end the grid slightly inside, e.g. ``t0=1e-3``, or take a schedule
    :math:`\varepsilon(t)` that vanishes there.

    Args:
        model: the drift :math:`b`, called ``model(x, t, **cond)`` with ``t`` of shape (B,).
        x: start state (B, ...), e.g. source samples at ``t0``.
        score_model: :math:`s`, same call; may be ``None`` when ``eps`` is the constant 0.
        eps: diffusion coefficient :math:`\varepsilon \ge 0`, a number or a callable of the (B,) time tensor
            returning a number, a 0-dim tensor or a (B,) tensor. At steps where it is 0 the score is not called.
        steps, time_grid, t0, t1: the grid, as in :func:`~flowzoo.core.sampling.ode.integrate`.
        cond: conditioning passed to both models as keyword arguments.
        generator: torch generator for the Brownian increments (on ``x``'s device), for reproducibility.
        return_trajectory: also return the state at every grid time.
        final_noise: add noise on the last step too (see above).
        callback: called after every step with ``{"i", "t", "t_next", "x"}``.
        progress: show a tqdm bar.
        enable_grad: keep the autograd graph.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult`; ``nfe`` counts drift and score calls together.

    Raises:
        ConfigError: missing score model with ``eps != 0``, negative ``eps``, missing or conflicting grid.
        ShapeError, DTypeError, EmptyInputError, NonFiniteError: bad ``x`` or model outputs, NaN result.

    Example:
        >>> import torch
        >>> drift = lambda x, t: torch.zeros_like(x)
        >>> score = lambda x, t: -x                                  # N(0, 1) stays N(0, 1)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = integrate_sde(drift, torch.randn(20000, 1, generator=g), score_model=score, eps=0.5, steps=20,
        ...                     generator=g)
        >>> round(out.x.var().item(), 1), out.nfe
        (1.0, 40)
    """
    check_tensor(x, "x")
    cond = check_cond(cond)
    grid = resolve_grid(steps, time_grid, x, t0=t0, t1=t1)
    if not callable(eps):
        check_nonnegative(eps, "eps", fix="pass e.g. eps=1.0 (eps=0 gives the probability-flow ODE) or a callable of t")
        if eps > 0 and score_model is None:
            raise ConfigError(expected("a score_model when eps > 0", "score_model=None",
                                       "pass the score model, or eps=0 for the deterministic ODE"))
    if score_model is None and callable(eps):
        raise ConfigError(expected("a score_model with a callable eps", "score_model=None",
                                   "pass the score model, or eps=0 for the deterministic ODE"))

    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory, progress=progress,
                            desc="integrate_sde")
    # Step sizes as Python floats, read once; the output shapes are checked on the first step only.
    sizes = (grid[1:] - grid[:-1]).tolist()
    times = grid[:, None].expand(-1, x.shape[0]).unbind(0)
    nfe, score_checked = 0, False
    with torch.set_grad_enabled(enable_grad):
        for i, h in enumerate(sizes):
            t = times[i]
            eps_t = _diffusion_at(eps, grid[i], x)
            update = model(x, t, **cond)
            nfe += 1
            if i == 0:
                check_output(update, x, "model(x, t, **cond)")
            if eps_t is not None:
                score = score_model(x, t, **cond)
                if not score_checked:
                    check_output(score, x, "score_model(x, t, **cond)")
                    score_checked = True
                update = update + (eps_t if h > 0 else -eps_t) * score
                nfe += 1
            x_next = x.add(update, alpha=h)
            if eps_t is not None and (final_noise or i < len(sizes) - 1):
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x_next = x_next + torch.sqrt(2.0 * abs(h) * eps_t) * noise
            x = x_next
            if recorder.active:
                recorder.record(i, x)
    trajectory = recorder.trajectory()
    check_end_state(x, "check the models, keep the grid away from a singular score, or use a smaller eps / more "
                       "steps")
    return SampleResult(x=x, nfe=nfe, trajectory=trajectory, times=grid)


def _diffusion_at(eps: Diffusion, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """:math:`\\varepsilon(t)` shaped to broadcast against ``x``, or ``None`` where it is 0 everywhere."""
    if not callable(eps):
        return None if eps == 0 else torch.as_tensor(float(eps), dtype=x.dtype, device=x.device)
    value = eps(as_time(t, x.shape[0], x))
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.dim() == 1 and value.shape[0] == x.shape[0]:
        value = broadcast_time(value, x)
    elif value.dim() != 0:
        raise ConfigError(expected("eps(t) as a number, a 0-dim tensor or a (B,) tensor",
                                   f"shape {tuple(value.shape)}", "return one coefficient per sample or one overall"))
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise ConfigError(expected("eps(t) finite and >= 0", f"{value.flatten()[:4].tolist()} at t={float(t):.4g}",
                                   "fix the diffusion schedule"))
    return None if bool((value == 0).all()) else value
