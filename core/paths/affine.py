r"""Probability paths: where a training sample sits at time t, and how fast it moves.

Time runs from 0 (source: noise or prior, ``x0``) to 1 (data, ``x1``). An affine path is

.. math::  x_t = \alpha(t)\,x_0 + \beta(t)\,x_1, \qquad \dot x_t = \dot\alpha(t)\,x_0 + \dot\beta(t)\,x_1,

so ``alpha`` multiplies the source and ``beta`` the data (Lipman et al., "Flow Matching for Generative
Modeling", arXiv 2210.02747; Lipman et al., "Flow Matching Guide and Code", arXiv 2412.06264, the
section on affine conditional flows). A stochastic interpolant adds a latent Gaussian term,
:math:`x_t = \alpha x_0 + \beta x_1 + \gamma(t) z` (Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797, §2).

Schedulers return their derivatives in closed form (no autograd), so a path costs two multiply-adds.
They live in :mod:`flowzoo.core.paths.schedulers`; stochastic interpolants in
:mod:`flowzoo.core.paths.interpolants`.

Example:
    >>> import torch
    >>> path = CondOTPath()
    >>> x0, x1 = torch.zeros(2, 3), torch.ones(2, 3)
    >>> s = path.sample(x0, x1, torch.tensor([0.25, 1.0]))
    >>> s.x_t[:, 0].tolist(), s.dx_t[0, 0].item()
    ([0.25, 1.0], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.paths.schedulers import LinearScheduler, Scheduler, SigmaMinScheduler
from flowzoo.core.validation import broadcast_time, check_pair, check_unit_time

__all__ = ["PathSample", "AffinePath", "CondOTPath", "SigmaMinOTPath"]

Tensor = torch.Tensor


@dataclass
class PathSample:
    """A point on a path: the pair, the time (shape (B,)), ``x_t`` and its time derivative ``dx_t``.

    ``z`` is the latent noise of a stochastic interpolant (None for an affine path).
    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    x_t: Tensor
    dx_t: Tensor
    z: Tensor | None = None


