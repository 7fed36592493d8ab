r"""Change the scheduler of a trained velocity model: sample a model trained on one affine path with another.

Lipman et al., "Flow Matching Guide and Code" (arXiv 2412.06264, the section on scheduler change) show that two
affine paths :math:`x_t = \alpha_t x_0 + \beta_t x_1` and :math:`\bar x_r = \bar\alpha_r x_0 + \bar\beta_r x_1`
built on the same coupling are related by a scale-time change :math:`\bar x_r = s_r\,x_{t_r}`, where
:math:`t_r` matches the signal-to-noise ratios :math:`\rho = \beta/\alpha` (data over source) and
:math:`s_r = \bar\alpha_r/\alpha_{t_r}`:

.. math::  t_r = \rho^{-1}(\bar\rho(r)), \qquad
           \dot t_r = \frac{\dot{\bar\rho}(r)}{\dot\rho(t_r)}, \qquad
           \dot s_r = \frac{\dot{\bar\alpha}_r\,\alpha_{t_r}
                           - \bar\alpha_r\,\dot\alpha_{t_r}\,\dot t_r}{\alpha_{t_r}^2},

with :math:`\dot\rho = (\dot\beta\alpha - \beta\dot\alpha)/\alpha^2`. Differentiating :math:`\bar x_r` gives the
marginal velocity of the new path from the old one,

.. math::  \bar u_r(x) = \frac{\dot s_r}{s_r}\,x + s_r\,\dot t_r\,u_{t_r}(x / s_r).

So a model trained on the linear path can be sampled along the cosine path (or any other) without retraining.
flowzoo's time convention is the paper's (t = 0 source, t = 1 data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.paths.schedulers import Scheduler
from flowzoo.core.validation import as_time, broadcast_time

__all__ = ["ScheduleTransformedModel"]

Tensor = torch.Tensor


class ScheduleTransformedModel(nn.Module):
    r"""Wrap a velocity model trained on ``original`` so that it is the velocity of the path of ``new``.

    The wrapper is itself a velocity model ``wrapper(x, t, **cond)`` for
    :func:`~flowzoo.core.sampling.ode.integrate`; each call makes one call of the wrapped model at the
    SNR-matched time :math:`t_r` on the rescaled state :math:`x/s_r` (module docstring for the formulas).
    The new scheduler's SNR range must lie inside the original's: at a time r where no original time has the
    same SNR (e.g. r = 0 of the linear path against a :class:`~flowzoo.core.paths.schedulers.VPScheduler`,
    whose β(0) > 0), the matched time is clamped and the transform is no longer exact. The velocity is singular
    where the new source coefficient vanishes (:math:`\bar\alpha_r = 0`, r = 1 for most schedulers): sample with
    a method that does not evaluate the model at t = 1 (``"euler"``, ``"midpoint"``) or end the grid just
    before 1.

    Args:
        model: velocity model ``model(x, t, **cond)`` trained on the path of ``original``.
        original: the scheduler the model was trained with; it must implement ``snr_inverse``.
        new: the scheduler to sample with.

    Example:
        >>> from flowzoo.core.paths.schedulers import CosineScheduler, LinearScheduler
        >>> c = 2.0                                     # data: a point mass at c, source N(0, 1)
        >>> linear_velocity = lambda x, t: (c - x) / (1 - t[:, None])
        >>> cosine = ScheduleTransformedModel(linear_velocity, LinearScheduler(), CosineScheduler())
        >>> x, r = torch.tensor([[0.3], [-1.0]]), torch.tensor([0.2, 0.7])
        >>> out = CosineScheduler()(r)                  # the cosine path's own velocity, by hand
        >>> exact = out.d_alpha[:, None] / out.alpha[:, None] * (x - out.beta[:, None] * c) + out.d_beta[:, None] * c
        >>> torch.allclose(cosine(x, r), exact, atol=1e-5)
        True
    """

    def __init__(self, model: Callable[..., Tensor], original: Scheduler, new: Scheduler):
        super().__init__()
        if not callable(model):
            raise ConfigError(expected("a callable velocity model", type(model).__name__, "pass the network"))
        for scheduler, name in ((original, "original"), (new, "new")):
            if not callable(scheduler):
                raise ConfigError(expected(f"the {name} scheduler as a callable (t) -> SchedulerOutput",
                                           type(scheduler).__name__, "pass e.g. LinearScheduler()"))
        try:
            original.snr_inverse(torch.ones(1))
        except (AttributeError, NotImplementedError):
            raise ConfigError(expected("an original scheduler with snr_inverse(snr) -> t", type(original).__name__,
                                       "use a scheduler of flowzoo.core.paths, or add snr_inverse to yours")) from None
        self.model, self.original, self.new = model, original, new

    def time_and_scale(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(t_r, s_r, dt_r/dr, ds_r/dr)`` at the new path's times ``r`` (each shaped like r)."""
        new = self.new(r)
        t = self.original.snr_inverse(new.beta / new.alpha)
        old = self.original(t)
        d_snr_new = (new.d_beta * new.alpha - new.beta * new.d_alpha) / new.alpha**2
        d_snr_old = (old.d_beta * old.alpha - old.beta * old.d_alpha) / old.alpha**2
        dt = d_snr_new / d_snr_old
        scale = new.alpha / old.alpha
        d_scale = (new.d_alpha * old.alpha - new.alpha * old.d_alpha * dt) / old.alpha**2
        return t, scale, dt, d_scale

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        r = as_time(t, x.shape[0], x)
        t_r, *coefficients = self.time_and_scale(r)
        scale, dt, d_scale = (broadcast_time(c, x) for c in coefficients)
        u = self.model(x / scale, t_r, **cond)
        return d_scale / scale * x + scale * dt * u

    def extra_repr(self) -> str:
        return f"original={self.original!r}, new={self.new!r}"

