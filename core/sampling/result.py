"""What every flowzoo sampler returns (:class:`SampleResult`), and the boundary checks and per-step
bookkeeping that the samplers share.

Every sampler (ODE and SDE solvers, flow-map jumps, PFGM++, DTM, DDIM, FlowTurbo, one-step students) takes
``(model, x, *, steps or time_grid, cond..., generator=None, callback=None)`` and returns a
:class:`SampleResult`, so that code which consumes samples never depends on the method that made them. What
only one method produces (PFGM++'s noise levels, DTM's head evaluations, FlowTurbo's per-stage counts, ...)
goes in ``extras``. A ``callback`` is called once per step with ``{"i", "t", "t_next", "x"}`` (``x`` at
``t_next``), in flowzoo time; a ``generator`` drives every random draw of a stochastic sampler and is
accepted, unused, by the deterministic ones so that all share one call shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected

__all__ = ["SampleResult", "Callback", "StepRecorder", "check_cond", "check_callback", "check_output",
           "check_end_state", "progress_bar"]

Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SampleResult:
    """The output of a sampler.

    Attributes:
        x: the final state (the samples), shaped like the start state.
        nfe: number of evaluations of the sampler's model, each batched call counted once (for the SDE, drift
            and score calls together). Calls of a cheaper auxiliary network (a DTM flow head, a FlowTurbo
            refiner) are counted in ``extras``, as each sampler's docstring says.
        trajectory: ``(len(times), B, ...)``, the state at every time of the grid, the start included, when
            the sampler was called with ``return_trajectory=True``; otherwise ``None``.
        times: the grid the sampler stepped over, in flowzoo time (0 = source, 1 = data).
        extras: method-specific outputs, documented by each sampler (empty when there are none).

    Example:
        >>> import torch
        >>> out = SampleResult(x=torch.zeros(2, 3), nfe=4)
        >>> out.nfe, out.trajectory is None, out.extras
        (4, True, {})
    """

    x: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def check_cond(cond: Mapping[str, Any] | None) -> dict[str, Any]:
    """Conditioning keyword arguments as a fresh dict (``{}`` for ``None``), or ConfigError."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping) or not all(isinstance(k, str) for k in cond):
        raise ConfigError(expected("cond as a mapping from keyword names to values", type(cond).__name__,
                                   "pass e.g. cond={'y': labels}"))
    return dict(cond)


def check_callback(callback: object) -> Callback | None:
    """``None`` or a callable taking the per-step dict, or ConfigError."""
    if callback is not None and not callable(callback):
        raise ConfigError(expected("callback as None or a function of one dict {i, t, t_next, x}",
                                   type(callback).__name__, "pass e.g. callback=lambda step: print(step['i'])"))
    return callback


def check_output(out: object, x: torch.Tensor, call: str) -> torch.Tensor:
    """Raise ShapeError unless a model output ``out`` is a tensor shaped like ``x`` (``call`` names the call)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(expected(f"{call} to return a tensor shaped like x {tuple(x.shape)}", got,
                                  f"make {call} return one value per entry of x"))
    return out


def check_end_state(x: torch.Tensor, fix: str) -> torch.Tensor:
    """Raise NonFiniteError if the final state holds NaN / Inf (one reduction, once per sampler call)."""
    # A sum is finite iff every entry is, barring overflow, which the exact elementwise test below settles.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise NonFiniteError(expected("a finite end state", "NaN/Inf after sampling", fix))
    return x


def progress_bar(total: int | None, enabled: bool, desc: str):
    """A tqdm bar, or ``None`` when ``enabled`` is false (tqdm is imported only then)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


class StepRecorder:
    """The per-step bookkeeping of a sampler: trajectory, callback and progress bar.

    Call :meth:`record` after step ``i`` with the new state (at ``times[i + 1]``) and :meth:`trajectory` at the
    end. :attr:`active` is false when there is nothing to record, so a hot loop can skip the call entirely.

    Example:
        >>> import torch
        >>> rec = StepRecorder(torch.zeros(1), torch.tensor([0.0, 1.0]), return_trajectory=True)
        >>> rec.record(0, torch.ones(1))
        >>> rec.trajectory().flatten().tolist()
        [0.0, 1.0]
    """

    def __init__(self, x: torch.Tensor, times: torch.Tensor, *, callback: Callback | None = None,
                 return_trajectory: bool = False, progress: bool = False, desc: str = "sample"):
        self.times, self.callback = times, check_callback(callback)
        self.states = [x] if return_trajectory else None
        self.bar = progress_bar(len(times) - 1, progress, desc)
        self.active = self.states is not None or self.callback is not None or self.bar is not None

    def record(self, i: int, x: torch.Tensor, **extra: Any) -> None:
        """Step ``i`` is done and ``x`` is the state at ``times[i + 1]``; ``extra`` keys go to the callback."""
        if self.states is not None:
            self.states.append(x)
        if self.callback is not None:
            self.callback({"i": i, "t": self.times[i], "t_next": self.times[i + 1], "x": x, **extra})
        if self.bar is not None:
            self.bar.update(1)

    def trajectory(self) -> torch.Tensor | None:
        """The stacked states (or ``None`` when not asked for); closes the progress bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return torch.stack(self.states) if self.states is not None else None
