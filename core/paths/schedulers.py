r"""Noise schedulers: the coefficients alpha(t), beta(t) of an affine path and their time derivatives.

A scheduler maps a (B,) time tensor to a :class:`SchedulerOutput` holding, for the affine path
:math:`x_t = \alpha(t)\,x_0 + \beta(t)\,x_1` of :mod:`flowzoo.core.paths.affine`, ``alpha`` (multiplying the
source, t = 0) and ``beta`` (multiplying the data, t = 1) with their derivatives. Schedulers return their
derivatives in closed form (no autograd), so a path costs two multiply-adds. Everything here is also
importable from :mod:`flowzoo.core.paths.affine`.

Example:
    >>> out = LinearScheduler()(torch.tensor([0.25]))
    >>> out.alpha.item(), out.beta.item(), out.d_alpha.item(), out.d_beta.item()
    (0.75, 0.25, -1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_number, check_positive

__all__ = ["SchedulerOutput", "Scheduler", "LinearScheduler", "CosineScheduler", "VPScheduler", "PolynomialScheduler",
           "LinearVPScheduler", "SigmaMinScheduler"]

Tensor = torch.Tensor


@dataclass
class SchedulerOutput:
    """Coefficients of an affine path at times t, each of shape (B,): ``alpha`` (source), ``beta`` (data)."""

    alpha: Tensor
    beta: Tensor
    d_alpha: Tensor
    d_beta: Tensor


class FieldsRepr:
    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Scheduler(FieldsRepr):
    r"""Base class of schedulers: ``scheduler(t)`` maps a (B,) time tensor to a :class:`SchedulerOutput`.

    A scheduler whose signal-to-noise ratio :math:`\rho(t) = \beta(t)/\alpha(t)` (data over source) increases
    strictly also inverts it with :meth:`snr_inverse`, which
    :class:`~flowzoo.core.paths.schedule_transform.ScheduleTransformedModel` needs to change schedulers after
    training.
    """

    def __call__(self, t: Tensor) -> SchedulerOutput:
        raise NotImplementedError

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """The time t with β(t)/α(t) = ``snr`` (snr >= 0; +inf maps to t = 1)."""
        raise NotImplementedError(f"{type(self).__name__} does not invert its signal-to-noise ratio")


class LinearScheduler(Scheduler):
    r"""The conditional-OT / rectified-flow line: :math:`\alpha = 1 - t`, :math:`\beta = t`.

    Example:
        >>> out = LinearScheduler()(torch.tensor([0.2]))
        >>> round(out.alpha.item(), 6), out.d_alpha.item(), out.d_beta.item()
        (0.8, -1.0, 1.0)
    """

    def __call__(self, t: Tensor) -> SchedulerOutput:
        one = torch.ones_like(t)
        return SchedulerOutput(1 - t, t, -one, one)

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """ρ = t/(1 − t), so t = ρ/(1 + ρ)."""
        return _convex_snr_inverse(snr)


class CosineScheduler(Scheduler):
    r"""Variance-preserving trigonometric path: :math:`\alpha = \cos(\pi t/2)`, :math:`\beta = \sin(\pi t/2)`.

    Example:
        >>> out = CosineScheduler()(torch.tensor([1.0]))
        >>> abs(out.alpha.item()) < 1e-6, out.beta.item()
        (True, 1.0)
    """

    def __call__(self, t: Tensor) -> SchedulerOutput:
        half_pi = math.pi / 2
        cos, sin = torch.cos(half_pi * t), torch.sin(half_pi * t)
        return SchedulerOutput(cos, sin, -half_pi * sin, half_pi * cos)

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """ρ = tan(πt/2), so t = 2 atan(ρ)/π."""
        return torch.atan(snr) / (math.pi / 2)


class VPScheduler(Scheduler):
    r"""The variance-preserving SDE of Song et al. (arXiv 2011.13456; VP SDE and its kernel) in flowzoo time.

    The VP-SDE runs in diffusion time :math:`s = 1 - t` with the linear rate
    :math:`b(s) = b_{min} + s (b_{max} - b_{min})` and :math:`B(s) = \int_0^s b(u)\,du`. Its kernel keeps
    :math:`\bar a(s) = e^{-B(s)/2}` of the data, so here

    .. math::  \beta(t) = e^{-B(1-t)/2}, \qquad \alpha(t) = \sqrt{1 - \beta(t)^2},
               \qquad \dot\beta = \tfrac12 b(1-t)\,\beta, \qquad \dot\alpha = -\tfrac12 b(1-t)\,\beta^2/\alpha .

    At t = 0, :math:`\beta = e^{-(b_{min}+b_{max})/4}` (≈ 0.0066 for the defaults), so the source end is
    only approximately pure noise. :math:`\dot\alpha` is infinite at t = 1 (α ∝ sqrt(1 - t)); it is
    evaluated with :math:`s` clamped to at least ``min_diffusion_time`` (1e-5), so it stays finite there.
    α and β themselves are exact.

    Example:
        >>> out = VPScheduler()(torch.tensor([0.0, 1.0]))
        >>> [round(v, 4) for v in out.beta.tolist()], [round(v, 4) for v in out.alpha.tolist()]
        ([0.0066, 1.0], [1.0, 0.0])
    """

    min_diffusion_time = 1e-5

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        numbers = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (beta_min, beta_max))
        if not numbers or not (0 <= beta_min <= beta_max) or beta_max <= 0:
            raise ConfigError(expected("0 <= beta_min <= beta_max with beta_max > 0",
                                       f"beta_min={beta_min}, beta_max={beta_max}", "use e.g. (0.1, 20.0)"))
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _integral(self, s: Tensor) -> Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def __call__(self, t: Tensor) -> SchedulerOutput:
        s = 1 - t
        rate = self.beta_min + s * (self.beta_max - self.beta_min)
        integral = self._integral(s)
        data_coef = torch.exp(-0.5 * integral)
        # -expm1 keeps 1 - exp(-B) accurate when B is tiny (t close to 1).
        noise_coef = torch.sqrt(-torch.expm1(-integral))
        s_c = s.clamp_min(self.min_diffusion_time)
        integral_c = self._integral(s_c)
        rate_c = self.beta_min + s_c * (self.beta_max - self.beta_min)
        d_noise = -0.5 * rate_c * torch.exp(-integral_c) / torch.sqrt(-torch.expm1(-integral_c))
        return SchedulerOutput(noise_coef, data_coef, d_noise, 0.5 * rate * data_coef)

    def snr_inverse(self, snr: Tensor) -> Tensor:
        r"""ρ² = e^{-B}/(1 − e^{-B}) gives :math:`B(s) = \log(1 + ρ^{-2})`; solve the quadratic B(s) for
        s = 1 − t.

        Below the SNR at t = 0 (:math:`\beta(0) > 0`) no time matches; those ratios map to t = 0.
        """
        integral = torch.log1p(snr.pow(-2))
        span = self.beta_max - self.beta_min
        if span == 0:
            s = integral / self.beta_min
        else:
            s = (torch.sqrt(self.beta_min**2 + 2 * span * integral) - self.beta_min) / span
        return (1 - s).clamp_min(0.0)


class PolynomialScheduler(Scheduler):
    r"""Polynomial convex path: :math:`\beta = t^n`, :math:`\alpha = 1 - t^n` (n > 0; n = 1 is linear).

    For n < 1 the derivative :math:`n t^{n-1}` is infinite at t = 0; it is evaluated at t >= 1e-6 there.

    Example:
        >>> out = PolynomialScheduler(2)(torch.tensor([0.5]))
        >>> out.beta.item(), out.d_beta.item(), out.d_alpha.item()
        (0.25, 1.0, -1.0)
    """

    def __init__(self, n: float = 2.0):
        check_positive(n, "the exponent n", fix="use e.g. PolynomialScheduler(2)")
        self.n = n

    def __call__(self, t: Tensor) -> SchedulerOutput:
        power = t.pow(self.n)
        t_d = t.clamp_min(1e-6) if self.n < 1 else t
        d_power = self.n * t_d.pow(self.n - 1)
        return SchedulerOutput(1 - power, power, -d_power, d_power)

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """ρ = tⁿ/(1 − tⁿ), so t = (ρ/(1 + ρ))^{1/n}."""
        return _convex_snr_inverse(snr).pow(1.0 / self.n)


class LinearVPScheduler(Scheduler):
    r"""Variance-preserving path with a linear data coefficient: :math:`\beta = t`, :math:`\alpha = \sqrt{1 - t^2}`.

    Listed among the affine schedulers of Lipman et al., "Flow Matching Guide and Code" (arXiv 2412.06264, the
    section on affine conditional flows); :math:`\alpha^2 + \beta^2 = 1`, so an N(0, I) source and unit-variance
    data keep unit variance along the path. :math:`\dot\alpha = -t/\alpha` is infinite at t = 1; it is
    evaluated at t <= 1 − 1e-6 there (α itself is exact).

    Example:
        >>> out = LinearVPScheduler()(torch.tensor([0.6]))
        >>> round(out.alpha.item(), 6), round(out.d_alpha.item(), 6), out.d_beta.item()
        (0.8, -0.75, 1.0)
    """

    endpoint_clip = 1e-6

    def __call__(self, t: Tensor) -> SchedulerOutput:
        alpha = torch.sqrt((1 - t) * (1 + t))
        t_c = t.clamp_max(1 - self.endpoint_clip)
        return SchedulerOutput(alpha, t, -t_c / torch.sqrt((1 - t_c) * (1 + t_c)), torch.ones_like(t))

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """ρ = t/√(1 − t²), so t = ρ/√(1 + ρ²)."""
        return torch.where(torch.isinf(snr), torch.ones_like(snr), snr / torch.sqrt(1 + snr * snr))


class SigmaMinScheduler(Scheduler):
    r"""Lipman et al.'s OT path with minimum width: :math:`\alpha = 1 - (1 - \sigma_{min})\,t`, :math:`\beta = t`.

    Lipman et al., "Flow Matching for Generative Modeling" (arXiv 2210.02747, Eq. 20-23): the conditional path
    :math:`N(t x_1, (1 - (1 - \sigma_{min}) t)^2 I)` written as :math:`x_t = \alpha x_0 + \beta x_1` with
    :math:`x_0 \sim N(0, I)`; its target :math:`\dot x_t = x_1 - (1 - \sigma_{min}) x_0` equals the paper's
    :math:`(x_1 - (1 - \sigma_{min}) x_t)/(1 - (1 - \sigma_{min}) t)` (their Eq. 21). Same time direction as
    flowzoo (t = 1 is data). At t = 1 the path keeps a Gaussian of width σ_min around the data; σ_min = 0
    is :class:`LinearScheduler`.

    Example:
        >>> out = SigmaMinScheduler(0.1)(torch.tensor([1.0]))
        >>> round(out.alpha.item(), 6), round(out.d_alpha.item(), 6)
        (0.1, -0.9)
    """

    def __init__(self, sigma_min: float = 1e-4):
        self.sigma_min = check_number(sigma_min, "sigma_min", low=0.0, high=1.0, strict_high=True,
                                      fix="use a small width such as 1e-4 (0 is the plain linear path)")

    def __call__(self, t: Tensor) -> SchedulerOutput:
        shrink = 1.0 - self.sigma_min
        return SchedulerOutput(1 - shrink * t, t, torch.full_like(t, -shrink), torch.ones_like(t))

    def snr_inverse(self, snr: Tensor) -> Tensor:
        """ρ = t/(1 − (1 − σ_min) t), so t = ρ/(1 + (1 − σ_min) ρ)."""
        shrink = 1.0 - self.sigma_min
        return torch.where(torch.isinf(snr), torch.ones_like(snr), snr / (1 + shrink * snr))


def _convex_snr_inverse(snr: Tensor) -> Tensor:
    """κ = ρ/(1 + ρ) for a convex path α = 1 − κ, β = κ (exact 1 at ρ = +inf)."""
    return torch.where(torch.isinf(snr), torch.ones_like(snr), snr / (1 + snr))
