r"""Probability paths: where a training sample sits at time t, and how fast it moves.

Time runs from 0 (source: noise or prior, ``x0``) to 1 (data, ``x1``). An affine path is

.. math::  x_t = \alpha(t)\,x_0 + \beta(t)\,x_1, \qquad \dot x_t = \dot\alpha(t)\,x_0 + \dot\beta(t)\,x_1,

so ``alpha`` multiplies the source and ``beta`` the data (Lipman et al., "Flow Matching for Generative
Modeling", arXiv 2210.02747; Lipman et al., "Flow Matching Guide and Code", arXiv 2412.06264, the
section on affine conditional flows). A stochastic interpolant adds a latent Gaussian term,
:math:`x_t = \alpha x_0 + \beta x_1 + \gamma(t) z` (Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797, §2).

Schedulers return their derivatives in closed form (no autograd), so a path costs two multiply-adds.
They live in :mod:`flowzoo.core.schedulers` and are re-exported here.

Example:
    >>> import torch
    >>> path = CondOTPath()
    >>> x0, x1 = torch.zeros(2, 3), torch.ones(2, 3)
    >>> s = path.sample(x0, x1, torch.tensor([0.25, 1.0]))
    >>> s.x_t[:, 0].tolist(), s.dx_t[0, 0].item()
    ([0.25, 1.0], 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from flowzoo.core._validation import as_time, broadcast_time, check_same_shape, check_tensor, check_time
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.schedulers import (
    CosineScheduler,
    LinearScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    VPScheduler,
    _FieldsRepr,
)

__all__ = [
    "PathSample", "SchedulerOutput", "Scheduler", "LinearScheduler", "CosineScheduler", "VPScheduler",
    "PolynomialScheduler", "AffinePath", "CondOTPath", "GammaOutput", "Gamma", "BrownianGamma",
    "BSquaredGamma", "SineSquaredGamma", "ConstantGamma", "StochasticInterpolant",
]

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


def _time(t: float | Tensor, like: Tensor, name: str = "t") -> Tensor:
    """Validate t (a number, a 0-d tensor or a (B,) tensor in [0, 1]) and return it as (B,) in like's dtype."""
    batch = like.shape[0]
    if not isinstance(t, Tensor) or t.dim() == 0:
        if isinstance(t, Tensor):
            check_tensor(t, name, min_dim=0)
        t = as_time(t, batch, like)
    t = check_time(t, batch, name).to(like.dtype)
    if not bool(((t >= 0) & (t <= 1)).all()):
        raise ConfigError(expected(f"{name} in [0, 1] (0 = source, 1 = data)",
                                   f"values in [{t.min().item():.4g}, {t.max().item():.4g}]",
                                   "rescale the time; flowzoo's time is not 0..999 or 0..1000"))
    return t


