r"""Time grids for samplers, and the one function that turns ``steps`` / ``time_grid`` into a validated grid.

Time runs from 0 (source / noise) to 1 (data). An increasing grid samples (source → data); a decreasing grid
runs backward (data → source, e.g. to encode data or to compute a likelihood).

Example:
    >>> import torch
    >>> resolve_grid(None, [0.0, 0.5, 1.0], torch.zeros(3, 2, dtype=torch.float64)).dtype
    torch.float64
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from flowzoo.core.validation import check_positive, check_positive_int, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["uniform_grid", "shifted_grid", "edm_grid", "resolve_grid"]

Grid = torch.Tensor | Sequence[float]


def uniform_grid(steps: int, t0: float = 0.0, t1: float = 1.0, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """``steps + 1`` equally spaced times from ``t0`` to ``t1`` (both included; ``t1 < t0`` runs backward).

    Example:
        >>> uniform_grid(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    steps = check_positive_int(steps, "steps", fix="pass e.g. steps=50")
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 != t1):
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
    steps = check_positive_int(steps, "steps", fix="pass e.g. steps=50")
    check_positive(shift, "shift", fix="pass e.g. shift=3.0 (1.0 means no shift)")
    sigma = 1.0 - torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    shifted = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    grid = (1.0 - shifted).to(dtype=dtype, device=device)
    grid[0], grid[-1] = 0.0, 1.0
    return grid


def edm_grid(steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
             dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    r"""EDM's noise levels (Karras et al., arXiv 2206.00364, Eq. 5) as an increasing flowzoo time grid.

    :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{N-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`
    for :math:`i < N`, then :math:`\sigma_N = 0`. On the linear path :math:`x_t = (1-t) x_0 + t x_1` the noise
    level of :math:`x_t / t` is :math:`\sigma = (1 - t)/t`, so :math:`t_i = 1/(1 + \sigma_i)`: the grid starts
    at :math:`1/(1 + \sigma_{max})` and ends at 1, with ``steps`` intervals crowded near the data, where EDM
    found the truncation error largest (the grid of facebookresearch/flow_matching's image example).

    Example:
        >>> g = edm_grid(4)
        >>> len(g), round(g[0].item(), 4), g[-1].item()
        (5, 0.0123, 1.0)
    """
    steps = check_positive_int(steps, "steps", fix="pass e.g. steps=18")
    sigma_min = check_positive(sigma_min, "sigma_min")
    sigma_max = check_positive(sigma_max, "sigma_max")
    rho = check_positive(rho, "rho")
    if not sigma_min < sigma_max:
        raise ConfigError(expected("sigma_min < sigma_max", f"sigma_min={sigma_min}, sigma_max={sigma_max}",
                                   "pass e.g. sigma_min=0.002, sigma_max=80"))
    frac = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = torch.cat([(hi + frac * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])
    return (1.0 / (1.0 + sigma)).to(dtype=dtype, device=device)


def resolve_grid(steps: int | None, time_grid: Grid | None, like: torch.Tensor, *, t0: float = 0.0,
                 t1: float = 1.0, default_steps: int | None = None,
                 missing_fix: str = "pass e.g. steps=50, or an explicit time_grid") -> torch.Tensor:
    """The grid a sampler steps over, validated once and moved to ``like``'s device and dtype.

    Args:
        steps: number of uniform steps from ``t0`` to ``t1``, or ``None``.
        time_grid: an explicit, strictly monotone 1-D grid (at least 2 times), or ``None``.
        like: the start state; the grid takes its device and floating dtype.
        t0, t1: ends of the uniform grid.
        default_steps: the number of uniform steps when neither ``steps`` nor ``time_grid`` is given;
            ``None`` makes one of them required.
        missing_fix: the fix the error names when both are missing and there is no default.

    Raises:
        ConfigError: both or neither of ``steps`` / ``time_grid``, bad ``steps``, a non-monotone grid.
        ShapeError, NonFiniteError: a grid that is not 1-D with two times or more, NaN / Inf in it.
    """
    if steps is not None and time_grid is not None:
        raise ConfigError(expected("either steps or time_grid", "both",
                                   "pass steps (with t0, t1) for a uniform grid, or an explicit time_grid"))
    if time_grid is None:
        if steps is None:
            if default_steps is None:
                raise ConfigError(expected("steps or time_grid", "neither", missing_fix))
            steps = default_steps
        return uniform_grid(steps, t0, t1, dtype=like.dtype, device=like.device)
    grid = torch.as_tensor(time_grid)
    if not grid.is_floating_point() and not grid.is_complex() and grid.dtype != torch.bool:
        grid = grid.to(like.dtype)  # an integer grid such as [1, 0] is a fine grid
    if grid.dim() != 1 or grid.shape[0] < 2:
        raise ShapeError(expected("time_grid as a 1-D tensor with at least 2 times", f"shape {tuple(grid.shape)}",
                                  "pass e.g. uniform_grid(50)"))
    check_tensor(grid, "time_grid")
    grid = grid.to(device=like.device, dtype=like.dtype)
    diffs = grid[1:] - grid[:-1]
    if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
        raise ConfigError(expected("a strictly monotone time_grid (increasing: source→data, decreasing: "
                                   "data→source)", grid.tolist()[:8], "sort the grid and remove repeated times"))
    return grid