class AffinePath:
    r"""The affine probability path :math:`x_t = \alpha(t) x_0 + \beta(t) x_1` of a scheduler.

    Besides sampling, it converts between the four equivalent model outputs. Solving the 2x2 system
    :math:`x_t = \alpha x_0 + \beta x_1`, :math:`v = \dot\alpha x_0 + \dot\beta x_1` with
    :math:`D = \alpha\dot\beta - \beta\dot\alpha` gives (cf. the velocity parameterisations of arXiv 2412.06264)

    .. math::  x_1 = (\alpha v - \dot\alpha x_t)/D, \qquad x_0 = (\dot\beta x_t - \beta v)/D .

    With a standard Gaussian source, :math:`x_t | x_1 \sim N(\beta x_1, \alpha^2 I)`, so the marginal score
    is :math:`\nabla \log p_t(x_t) = -E[x_0 | x_t]/\alpha` (Tweedie), i.e. ``x0`` prediction is noise
    prediction. The conversions are singular where their denominator vanishes: ``velocity_to_score``
    and ``x1_to_velocity`` at α = 0 (t = 1), ``x0_to_velocity`` and ``score_to_velocity`` at β = 0 (t = 0).

    Args:
        scheduler: any callable ``(t) -> SchedulerOutput``.

    Example:
        >>> from flowzoo.core.paths.schedulers import CosineScheduler
        >>> path = AffinePath(CosineScheduler())
        >>> x0, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
        >>> s = path.sample(x0, x1, t)
        >>> torch.allclose(path.velocity_to_x1(s.dx_t, s.x_t, t), x1, atol=1e-5)
        True
    """

    def __init__(self, scheduler: Scheduler):
        if not callable(scheduler):
            raise ConfigError(expected("a scheduler: a callable (t) -> SchedulerOutput", type(scheduler).__name__,
                                       "pass e.g. LinearScheduler()"))
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scheduler!r})"

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha, beta, d_alpha, d_beta) at t, reshaped to broadcast against ``like`` (no validation)."""
        out = self.scheduler(t)
        return tuple(broadcast_time(c, like) for c in (out.alpha, out.beta, out.d_alpha, out.d_beta))

    def sample(self, x0: Tensor, x1: Tensor, t: float | Tensor) -> PathSample:
        """Return ``x_t`` and ``dx_t`` for source ``x0``, data ``x1`` (same shape (B, ...)) and t of shape (B,)."""
        x0, x1 = check_pair(x0, x1, ("x0", "x1"))
        return self.sample_unchecked(x0, x1, check_unit_time(t, x1))

    def sample_unchecked(self, x0: Tensor, x1: Tensor, t: Tensor, **_: object) -> PathSample:
        """:meth:`sample` without input validation, for callers (objectives) that validated already."""
        a, b, da, db = self.coefficients(t, x1)
        return PathSample(x0=x0, x1=x1, t=t, x_t=a * x0 + b * x1, dx_t=da * x0 + db * x1)

    def _convert_inputs(self, pred: Tensor, x_t: Tensor, t: float | Tensor, name: str):
        pred, x_t = check_pair(pred, x_t, (name, "x_t"))
        return pred, x_t, self.coefficients(check_unit_time(t, x_t), x_t)

    def velocity_to_x1(self, v: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Data prediction E[x1 | x_t] from a velocity: (α v − α̇ x_t) / D."""
        v, x_t, (a, b, da, db) = self._convert_inputs(v, x_t, t, "v")
        return (a * v - da * x_t) / (a * db - b * da)

    def velocity_to_x0(self, v: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Source (noise) prediction E[x0 | x_t] from a velocity: (β̇ x_t − β v) / D."""
        v, x_t, (a, b, da, db) = self._convert_inputs(v, x_t, t, "v")
        return (db * x_t - b * v) / (a * db - b * da)

    def x1_to_velocity(self, x1_hat: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Velocity from a data prediction: (α̇ x_t + D x̂1) / α (singular at t = 1)."""
        x1_hat, x_t, (a, b, da, db) = self._convert_inputs(x1_hat, x_t, t, "x1_hat")
        return (da * x_t + (a * db - b * da) * x1_hat) / a

    def x0_to_velocity(self, x0_hat: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Velocity from a source (noise) prediction: (β̇ x_t − D x̂0) / β (singular at t = 0)."""
        x0_hat, x_t, (a, b, da, db) = self._convert_inputs(x0_hat, x_t, t, "x0_hat")
        return (db * x_t - (a * db - b * da) * x0_hat) / b

    def x0_to_x1(self, x0_hat: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Data prediction from a source (noise) prediction: (x_t − α x̂0) / β (singular at t = 0)."""
        x0_hat, x_t, (a, b, _, _) = self._convert_inputs(x0_hat, x_t, t, "x0_hat")
        return (x_t - a * x0_hat) / b

    def x1_to_x0(self, x1_hat: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Source (noise) prediction from a data prediction: (x_t − β x̂1) / α (singular at t = 1)."""
        x1_hat, x_t, (a, b, _, _) = self._convert_inputs(x1_hat, x_t, t, "x1_hat")
        return (x_t - b * x1_hat) / a

    def velocity_to_score(self, v: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Score ∇log p_t(x_t) = −E[x0 | x_t]/α for an N(0, I) source (singular at t = 1)."""
        v, x_t, (a, b, da, db) = self._convert_inputs(v, x_t, t, "v")
        return -(db * x_t - b * v) / ((a * db - b * da) * a)

    def score_to_velocity(self, score: Tensor, x_t: Tensor, t: float | Tensor) -> Tensor:
        """Velocity from the score of an N(0, I)-source path: (β̇ x_t + D α s) / β (singular at t = 0)."""
        score, x_t, (a, b, da, db) = self._convert_inputs(score, x_t, t, "score")
        return (db * x_t + (a * db - b * da) * a * score) / b


class CondOTPath(AffinePath):
    """The conditional optimal-transport path x_t = (1 − t) x0 + t x1 with target x1 − x0 (Lipman et al. 2022).

    Example:
        >>> CondOTPath()
        CondOTPath(LinearScheduler())
    """

    def __init__(self) -> None:
        super().__init__(LinearScheduler())

    def sample_unchecked(self, x0: Tensor, x1: Tensor, t: Tensor, **_: object) -> PathSample:
        # The same values as the generic affine formula with one subtraction fewer, and x0 + t dx_t as one
        # fused addcmul: this is the hot path of every CFM training step.
        dx_t = x1 - x0
        return PathSample(x0=x0, x1=x1, t=t, x_t=torch.addcmul(x0, broadcast_time(t, x1), dx_t), dx_t=dx_t)


class SigmaMinOTPath(AffinePath):
    r"""Lipman et al.'s OT path with minimum width σ_min: :math:`x_t = (1 - (1 - \sigma_{min}) t)\,x_0 + t\,x_1`.

    The conditional OT path of "Flow Matching for Generative Modeling" (arXiv 2210.02747, Eq. 20-23) with
    target :math:`x_1 - (1 - \sigma_{min}) x_0`; the scheduler is
    :class:`~flowzoo.core.paths.schedulers.SigmaMinScheduler`. The paper's path needs :math:`x_0 \sim N(0, I)`:
    pass a standard-normal source (the objectives' default when the batch has no ``x0``). Any other source
    gives a different but still valid path, since x0 is always the sample actually drawn.

    Args:
        sigma_min: the width σ_min in [0, 1) of the path at the data end (0 is :class:`CondOTPath`).

    Example:
        >>> s = SigmaMinOTPath(0.1).sample(torch.ones(1, 2), torch.zeros(1, 2), torch.tensor([1.0]))
        >>> [round(v, 6) for v in s.x_t[0].tolist()], [round(v, 6) for v in s.dx_t[0].tolist()]
        ([0.1, 0.1], [-0.9, -0.9])
    """

    def __init__(self, sigma_min: float = 1e-4) -> None:
        super().__init__(SigmaMinScheduler(sigma_min))
