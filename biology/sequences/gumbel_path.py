r"""The Gumbel-softmax interpolant on the simplex and the density of its log-probabilities.

Tang, Zhang, Tong, Chatterjee, "Gumbel-Softmax Flow Matching with Straight-Through Guidance for Controllable
Biological Sequence Generation", arXiv 2503.17361, Eq. 8–9 and 13. A sequence of L letters
is a point of the product of L simplices in R^K; e_k is the one-hot clean letter, g i.i.d. Gumbel(0, 1) noise
and the temperature falls as :math:`\tau(t) = \tau_{max} e^{-\lambda t}` (defaults :math:`\tau_{max} = 10,
\lambda = 3, \beta = 2`). flowzoo time is the paper's: t = 0 is the hot, near-uniform end (noise) and t = 1
the cold end (data); nothing is flipped. Two noise schedules, both :math:`x_t = \mathrm{softmax}(z_t)`:

``noise="tempered"`` (the paper's Eq. 9): :math:`z_t = (e_k + g/\beta)/\tau(t)`. Its exact time derivative,
from :math:`\dot z = \lambda z`, is :math:`u = \lambda\, x \odot (z - \langle x, z\rangle \mathbf 1)`. The noise
is cooled together with the letter, so :math:`z_t = e^{\lambda t} z_0`: every conditional path is a ray of
logits, the exact velocity depends on :math:`x_t` alone (it only sharpens), the letter is as identifiable at
t = 0 as at t = 1, the t = 0 marginal depends on the data, and at t = 1 the argmax is the clean letter with
probability only :math:`\sigma(\beta - \log(K - 1))` (0.28 at K = 20). The paper samples instead with its
Eq. 13 velocity :math:`u_i = \frac{\lambda}{\tau} x_i(\delta_{ik} - x_k)`, the derivative with g dropped, which
is not the velocity of this path: sampled states are far less noisy than the training states at the same t,
the denoiser is over-confident on them and the samples over-concentrate on likely letters (with the exact
Bayes denoiser of i.i.d. letters, NLL below the entropy and letter frequencies that stay off however many
steps are taken; ``tests/biology/test_gumbel_fm.py``).

``noise="fixed"`` (default; ours): the interpolant for which Eq. 13 **is** the exact conditional velocity.
Keep the noise at the initial temperature and let only the letter cool,

.. math::  z_t = e_k\Big(\frac{1}{\tau(t)} - \frac{1}{\tau_{max}}\Big) + \frac{g}{\beta\tau_{max}}
           = \frac{(e^{\lambda t} - 1)\, e_k + g/\beta}{\tau_{max}},

so :math:`\dot z_t = \frac{\lambda}{\tau(t)} e_k` and :math:`u(x \mid k) = \frac{\lambda}{\tau(t)}\, x \odot
(e_k - \langle e_k, x\rangle \mathbf 1)`, exactly Eq. 13. The t = 0 marginal :math:`\mathrm{softmax}(g /
(\beta\tau_{max}))` holds no letter (a data-free prior), the signal grows from 0 to :math:`(e^\lambda - 1)`
against noise of fixed scale, and at t = 1 the argmax is the clean letter with probability
:math:`\sigma(\beta(e^\lambda - 1) - \log(K - 1))` (a Gumbel against the maximum of K − 1 others), 1 − 2e-15
at K = 64 with the defaults; where a schedule leaves it lower (λ = 1: 0.62 at K = 20), draw the letters from the
denoiser at t = 1 (``sample(..., final="denoiser")``). Because u(x | k) is linear in e_k, the marginal velocity
is the paper's Eq. 12–13 with the posterior :math:`x_\theta(x_t) = P(k \mid x_t)` in place of e_k, and it
transports the prior to the data marginal (the conditional flow-matching identity), so sampling is exact up
to the denoiser's error and the time discretisation.

**Concrete density.** With :math:`z_t = (a(t) e_k + g)/\lambda_c(t)` up to a common shift, :math:`x_t` is
Concrete (Maddison et al. 2017) with location :math:`\log\alpha = a e_k` and temperature :math:`\lambda_c`:
:math:`(a, \lambda_c) = (\beta, \beta\tau(t))` for the tempered path and :math:`(\beta(e^{\lambda t} - 1),
\beta\tau_{max})` for the fixed one (:meth:`GumbelSoftmaxPath.concrete_parameters`). Its log-probabilities
:math:`y = \log x` are the logits up to a shift; in the coordinates :math:`y_i - y_K` (i < K) their density
(w.r.t. Lebesgue measure on :math:`R^{K-1}`; charting :math:`\mathrm{logsumexp}(y) = 0` by its first K − 1
coordinates would multiply it by :math:`e^{-y_K}`, so we work with shift classes of logits) is

.. math::  \log p(y \mid k) = \log (K-1)! + (K-1)\log\lambda_c + \sum_i(\log\alpha_i - \lambda_c y_i)
           - K \log\sum_i \alpha_i e^{-\lambda_c y_i}

(:func:`logit_log_density`; for K = 2 the logistic density of :math:`y_1 - y_2`, which the tests integrate
to 1). It is unchanged by :math:`y \to y + c\mathbf 1`, so its gradient sums to zero, a tangent score:
:math:`\partial_{y_i}\log p = -\lambda_c + K\lambda_c w_i`, :math:`w = \mathrm{softmax}(\log\alpha -
\lambda_c y)` (:func:`logit_score`, checked against autograd). With :math:`a = \mathrm{softmax}(-\lambda_c y)`
and :math:`c = e^{a(t)} - 1` the posterior over the letter for a prior π is
:math:`P(k \mid y) \propto \pi_k (1 + c\,a_k)^{-K}` (the tests sample with this Bayes denoiser).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowzoo.biology.sequences.simplex_flow import tangent
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_positive

__all__ = ["GumbelSoftmaxPath", "NOISE_SCHEDULES", "logit_log_density", "logit_score"]

Tensor = torch.Tensor

NOISE_SCHEDULES = ("fixed", "tempered")
"""``"fixed"``: noise at the initial temperature, Eq. 13 exact (default); ``"tempered"``: the paper's Eq. 9."""