def _pair(a: object, b: object, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    a = check_tensor(a, names[0])
    b = check_tensor(b, names[1])
    check_same_shape(a, b, names)
    return a, b


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
        x0, x1 = _pair(x0, x1, ("x0", "x1"))
        return self.sample_unchecked(x0, x1, _time(t, x1))

    def sample_unchecked(self, x0: Tensor, x1: Tensor, t: Tensor, **_: object) -> PathSample:
        """:meth:`sample` without input validation, for callers (objectives) that validated already."""
        a, b, da, db = self.coefficients(t, x1)
        return PathSample(x0=x0, x1=x1, t=t, x_t=a * x0 + b * x1, dx_t=da * x0 + db * x1)

    def _convert_inputs(self, pred: Tensor, x_t: Tensor, t: float | Tensor, name: str):
        pred, x_t = _pair(pred, x_t, (name, "x_t"))
        return pred, x_t, self.coefficients(_time(t, x_t), x_t)

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
        # The same values as the generic affine formula with one subtraction fewer: this is the
        # hot path of every CFM training step.
        dx_t = x1 - x0
        return PathSample(x0=x0, x1=x1, t=t, x_t=x0 + broadcast_time(t, x1) * dx_t, dx_t=dx_t)


class GammaOutput(NamedTuple):
    """γ(t), γ̇(t) and the product γγ̇ (finite even where γ̇ is not), each of shape (B,)."""

    gamma: Tensor
    d_gamma: Tensor
    gamma_d_gamma: Tensor


class Gamma(_FieldsRepr):
    """Base class of the latent-noise scale γ(t) of a stochastic interpolant.

    Attributes:
        vanishes_at_ends: γ(0) = γ(1) = 0, so 1/γ (the score from a denoiser) blows up there.
        singular_derivative: γ̇ is infinite at t ∈ {0, 1}; losses that use γ̇ clip t away from the ends.
    """

    vanishes_at_ends = True
    singular_derivative = False

    def __call__(self, t: Tensor) -> GammaOutput:
        raise NotImplementedError


class BrownianGamma(Gamma):
    r"""Brownian-bridge noise :math:`\gamma = \sqrt{c\,t(1-t)}`, :math:`\gamma\dot\gamma = c(1-2t)/2`.

    :math:`\dot\gamma = c(1-2t)/(2\gamma)` is infinite at t ∈ {0, 1}; it is evaluated at t clipped to
    [1e-6, 1 − 1e-6] (so it is finite but large there), while γ and γγ̇ are exact everywhere.

    Example:
        >>> g = BrownianGamma()(torch.tensor([0.0, 0.5]))
        >>> g.gamma.tolist(), g.gamma_d_gamma.tolist()
        ([0.0, 0.5], [0.5, 0.0])
    """

    singular_derivative = True
    endpoint_clip = 1e-6

    def __init__(self, scale: float = 1.0):
        if not (scale > 0 and math.isfinite(scale)):
            raise ConfigError(expected("a finite scale > 0", repr(scale), "use e.g. BrownianGamma(1.0)"))
        self.scale = float(scale)

    def __call__(self, t: Tensor) -> GammaOutput:
        gamma = torch.sqrt(self.scale * t * (1 - t))
        t_c = t.clamp(self.endpoint_clip, 1 - self.endpoint_clip)
        d_gamma = self.scale * (1 - 2 * t_c) / (2 * torch.sqrt(self.scale * t_c * (1 - t_c)))
        return GammaOutput(gamma, d_gamma, self.scale * (1 - 2 * t) / 2)


class BSquaredGamma(Gamma):
    """γ = t(1 − t), γ̇ = 1 − 2t.

    Example:
        >>> BSquaredGamma()(torch.tensor([0.5])).gamma.item()
        0.25
    """

    def __call__(self, t: Tensor) -> GammaOutput:
        gamma, d_gamma = t * (1 - t), 1 - 2 * t
        return GammaOutput(gamma, d_gamma, gamma * d_gamma)


class SineSquaredGamma(Gamma):
    """γ = sin²(πt), γ̇ = π sin(2πt).

    Example:
        >>> SineSquaredGamma()(torch.tensor([0.5])).gamma.item()
        1.0
    """

    def __call__(self, t: Tensor) -> GammaOutput:
        gamma = torch.sin(math.pi * t) ** 2
        d_gamma = math.pi * torch.sin(2 * math.pi * t)
        return GammaOutput(gamma, d_gamma, gamma * d_gamma)


class ConstantGamma(Gamma):
    """γ = σ > 0 at every t (the σ of torchcfm's I-CFM: x_t = t x1 + (1 − t) x0 + σ z, target x1 − x0).

    Example:
        >>> round(ConstantGamma(0.1)(torch.tensor([0.0])).gamma.item(), 6)
        0.1
    """

    vanishes_at_ends = False

    def __init__(self, sigma: float):
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(expected("a finite sigma > 0", repr(sigma), "for sigma = 0 use an AffinePath"))
        self.sigma = float(sigma)

    def __call__(self, t: Tensor) -> GammaOutput:
        gamma = torch.full_like(t, self.sigma)
        zero = torch.zeros_like(t)
        return GammaOutput(gamma, zero, zero)


class StochasticInterpolant:
    r"""The stochastic interpolant :math:`x_t = \alpha x_0 + \beta x_1 + \gamma z`, :math:`z \sim N(0, I)`.

    Its velocity :math:`\dot x_t = \dot\alpha x_0 + \dot\beta x_1 + \dot\gamma z`; the drift of the
    probability-flow ODE is :math:`b(t, x) = E[\dot x_t | x_t = x]` and the denoiser is
    :math:`\eta(t, x) = E[z | x_t = x] = -\gamma\,\nabla\log\rho_t(x)` (Albergo, Boffi, Vanden-Eijnden,
    arXiv 2303.08797, §2).

    Args:
        scheduler: the deterministic part I_t = α x0 + β x1.
        gamma: the latent noise scale, e.g. :class:`BrownianGamma`.

    Example:
        >>> si = StochasticInterpolant(LinearScheduler(), BrownianGamma())
        >>> x0, x1, z = torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2)
        >>> s = si.sample(x0, x1, torch.tensor([0.5]), z=z)
        >>> s.x_t.tolist(), si.antithetic(s).x_t.tolist()
        ([[1.0, 1.0]], [[0.0, 0.0]])
    """

    def __init__(self, scheduler: Scheduler, gamma: Gamma):
        if not callable(scheduler) or not callable(gamma):
            raise ConfigError(expected("a scheduler and a gamma (callables of t)",
                                       f"{type(scheduler).__name__} and {type(gamma).__name__}",
                                       "pass e.g. StochasticInterpolant(LinearScheduler(), BrownianGamma())"))
        self.scheduler, self.gamma = scheduler, gamma

    def __repr__(self) -> str:
        return f"StochasticInterpolant({self.scheduler!r}, {self.gamma!r})"

    def sample(self, x0: Tensor, x1: Tensor, t: float | Tensor, z: Tensor | None = None, *,
               generator: torch.Generator | None = None) -> PathSample:
        """Return x_t and dx_t; ``z`` (drawn N(0, I) with ``generator`` when None) is kept in the sample."""
        x0, x1 = _pair(x0, x1, ("x0", "x1"))
        t = _time(t, x1)
        if z is None:
            z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        else:
            _pair(z, x1, ("z", "x1"))
        return self.sample_unchecked(x0, x1, t, z)

    def sample_unchecked(self, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor | None = None, *,
                         generator: torch.Generator | None = None) -> PathSample:
        """:meth:`sample` without input validation, for callers (objectives) that validated already."""
        if z is None:
            z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        out = self.scheduler(t)
        g = self.gamma(t)
        a, b, da, db, gam, dgam = (broadcast_time(c, x1) for c in
                                   (out.alpha, out.beta, out.d_alpha, out.d_beta, g.gamma, g.d_gamma))
        return PathSample(x0=x0, x1=x1, t=t, x_t=a * x0 + b * x1 + gam * z, dx_t=da * x0 + db * x1 + dgam * z, z=z)

    def antithetic(self, sample: PathSample) -> PathSample:
        """The same (x0, x1, t) with −z: x_t = I_t − γz, dx_t = İ_t − γ̇z (antithetic variance reduction)."""
        if not isinstance(sample, PathSample) or sample.z is None:
            got = "a sample without z" if isinstance(sample, PathSample) else type(sample).__name__
            raise ConfigError(expected("a PathSample with z, from StochasticInterpolant.sample", got,
                                       "draw the sample with this interpolant's sample()"))
        return self.sample_unchecked(sample.x0, sample.x1, sample.t, -sample.z)

    def denoiser_to_score(self, eta: Tensor, t: float | Tensor) -> Tensor:
        """Score s = −η/γ from a denoiser η = E[z | x_t] (singular where γ = 0: keep t inside (0, 1))."""
        eta = check_tensor(eta, "eta")
        t = _time(t, eta)
        return -eta / broadcast_time(self.gamma(t).gamma, eta)
