r"""Gumbel-softmax flow matching on the simplex and its score-matching variant.

Tang, Zhang, Tong, Chatterjee, "Gumbel-Softmax Flow Matching with Straight-Through Guidance for Controllable
Biological Sequence Generation", arXiv 2503.17361. The interpolant, its two noise
schedules and the Concrete density are in :mod:`flowzoo.biology.sequences.gumbel_path`; the denoiser recipe, the
sampler and the linear-simplex baseline in :mod:`flowzoo.biology.sequences.simplex_flow`. Everything is re-exported
here, so ``from flowzoo.biology.sequences.gumbel_fm import ...`` reaches all of it.

**Gumbel-softmax FM** (:class:`GumbelSoftmaxFM`, Eq. 11–13). The denoiser :math:`x_\theta(x_t, t)` is
trained with the cross-entropy :math:`-\log\langle x_\theta, x_1\rangle` on :math:`x_t` from the interpolant;
the marginal velocity replaces e_k in Eq. 13 by the prediction,

.. math::  u_\theta(x)_i = \frac{\lambda}{\tau(t)}\, x_i\,(x_{\theta,i} - \langle x_\theta, x\rangle),

tangent to the simplex (entries sum to 0). With the default ``noise="fixed"`` interpolant this is the exact
marginal velocity (Eq. 13 is that path's conditional velocity and is linear in e_k); with the paper's
``noise="tempered"`` interpolant it is the paper's inference rule but not that path's velocity, and samples
over-concentrate (see :mod:`flowzoo.biology.sequences.gumbel_path`). Sampling starts from the path's prior and takes
Euler steps: ``step="euler"`` adds :math:`h u` and clamps at ``1e-12`` and renormalises (an Euler step along
a tangent field keeps the sum at 1); ``step="logit"`` steps in logit coordinates,
:math:`x \leftarrow x \odot e^{h\lambda/\tau\,(x_\theta - \langle x_\theta, x\rangle)}` renormalised, the same
first-order velocity that never leaves the simplex. Letters are the argmax at t = 1.

**Score matching** (:class:`GumbelSoftmaxScoreMatching`; the paper's "Gumbel-Softmax Score Matching"
regresses the score of the Gumbel-softmax density; its exact parameterisation was not available to us, so
this is our own derivation). :math:`x_t` is Concrete with location :math:`a(t) e_k` and temperature
:math:`\lambda_c(t)` (:meth:`GumbelSoftmaxPath.concrete_parameters`), and the conditional score of
:math:`y = \log x_t` is :math:`\lambda_c(K w - 1)`, :math:`w = \mathrm{softmax}(a e_k - \lambda_c y)`
(:func:`logit_score`). The marginal score is the posterior mixture :math:`\sum_k \pi_k \nabla\log p(y \mid k)`;
with :math:`a_i = \mathrm{softmax}(-\lambda_c y)_i` and :math:`c = e^{a(t)} - 1`,
:math:`w^{(k)}_i = a_i(1 + c\,\delta_{ik})/(1 + c\,a_k)`, so the mixture of the w's is
:math:`a_i(\sum_k \pi_k/(1 + c a_k) + c\,\pi_i/(1 + c a_i))`. The network outputs the distribution π (softmax
of logits) that parameterises the score this way and is trained by denoising score matching,
:math:`\| s_\theta - \nabla\log p(y_t \mid k)\|^2 / (K\lambda_c^2)` (the :math:`1/\lambda_c^2` weighting keeps
the targets of all times on one scale). The map π ↦ score is injective where c > 0, so the minimiser is the
posterior and π doubles as the denoiser in the velocity above for sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from flowzoo.biology.sequences.gumbel_path import GumbelSoftmaxPath
from flowzoo.biology.sequences.simplex_flow import LinearSimplexFM, SimplexFlowMethod, denoiser_logits
from flowzoo.core.errors import ConfigError, expected

__all__ = ["GumbelSoftmaxFM", "GumbelSoftmaxScoreMatching", "METHODS", "build_method"]

Tensor = torch.Tensor


class GumbelSoftmaxFM(SimplexFlowMethod):
    """Gumbel-softmax flow matching: the objective ``loss(model, batch)`` and its sampler (module doc).

    Args:
        path: the interpolant (defaults τ_max = 10, λ = 3, β = 2, ``noise="fixed"``).
        alphabet_size: needed only when batches hold letter indices instead of one-hot vectors.
        time_sampler: training times (uniform on [0, 1] by default).
        step: ``"euler"`` (additive step, clamp, renormalise) or ``"logit"`` (exponentiated step).
    """

    name = "gumbel_fm"

    def __init__(self, path: GumbelSoftmaxPath | None = None, alphabet_size: int | None = None,
                 time_sampler=None, step: str = "euler"):
        super().__init__(alphabet_size, time_sampler)
        self.path = path or GumbelSoftmaxPath()
        if step not in ("euler", "logit"):
            raise ConfigError(expected("step 'euler' or 'logit'", repr(step), "use 'euler'"))
        self.step_kind = step

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:
        x_t, _ = self.path.sample(x1, t, generator)
        log_probs = torch.log_softmax(denoiser_logits(model, x_t, t, cond), -1)
        return -(log_probs * x1).sum(-1)

    def velocity_from_denoiser(self, x: Tensor, x_hat: Tensor, t: Tensor) -> Tensor:
        return self.path.conditional_velocity(x, x_hat, t)

    def guidance_velocity(self, x: Tensor, direction: Tensor, t: Tensor) -> Tensor:
        return self.path.conditional_velocity(x, direction, t)

    def prior(self, n, length, alphabet_size, generator=None, device=None) -> Tensor:
        return self.path.prior(n, length, alphabet_size, generator, device)

    def step(self, x: Tensor, velocity: Tensor, h: float) -> Tensor:
        if self.step_kind == "logit":
            # velocity = x * v_tangent, so the logit-space rate is velocity / x (finite: x > 0 throughout).
            rate = velocity / x.clamp_min(1e-30)
            return torch.softmax(x.clamp_min(1e-30).log() + h * rate, -1)
        x = (x + h * velocity).clamp_min(1e-12)
        return x / x.sum(-1, keepdim=True)


class GumbelSoftmaxScoreMatching(GumbelSoftmaxFM):
    """Gumbel-softmax score matching: the network's π parameterises the logit score (module doc)."""

    name = "gumbel_score"

    def mixture_weights(self, x: Tensor, posterior: Tensor, t: Tensor) -> Tensor:
        """:math:`\\sum_k \\pi_k w^{(k)}(y)` for y = log x, in the stable form of the module doc."""
        location, temperature = (value[:, None, None] for value in self.path.concrete_parameters(t))
        a = torch.softmax(-temperature * x.clamp_min(1e-30).log(), -1)
        c = torch.expm1(location)
        denominator = 1 + c * a
        return a * ((posterior / denominator).sum(-1, keepdim=True) + c * posterior / denominator)

    def score(self, model: Callable[..., Tensor], x: Tensor, t: Tensor,
              cond: Mapping[str, Tensor] | None = None) -> Tensor:
        """The model's score :math:`\\nabla_y \\log p_t(y)` at y = log x (B, L, K), summing to 0 per position."""
        temperature = self.path.concrete_parameters(t)[1][:, None, None]
        mixture = self.mixture_weights(x, self.denoise(model, x, t, dict(cond or {})), t)
        return temperature * (x.shape[-1] * mixture - 1)

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:
        x_t, z = self.path.sample(x1, t, generator)
        location, temperature = (value[:, None, None] for value in self.path.concrete_parameters(t))
        # w of the conditional score for y = log x_t = z - logsumexp(z); the shift cancels in the softmax.
        target = torch.softmax(location * x1 - temperature * z, -1)
        mixture = self.mixture_weights(x_t, self.denoise(model, x_t, t, cond), t)
        return x1.shape[-1] * (mixture - target).pow(2).sum(-1)


METHODS = {"gumbel_fm": GumbelSoftmaxFM, "gumbel_score": GumbelSoftmaxScoreMatching, "linear_fm": LinearSimplexFM}
"""The methods by name (command line, checkpoints, benchmark)."""


def build_method(name: str, alphabet_size: int | None = None, tau_max: float = 10.0, decay: float = 3.0,
                 beta: float = 2.0, step: str = "euler", noise: str = "fixed") -> SimplexFlowMethod:
    """Build a method by name with the path hyper-parameters (ignored by the linear baseline).

    ``noise="tempered"`` is the paper's interpolant (Eq. 9); checkpoints trained before the ``"fixed"``
    default existed were trained on it and must be sampled with it.
    """
    if name not in METHODS:
        raise ConfigError(expected(f"a method in {sorted(METHODS)}", repr(name), "use 'gumbel_fm'"))
    if name == "linear_fm":
        return LinearSimplexFM(alphabet_size)
    return METHODS[name](GumbelSoftmaxPath(tau_max, decay, beta, noise), alphabet_size, step=step)
