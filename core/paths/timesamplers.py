r"""Training-time distributions: where on [0, 1] the loss is evaluated.

A loss owns its time sampler (as in NVlabs/edm, where the loss owns its noise-level distribution). Each
sampler has one call, ``sampler.sample(n, device=None, generator=None) -> Tensor`` of shape (n,), float32,
in [0, 1] (0 = source, 1 = data).

Example:
    >>> import torch
    >>> sampler = get_time_sampler("logit_normal", std=0.5)
    >>> t = sampler.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> t.shape, bool((t > 0).all() and (t < 1).all())
    (torch.Size([1000]), True)
"""

from __future__ import annotations

import math

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_count, check_number, check_positive

__all__ = ["TimeSampler", "UniformTime", "LogitNormalTime", "UShapedTime", "TIME_SAMPLERS", "get_time_sampler"]


class TimeSampler:
    """Base class: ``sample(n, device=None, generator=None)`` returns n times in [0, 1] (float32)."""

    def sample(self, n: int, device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class UniformTime(TimeSampler):
    """t ~ U(low, high) with 0 <= low < high <= 1 (rectified flow uses U(1e-3, 1), arXiv 2209.03003).

    Example:
        >>> t = UniformTime(0.2, 0.4).sample(100, generator=torch.Generator().manual_seed(0))
        >>> bool((t >= 0.2).all() and (t <= 0.4).all())
        True
    """

    def __init__(self, low: float = 0.0, high: float = 1.0):
        low, high = check_number(low, "low"), check_number(high, "high")
        if not 0.0 <= low < high <= 1.0:
            raise ConfigError(expected("0 <= low < high <= 1", f"low={low}, high={high}", "use UniformTime(0, 1)"))
        self.low, self.high = low, high

    def sample(self, n, device=None, generator=None):
        u = torch.rand(check_count(n), device=device, generator=generator)
        if self.low == 0.0:  # the common cases (U[0, 1], U[0, 1 - eps]) in at most one in-place kernel
            return u if self.high == 1.0 else u.mul_(self.high)
        return (self.low + (self.high - self.low) * u).clamp(self.low, self.high)


class LogitNormalTime(TimeSampler):
    r"""t = sigmoid(m + s ε), ε ~ N(0, 1): the logit-normal of Esser et al. (SD3, arXiv 2403.03206, §3.1).

    Its density :math:`\frac{1}{s\sqrt{2\pi}}\frac{1}{t(1-t)}\exp(-\frac{(\mathrm{logit}\,t - m)^2}{2s^2})`
    puts most samples in the middle of the path, where the velocity target is hardest to predict.
    In flowzoo time a positive ``mean`` shifts mass towards the data end.

    Example:
        >>> t = LogitNormalTime().sample(4000, generator=torch.Generator().manual_seed(0))
        >>> abs(t.mean().item() - 0.5) < 0.02
        True
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean = check_number(mean, "mean")
        self.std = check_positive(std, "std")

    def sample(self, n, device=None, generator=None):
        eps = torch.randn(check_count(n), device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * eps)


class UShapedTime(TimeSampler):
    r"""U-shaped times with density :math:`p(t) \propto \cosh(a(t - \tfrac12))` on [0, 1].

    Lee, Lin and Fanti ("Improving the Training of Rectified Flows", arXiv 2405.20320) train reflow with
    a U-shaped time distribution because the reflow loss is largest near t = 0 and t = 1. Their
    official code (sangyun884/rfpp, ``t_dist.py``) draws u from the density :math:`a e^{au}/(e^a - 1)`
    on [0, 1] and mirrors half of the draws to 1 − u; that mixture has exactly the density
    :math:`\propto e^{at} + e^{a(1-t)} \propto \cosh(a(t - \tfrac12))`, sampled here by the inverse CDF
    :math:`u = \log(1 + r(e^a - 1))/a`. a = 4 (their default) makes the ends cosh(2) ≈ 3.8x denser
    than the middle; a = 0 is uniform.

    Example:
        >>> t = UShapedTime().sample(4000, generator=torch.Generator().manual_seed(0))
        >>> bool(((t < 0.1) | (t > 0.9)).float().mean() > 0.3)  # uniform: 0.2, exact: 0.345
        True
    """

    def __init__(self, a: float = 4.0):
        self.a = check_number(a, "a")
        if self.a < 0:
            raise ConfigError(expected("a >= 0 (a = 0 is uniform)", a, "use e.g. UShapedTime(4.0)"))

    def sample(self, n, device=None, generator=None):
        n = check_count(n)
        r = torch.rand(n, device=device, generator=generator)
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        if self.a < 1e-6:
            u = r
        else:
            u = torch.log1p(r * math.expm1(self.a)) / self.a
        return torch.where(flip, 1 - u, u).clamp(0.0, 1.0)


TIME_SAMPLERS: dict[str, type[TimeSampler]] = {
    "uniform": UniformTime,
    "logit_normal": LogitNormalTime,
    "u_shaped": UShapedTime,
}


def get_time_sampler(name: str, **kwargs: float) -> TimeSampler:
    """Build a time sampler by name: ``"uniform"``, ``"logit_normal"`` or ``"u_shaped"`` (``-`` works as ``_``).

    Example:
        >>> get_time_sampler("u-shaped", a=2.0)
        UShapedTime(a=2.0)
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in TIME_SAMPLERS:
        raise ConfigError(expected(f"a time sampler among {sorted(TIME_SAMPLERS)}", repr(name),
                                   "check the spelling"))
    try:
        return TIME_SAMPLERS[key](**kwargs)
    except TypeError as err:
        raise ConfigError(expected(f"keyword arguments accepted by {TIME_SAMPLERS[key].__name__}",
                                   sorted(kwargs), str(err))) from None
