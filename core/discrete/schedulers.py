r"""Convex schedulers κ(t) of discrete mixture paths, with κ̇(t) in closed form.

Gat et al., "Discrete Flow Matching", arXiv 2407.15595: a factorised mixture path keeps each token at
its source value with probability :math:`1 - \kappa_t` and at its data value with probability :math:`\kappa_t`,

.. math::  p_t(x^i \mid x_0, x_1) = (1 - \kappa_t)\,\delta_{x_0^i}(x^i) + \kappa_t\,\delta_{x_1^i}(x^i),

with :math:`\kappa_0 = 0`, :math:`\kappa_1 = 1` and :math:`\dot\kappa_t \ge 0`. Time follows flowzoo's
convention (0 = source, 1 = data), the paper's own. The linear κ = t is the usual choice for text; a
polynomial κ = t^n with n > 1 keeps tokens at the source longer. Every scheduler returns κ̇ in closed form (no
autograd), and ``kappa_inverse`` gives the time at which a fraction κ of tokens has reached the data.

Example:
    >>> import torch
    >>> out = PolynomialConvexScheduler(2)(torch.tensor([0.5]))
    >>> out.kappa.item(), out.d_kappa.item()
    (0.25, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_positive

__all__ = ["KappaOutput", "ConvexScheduler", "PolynomialConvexScheduler", "LinearConvexScheduler",
           "CosineConvexScheduler", "CONVEX_SCHEDULERS", "get_convex_scheduler"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class KappaOutput:
    """κ(t) and its time derivative κ̇(t), each shaped like t."""

    kappa: Tensor
    d_kappa: Tensor


class ConvexScheduler:
    """Base class: ``scheduler(t) -> KappaOutput`` for times t in [0, 1] (κ(0) = 0, κ(1) = 1, κ̇ >= 0)."""

    def __call__(self, t: Tensor) -> KappaOutput:
        return KappaOutput(self.kappa(t), self.d_kappa(t))

    def kappa(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def d_kappa(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def kappa_inverse(self, kappa: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The time t at which κ(t) = ``kappa``."""
        raise NotImplementedError

    def jump_coefficient(self, t: Tensor) -> Tensor:
        r"""The CTMC rate scale :math:`\dot\kappa_t / (1 - \kappa_t)` (arXiv 2407.15595); infinite at t = 1."""
        out = self(t)
        return out.d_kappa / (1.0 - out.kappa)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class PolynomialConvexScheduler(ConvexScheduler):
    r""":math:`\kappa_t = t^n`, :math:`\dot\kappa_t = n\,t^{n-1}` (n > 0; n = 1 is the linear scheduler).

    Example:
        >>> round(PolynomialConvexScheduler(3).kappa_inverse(torch.tensor(0.125)).item(), 6)
        0.5
    """

    def __init__(self, n: float = 1.0):
        self.n = check_positive(n, "n", fix="pass e.g. n=1.0 (linear) or n=3.0 (cubic)")

    def kappa(self, t: Tensor) -> Tensor:
        return t.pow(self.n)

    def d_kappa(self, t: Tensor) -> Tensor:
        return self.n * t.pow(self.n - 1.0) if self.n != 1.0 else torch.ones_like(t)

    def kappa_inverse(self, kappa: Tensor) -> Tensor:
        return kappa.pow(1.0 / self.n)


class LinearConvexScheduler(PolynomialConvexScheduler):
    r""":math:`\kappa_t = t`, :math:`\dot\kappa_t = 1` (the text models of arXiv 2407.15595).

    Example:
        >>> LinearConvexScheduler()(torch.tensor([0.3])).d_kappa.tolist()
        [1.0]
    """

    def __init__(self):
        super().__init__(1.0)


class CosineConvexScheduler(ConvexScheduler):
    r""":math:`\kappa_t = \sin^2(\pi t / 2)`, :math:`\dot\kappa_t = \tfrac{\pi}{2}\sin(\pi t)`: slow at both ends.

    Example:
        >>> round(CosineConvexScheduler()(torch.tensor([0.5])).kappa.item(), 6)
        0.5
    """

    def kappa(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t).square()

    def d_kappa(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.sin(math.pi * t)

    def kappa_inverse(self, kappa: Tensor) -> Tensor:
        return torch.asin(kappa.clamp(0.0, 1.0).sqrt()) * (2.0 / math.pi)


CONVEX_SCHEDULERS = {"linear": LinearConvexScheduler, "polynomial": PolynomialConvexScheduler,
                     "cosine": CosineConvexScheduler}


def get_convex_scheduler(name: str, **kwargs: float) -> ConvexScheduler:
    """A scheduler by name: ``"linear"``, ``"polynomial"`` (keyword ``n``) or ``"cosine"``.

    Example:
        >>> get_convex_scheduler("polynomial", n=3.0)
        PolynomialConvexScheduler(n=3.0)
    """
    if name not in CONVEX_SCHEDULERS:
        raise ConfigError(expected(f"a scheduler in {sorted(CONVEX_SCHEDULERS)}", repr(name), "use 'linear'"))
    return CONVEX_SCHEDULERS[name](**kwargs)
