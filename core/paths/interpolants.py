r"""Stochastic interpolants: an affine path plus a latent Gaussian term, and the γ(t) that scales it.

.. math::  x_t = \alpha(t)\,x_0 + \beta(t)\,x_1 + \gamma(t)\,z, \qquad z \sim N(0, I),

with γ(0) = γ(1) = 0 (Albergo, Boffi, Vanden-Eijnden, "Stochastic Interpolants", arXiv 2303.08797, §2).
Time runs from 0 (source ``x0``) to 1 (data ``x1``), as for every flowzoo path.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.paths.affine import PathSample
from flowzoo.core.paths.schedulers import FieldsRepr, LinearScheduler, Scheduler
from flowzoo.core.validation import broadcast_time, check_pair, check_positive, check_tensor, check_unit_time

__all__ = ["GammaOutput", "Gamma", "BrownianGamma", "BSquaredGamma", "SineSquaredGamma", "ConstantGamma",
           "StochasticInterpolant", "SchrodingerBridgePath"]

Tensor = torch.Tensor


class GammaOutput(NamedTuple):
    """γ(t), γ̇(t) and the product γγ̇ (finite even where γ̇ is not), each of shape (B,)."""

    gamma: Tensor
    d_gamma: Tensor
    gamma_d_gamma: Tensor


class Gamma(FieldsRepr):
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
        >>> from flowzoo.core.paths.schedulers import LinearScheduler
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
        x0, x1 = check_pair(x0, x1, ("x0", "x1"))
        t = check_unit_time(t, x1)
        if z is None:
            z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        else:
            check_pair(z, x1, ("z", "x1"))
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
        t = check_unit_time(t, eta)
        return -eta / broadcast_time(self.gamma(t).gamma, eta)


class SchrodingerBridgePath(StochasticInterpolant):
    r"""The Brownian bridge of SB-CFM: :math:`x_t = (1 - t) x_0 + t x_1 + \sigma\sqrt{t(1 - t)}\,z`.

    Tong et al., "Simulation-free Schrödinger bridges via score and flow matching" (SF2M, arXiv 2307.03672,
    §3, Eq. 9-10): the bridge of the reference process σW between a pair (x0, x1) drawn from the static
    Schrödinger-bridge coupling (:class:`~flowzoo.core.couplings.minibatch.SchrodingerBridgeCoupling`, entropic
    OT with ε = 2σ²). Its velocity target is :math:`x_1 - x_0 + \dot\gamma z` with
    :math:`\dot\gamma z = \frac{1 - 2t}{2t(1 - t)}(x_t - \mu_t)`, and the conditional score is
    :math:`\nabla\log p_t(x_t | x_0, x_1) = -z/\gamma` (:meth:`score_target`). SF2M regresses a network
    :math:`s_\theta \approx \tfrac{\sigma^2}{2}\nabla\log p_t` with :math:`\|\lambda(t) s_\theta + z\|^2`,
    :math:`\lambda(t) = 2\gamma(t)/\sigma^2` (:meth:`score_weight`); the SDE
    :math:`dx = (v_\theta + s_\theta)\,dt + \sigma\,dW` then samples the bridge's marginals. Same time
    direction as flowzoo (t = 0 source, t = 1 data). It is a
    :class:`StochasticInterpolant` with :class:`BrownianGamma` of scale σ², so the interpolant losses apply.

    Args:
        sigma: the reference noise σ > 0.

    Example:
        >>> path = SchrodingerBridgePath(sigma=2.0)
        >>> s = path.sample(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([0.5]), z=torch.ones(1, 1))
        >>> s.x_t.item(), path.score_target(s).item(), path.score_weight(s.t).item()
        (1.5, -1.0, 0.5)
    """

    def __init__(self, sigma: float = 1.0):
        self.sigma = check_positive(sigma, "sigma", fix="pass e.g. sigma=0.5")
        super().__init__(LinearScheduler(), BrownianGamma(self.sigma**2))

    def __repr__(self) -> str:
        return f"SchrodingerBridgePath(sigma={self.sigma!r})"

    def score_target(self, sample: PathSample) -> Tensor:
        """The conditional score −z/γ(t) of a sample from this path (singular at t ∈ {0, 1})."""
        if not isinstance(sample, PathSample) or sample.z is None:
            got = "a sample without z" if isinstance(sample, PathSample) else type(sample).__name__
            raise ConfigError(expected("a PathSample with z, from SchrodingerBridgePath.sample", got,
                                       "draw the sample with this path's sample()"))
        return -sample.z / broadcast_time(self.gamma(sample.t).gamma, sample.z)

    def score_weight(self, t: float | Tensor) -> Tensor:
        """SF2M's weight λ(t) = 2γ(t)/σ² of the scaled score, shape (B,) (0 at the ends)."""
        if not isinstance(t, Tensor):
            t = torch.as_tensor(float(t))
        t = check_tensor(t, "t", min_dim=0)
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ConfigError(expected("t in [0, 1] (0 = source, 1 = data)", f"values in [{t.min().item():.4g}, "
                                       f"{t.max().item():.4g}]", "pass times of the unit interval"))
        return 2.0 * self.gamma(t).gamma / self.sigma**2