class GumbelSoftmaxPath:
    """The Gumbel-softmax interpolant with temperature :math:`\\tau_{max} e^{-\\lambda t}` (module doc).

    Args:
        tau_max: temperature at t = 0.
        decay: λ, the exponential decay rate of the temperature.
        beta: β, the scale dividing the Gumbel noise.
        noise: ``"fixed"`` (the noise keeps its t = 0 temperature; the paper's Eq. 13 velocity is exact and
            the prior holds no letter) or ``"tempered"`` (the paper's Eq. 9, noise cooled with the letter).
    """

    def __init__(self, tau_max: float = 10.0, decay: float = 3.0, beta: float = 2.0, noise: str = "fixed"):
        self.tau_max = check_positive(tau_max, "tau_max", fix="keep the default tau_max")
        self.decay = check_positive(decay, "decay", fix="keep the default decay")
        self.beta = check_positive(beta, "beta", fix="keep the default beta")
        if noise not in NOISE_SCHEDULES:
            raise ConfigError(expected(f"noise in {NOISE_SCHEDULES}", repr(noise), "use 'fixed'"))
        self.noise = noise

    def temperature(self, t: Tensor) -> Tensor:
        return self.tau_max * torch.exp(-self.decay * t)

    def signal(self, t: Tensor) -> Tensor:
        """The factor on e_k in the logits: :math:`1/\\tau(t)` (tempered) or :math:`1/\\tau(t) - 1/\\tau_{max}`."""
        inverse = 1 / self.temperature(t)
        return inverse if self.noise == "tempered" else inverse - 1 / self.tau_max

    def noise_scale(self, t: Tensor) -> Tensor:
        """The factor on g in the logits: :math:`1/(\\beta\\tau(t))` (tempered) or :math:`1/(\\beta\\tau_{max})`."""
        if self.noise == "tempered":
            return 1 / (self.beta * self.temperature(t))
        return torch.full_like(t, 1 / (self.beta * self.tau_max))

    def logits(self, x1: Tensor, gumbel: Tensor, t: Tensor) -> Tensor:
        """:math:`z_t` for one-hot x1 (B, L, K), Gumbel noise like x1 and t (B,)."""
        return self.signal(t)[:, None, None] * x1 + self.noise_scale(t)[:, None, None] * gumbel

    def sample(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw :math:`x_t` for one-hot x1 (B, L, K); returns ``(x_t, z_t)``."""
        z = self.logits(x1, _gumbel(x1.shape, generator, x1.device, x1.dtype), t)
        return torch.softmax(z, -1), z

    def exact_velocity(self, x1: Tensor, gumbel: Tensor, t: Tensor) -> Tensor:
        """The time derivative of the interpolant for fixed (x1, g): :math:`x \\odot (\\dot z - \\langle x,
        \\dot z\\rangle)`, with :math:`\\dot z = \\lambda z` (tempered) or :math:`\\frac{\\lambda}{\\tau} e_k`
        (fixed)."""
        z = self.logits(x1, gumbel, t)
        x = torch.softmax(z, -1)
        if self.noise == "tempered":
            return self.decay * tangent(x, z)
        return self.conditional_velocity(x, x1, t)

    def conditional_velocity(self, x: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Paper Eq. 13, :math:`\\frac{\\lambda}{\\tau} x \\odot (x_1 - \\langle x_1, x\\rangle)`.

        The exact conditional velocity of the ``fixed`` interpolant; x1 may be any distribution over letters.
        """
        return self.decay / self.temperature(t)[:, None, None] * tangent(x, x1)

    def concrete_parameters(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, λ_c)`` (B,) such that :math:`x_t` is Concrete with location :math:`a e_k`, temperature λ_c."""
        temperature = self.temperature(t)
        if self.noise == "tempered":
            return torch.full_like(t, self.beta), self.beta * temperature
        return self.beta * self.tau_max * self.signal(t), torch.full_like(t, self.beta * self.tau_max)

    def posterior(self, x: Tensor, t: Tensor, prior: Tensor) -> Tensor:
        """Bayes posterior :math:`P(k \\mid x_t) \\propto \\pi_k (1 + c\\,a_k)^{-K}` for letters drawn
        independently from ``prior`` (K,) (module doc): the optimal denoiser of i.i.d. letters."""
        location, temperature = (value[:, None, None] for value in self.concrete_parameters(t))
        a = torch.softmax(-temperature * x.clamp_min(torch.finfo(x.dtype).tiny).log(), -1)
        return torch.softmax(prior.log() - x.shape[-1] * torch.log1p(torch.expm1(location) * a), -1)

    def prior(self, n: int, length: int, alphabet_size: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """x_0: pure Gumbel-softmax noise (fixed), or the t = 0 marginal for uniform letters (tempered)."""
        shape = (n, length, alphabet_size)
        if self.noise == "tempered":
            letters = torch.randint(0, alphabet_size, (n, length), generator=generator, device=device)
            x1 = nn.functional.one_hot(letters, alphabet_size).float()
        else:
            x1 = torch.zeros(shape, device=device)
        return self.sample(x1, torch.zeros(n, device=device), generator)[0]


def _gumbel(shape: tuple[int, ...], generator, device, dtype) -> Tensor:
    uniform = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))


def logit_log_density(y: Tensor, location: Tensor, temperature: Tensor) -> Tensor:
    """Log-density of log-probabilities y (..., K) up to shift (module doc); location = log α, temperature λ_c."""
    k = y.shape[-1]
    temperature = temperature[..., None]
    scores = location - temperature * y
    return (math.lgamma(k) + (k - 1) * temperature[..., 0].log() + scores.sum(-1)
            - k * torch.logsumexp(scores, -1))


def logit_score(y: Tensor, location: Tensor, temperature: Tensor) -> Tensor:
    """Closed-form gradient of :func:`logit_log_density` w.r.t. y: :math:`\\lambda_c(K w - 1)`."""
    temperature = temperature[..., None]
    w = torch.softmax(location - temperature * y, -1)
    return temperature * (y.shape[-1] * w - 1)
