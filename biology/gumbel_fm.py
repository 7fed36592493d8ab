r"""Gumbel-softmax flow matching on the simplex, its score-matching variant, and a linear-simplex baseline.

Tang, Zhang, Tong, Chatterjee, "Gumbel-Softmax Flow Matching with Straight-Through Guidance for Controllable
Biological Sequence Generation", arXiv 2503.17361 (research notes §5).

**Interpolant** (paper Eq. 8–9). A sequence of L letters is a point of the product of L simplices in R^K.
For the clean letter k (one-hot :math:`e_k`) and i.i.d. Gumbel(0, 1) noise g,

.. math::  x_t = \mathrm{softmax}(z_t), \quad z_t = \frac{e_k + g/\beta}{\tau(t)}, \quad
           \tau(t) = \tau_{max} e^{-\lambda t},

defaults :math:`\tau_{max} = 10, \lambda = 3, \beta = 2`. flowzoo time is the paper's: t = 0 is the hot,
near-uniform end (noise) and t = 1 the cold end concentrated on :math:`e_k` (data); nothing is flipped.

**Conditional velocity.** Since :math:`\dot z = \lambda z`, the exact derivative of the interpolant is
:math:`u = \lambda\, x \odot (z - \langle x, z\rangle \mathbf 1)` (:meth:`GumbelSoftmaxPath.exact_velocity`).
The paper's Eq. 13 drops the noise from z: :math:`u_i = \frac{\lambda}{\tau} x_i(\delta_{ik} - x_k)`
(:meth:`GumbelSoftmaxPath.conditional_velocity`); it is the form the model is used with at inference.

**Denoiser and marginal velocity** (Eq. 11–12). A network :math:`x_\theta(x_t, t)` predicts the clean letter
at every position (softmax of its logits) and is trained with the cross-entropy
:math:`-\log\langle x_\theta, x_1\rangle`; the marginal velocity replaces :math:`e_k` by :math:`x_\theta`:
:math:`u_\theta(x)_i = \frac{\lambda}{\tau} x_i (x_{\theta,i} - \langle x_\theta, x\rangle)`, tangent to the
simplex (its entries sum to 0).

**Sampling** starts from :math:`x_0 = \mathrm{softmax}((e_k + g/\beta)/\tau_{max})` with k uniform (the
path's t = 0 marginal for uniformly distributed letters) and integrates with Euler. An Euler step along a
tangent field keeps the sum at 1; to stay on the simplex it is followed by clamping at ``1e-12`` and
renormalising (``step="euler"``). ``step="logit"`` instead takes the Euler step in logit coordinates,
:math:`x \leftarrow x \odot e^{h\,\lambda/\tau\,(x_\theta - \langle x_\theta, x\rangle)}` renormalised, which
has the same first-order velocity and never leaves the simplex. Letters are the argmax at t = 1.

**Score matching** (:class:`GumbelSoftmaxScoreMatching`; the paper's "Gumbel-Softmax Score Matching"
regresses the score of the Gumbel-softmax density; its exact parameterisation was not available to us, so
what follows is our own derivation). :math:`x_t` is Concrete (Maddison et al. 2017) with location
:math:`\log\alpha = \beta e_k` and temperature :math:`\lambda_c = \beta\tau`, since
:math:`z_t = (\beta e_k + g)/(\beta\tau)`. Its log-probabilities :math:`y = \log x` are the logits up to a
common shift; in the coordinates :math:`y_i - y_K` (i < K) they have the density (w.r.t. Lebesgue measure
on :math:`R^{K-1}`; charting the surface :math:`\mathrm{logsumexp}(y) = 0` by its first K − 1 coordinates
instead multiplies it by the Jacobian factor :math:`e^{-y_K}`, so we work with shift classes of logits)

.. math::  \log p(y \mid k) = \log (K-1)! + (K-1)\log\lambda_c + \sum_i(\log\alpha_i - \lambda_c y_i)
           - K \log\sum_i \alpha_i e^{-\lambda_c y_i}

(for K = 2 it is the logistic density of :math:`y_1 - y_2`; the tests integrate it to 1).
The right side is unchanged by :math:`y \to y + c\mathbf 1`, so its gradient sums to zero and is a tangent
score: :math:`\partial_{y_i}\log p = -\lambda_c + K\lambda_c w_i`, :math:`w = \mathrm{softmax}(\log\alpha -
\lambda_c y)` (checked against autograd in the tests). The marginal score is the posterior mixture
:math:`\sum_k p(k \mid y)\,\nabla\log p(y \mid k)`; writing :math:`a = \mathrm{softmax}(-\lambda_c y)` and
:math:`c = e^\beta - 1`, :math:`w^{(k)}_i = a_i(1 + c\,\delta_{ik})/(1 + c\,a_k)`, so the mixture is
:math:`a_i(\sum_k \pi_k/(1 + c a_k) + c\,\pi_i/(1 + c a_i))`. The network outputs a distribution π over the
letter (softmax of logits) that parameterises the score this way and is trained by denoising score
matching, :math:`\| s_\theta - \nabla\log p(y_t \mid k)\|^2 / (K\lambda_c^2)` (the :math:`1/\lambda_c^2`
weighting keeps the targets of all times on one scale). The map π ↦ score is injective, so the minimiser is the
posterior and π doubles as the denoiser in the velocity above for sampling.

**Linear-simplex baseline** (:class:`LinearSimplexFM`): :math:`x_t = (1 - t)x_0 + t e_k` with
:math:`x_0 \sim` Dirichlet(1) (uniform on the simplex), the same cross-entropy denoiser, velocity
:math:`(x_\theta - x_t)/(1 - t)`; its Euler steps are convex combinations, so they stay on the simplex.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.batching import per_sample_weight, reduce_weighted
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.timesamplers import UniformTime

__all__ = [
    "SimplexFlowMethod",
    "GumbelSoftmaxPath",
    "GumbelSoftmaxFM",
    "GumbelSoftmaxScoreMatching",
    "LinearSimplexFM",
    "SimplexSample",
    "SimplexVelocity",
    "logit_log_density",
    "logit_score",
    "tangent",
    "METHODS",
    "build_method",
]

Tensor = torch.Tensor
Guidance = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``guidance(x, x_hat, t) -> velocity (B, L, K)`` added to the flow's velocity at each step."""


def tangent(x: Tensor, direction: Tensor) -> Tensor:
    """Replicator projection :math:`x \\odot (d - \\langle x, d\\rangle)`: tangent, zero on empty letters."""
    return x * (direction - (x * direction).sum(-1, keepdim=True))


def _finite_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(expected(f"{name} as a positive finite number", repr(value), f"keep the default {name}"))
    return float(value)


class GumbelSoftmaxPath:
    """The Gumbel-softmax interpolant with temperature :math:`\\tau_{max} e^{-\\lambda t}` (module doc).

    Args:
        tau_max: temperature at t = 0.
        decay: λ, the exponential decay rate of the temperature.
        beta: β, the scale dividing the Gumbel noise.
    """

    def __init__(self, tau_max: float = 10.0, decay: float = 3.0, beta: float = 2.0):
        self.tau_max = _finite_positive(tau_max, "tau_max")
        self.decay = _finite_positive(decay, "decay")
        self.beta = _finite_positive(beta, "beta")

    def temperature(self, t: Tensor) -> Tensor:
        return self.tau_max * torch.exp(-self.decay * t)

    def logits(self, x1: Tensor, gumbel: Tensor, t: Tensor) -> Tensor:
        """:math:`z_t = (x_1 + g/\\beta)/\\tau(t)` for x1 (B, L, K) and t (B,)."""
        return (x1 + gumbel / self.beta) / self.temperature(t)[:, None, None]

    def sample(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw :math:`x_t` for one-hot x1 (B, L, K); returns ``(x_t, z_t)``."""
        uniform = torch.rand(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
        z = self.logits(x1, gumbel, t)
        return torch.softmax(z, -1), z

    def exact_velocity(self, x: Tensor, z: Tensor) -> Tensor:
        """The exact time derivative :math:`\\lambda x \\odot (z - \\langle x, z\\rangle)` of the interpolant."""
        return self.decay * tangent(x, z)

    def conditional_velocity(self, x: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Paper Eq. 13: :math:`\\frac{\\lambda}{\\tau} x \\odot (x_1 - \\langle x_1, x\\rangle)` (noise dropped)."""
        return self.decay / self.temperature(t)[:, None, None] * tangent(x, x1)

    def prior(self, n: int, length: int, alphabet_size: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """x_0: the t = 0 marginal of the path when every letter is equally likely."""
        letters = torch.randint(0, alphabet_size, (n, length), generator=generator, device=device)
        x1 = nn.functional.one_hot(letters, alphabet_size).float()
        return self.sample(x1, torch.zeros(n, device=device), generator)[0]


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


@dataclass
class SimplexSample:
    """What a sampler returns: final simplex points (B, L, K), letters (B, L) and the last denoiser output."""

    x: Tensor
    tokens: Tensor
    x_hat: Tensor


def _check_batch(batch: object, alphabet_size: int | None) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    if not isinstance(batch, Mapping) or "x1" not in batch:
        raise ConfigError(expected('a batch mapping with the sequences under "x1"',
                                   type(batch).__name__ if not isinstance(batch, Mapping) else sorted(batch),
                                   'pass {"x1": one_hot(tokens, K)} or {"x1": tokens}'))
    x1 = batch["x1"]
    if not isinstance(x1, Tensor):
        raise DTypeError(expected('batch["x1"] as a tensor', type(x1).__name__, "encode with encode_records"))
    if not x1.is_floating_point():
        if alphabet_size is None:
            raise DTypeError(expected('one-hot batch["x1"] (B, L, K), or an alphabet_size for index tensors',
                                      x1.dtype, "build the objective with alphabet_size=K"))
        if x1.dim() != 2 or x1.numel() == 0 or int(x1.min()) < 0 or int(x1.max()) >= alphabet_size:
            raise ShapeError(expected(f"token indices (B, L) in [0, {alphabet_size})", tuple(x1.shape),
                                      "encode with the model's alphabet"))
        x1 = nn.functional.one_hot(x1, alphabet_size).float()
    if x1.dim() != 3 or x1.shape[0] == 0 or x1.shape[1] == 0:
        raise ShapeError(expected('one-hot batch["x1"] of shape (B, L, K)', tuple(x1.shape), "use one_hot(tokens, K)"))
    if alphabet_size is not None and x1.shape[-1] != alphabet_size:
        raise ShapeError(expected(f"{alphabet_size} letters in the last dimension", x1.shape[-1], "check the alphabet"))
    if not torch.isfinite(x1).all() or ((x1 != 0) & (x1 != 1)).any() or (x1.sum(-1) != 1).any():
        raise ShapeError(expected('one-hot rows in batch["x1"] (a single 1 per position)', "other values",
                                  "encode letters with one_hot(tokens, K)"))
    weight = batch.get("weight")
    weight = None if weight is None else per_sample_weight(weight, x1.shape[0], 'batch["weight"]')
    cond = {key: value for key, value in batch.items() if key not in ("x0", "x1", "weight")}
    return x1, weight, cond


def _logits(model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
    out = model(x, t, **cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise ShapeError(expected(f"denoiser logits shaped like x {tuple(x.shape)}", getattr(out, "shape", type(out)),
                                  "return (B, L, K) logits from model(x, t)"))
    return out


class SimplexFlowMethod:
    """A flow on the simplex: the objective ``method(model, batch, generator=None) -> (loss, metrics)`` and
    its sampler. Subclasses define the path (``position_loss``, ``prior``), the velocity from the denoiser's
    prediction, the simplex-preserving step and how a guidance direction becomes a velocity.

    Batches: ``{"x1": one-hot (B, L, K) or indices (B, L), "weight": optional (B,), **cond}``; the source is
    the path's own, so an ``"x0"`` entry is ignored. The loss is averaged over positions, then over the
    (weighted) batch.
    """

    name = "base"

    def __init__(self, alphabet_size: int | None = None, time_sampler=None):
        self.alphabet_size = alphabet_size
        self.time_sampler = time_sampler or UniformTime()

    def __call__(self, model: Callable[..., Tensor], batch: Mapping[str, Tensor],
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        x1, weight, cond = _check_batch(batch, self.alphabet_size)
        t = self.time_sampler.sample(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        per_position = self.position_loss(model, x1, t, cond, generator)
        per_sample = per_position.mean(1)
        loss = reduce_weighted(per_sample, weight)
        return loss, {"loss": float(loss.detach())}

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def denoise(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        """The predicted clean-letter distribution x_θ (B, L, K)."""
        return torch.softmax(_logits(model, x, t, cond), -1)

    def velocity_from_denoiser(self, x: Tensor, x_hat: Tensor, t: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def guidance_velocity(self, x: Tensor, direction: Tensor, t: Tensor) -> Tensor:  # pragma: no cover
        """Turn a per-letter ascent direction (B, L, K) into a simplex-tangent velocity at time t."""
        raise NotImplementedError

    def prior(self, n: int, length: int, alphabet_size: int, generator=None, device=None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def step(self, x: Tensor, velocity: Tensor, h: float) -> Tensor:
        return x + h * velocity

    @torch.no_grad()
    def sample(self, model: Callable[..., Tensor], n: int, length: int, alphabet_size: int, *, steps: int = 100,
               generator: torch.Generator | None = None, guidance: Guidance | None = None,
               cond: Mapping[str, Tensor] | None = None, device: torch.device | str | None = None,
               progress: bool = False) -> SimplexSample:
        """Integrate from the prior at t = 0 to t = 1 with ``steps`` Euler steps (module doc).

        ``guidance(x, x_hat, t)`` returns a velocity added at every step (see :mod:`flowzoo.biology.stgflow`).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or n < 1 or length < 1:
            raise ConfigError(expected("steps, n and length >= 1", (steps, n, length), "e.g. steps=100"))
        cond = dict(cond or {})
        x = self.prior(n, length, alphabet_size, generator, device)
        grid = torch.linspace(0.0, 1.0, steps + 1).tolist()
        x_hat = x
        for i in tqdm(range(steps), desc=f"sampling {self.name}", disable=not progress, leave=False):
            t = torch.full((n,), grid[i], device=x.device, dtype=x.dtype)
            x_hat = self.denoise(model, x, t, cond)
            velocity = self.velocity_from_denoiser(x, x_hat, t)
            if guidance is not None:
                with torch.enable_grad():
                    velocity = velocity + guidance(x, x_hat, t)
            x = self.step(x, velocity, grid[i + 1] - grid[i])
        return SimplexSample(x=x, tokens=x.argmax(-1), x_hat=x_hat)


class GumbelSoftmaxFM(SimplexFlowMethod):
    """Gumbel-softmax flow matching: the objective ``loss(model, batch)`` and its sampler (module doc).

    Args:
        path: the interpolant (defaults τ_max = 10, λ = 3, β = 2).
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
        log_probs = torch.log_softmax(_logits(model, x_t, t, cond), -1)
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
        temperature = self.path.beta * self.path.temperature(t)[:, None, None]
        a = torch.softmax(-temperature * x.clamp_min(1e-30).log(), -1)
        c = math.expm1(self.path.beta)
        denominator = 1 + c * a
        return a * ((posterior / denominator).sum(-1, keepdim=True) + c * posterior / denominator)

    def score(self, model: Callable[..., Tensor], x: Tensor, t: Tensor,
              cond: Mapping[str, Tensor] | None = None) -> Tensor:
        """The model's score :math:`\\nabla_y \\log p_t(y)` at y = log x (B, L, K), summing to 0 per position."""
        temperature = self.path.beta * self.path.temperature(t)[:, None, None]
        mixture = self.mixture_weights(x, self.denoise(model, x, t, dict(cond or {})), t)
        return temperature * (x.shape[-1] * mixture - 1)

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:
        x_t, z = self.path.sample(x1, t, generator)
        temperature = self.path.beta * self.path.temperature(t)[:, None, None]
        # w of the conditional score for y = log x_t = z - logsumexp(z); the shift cancels in the softmax.
        target = torch.softmax(self.path.beta * x1 - temperature * z, -1)
        mixture = self.mixture_weights(x_t, self.denoise(model, x_t, t, cond), t)
        return x1.shape[-1] * (mixture - target).pow(2).sum(-1)


class LinearSimplexFM(SimplexFlowMethod):
    """The linear-simplex baseline: Dirichlet(1) source, straight paths, CE denoiser (module doc)."""

    name = "linear_fm"

    def __init__(self, alphabet_size: int | None = None, time_sampler=None, t_max: float = 1.0 - 1e-4):
        super().__init__(alphabet_size, time_sampler)
        self.t_max = t_max

    def _dirichlet(self, shape: tuple[int, ...], generator, device, dtype=torch.float32) -> Tensor:
        exponential = -torch.log(torch.rand(shape, generator=generator, device=device, dtype=dtype).clamp_min(1e-20))
        return exponential / exponential.sum(-1, keepdim=True)

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:
        x0 = self._dirichlet(tuple(x1.shape), generator, x1.device, x1.dtype)
        s = t[:, None, None]
        x_t = (1 - s) * x0 + s * x1
        return -(torch.log_softmax(_logits(model, x_t, t, cond), -1) * x1).sum(-1)

    def velocity_from_denoiser(self, x: Tensor, x_hat: Tensor, t: Tensor) -> Tensor:
        return (x_hat - x) / (1 - t.clamp_max(self.t_max))[:, None, None]

    def guidance_velocity(self, x: Tensor, direction: Tensor, t: Tensor) -> Tensor:
        return tangent(x, direction) / (1 - t.clamp_max(self.t_max))[:, None, None]

    def prior(self, n, length, alphabet_size, generator=None, device=None) -> Tensor:
        return self._dirichlet((n, length, alphabet_size), generator, device)

    def step(self, x: Tensor, velocity: Tensor, h: float) -> Tensor:
        x = (x + h * velocity).clamp_min(0)  # a guided step may overshoot; the unguided one is convex
        return x / x.sum(-1, keepdim=True)


class SimplexVelocity(nn.Module):
    """Wrap a denoiser and a method into a velocity model ``v(x, t, **cond)`` (the flowzoo convention)."""

    def __init__(self, denoiser: nn.Module, method: SimplexFlowMethod):
        super().__init__()
        self.denoiser, self.method = denoiser, method

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return self.method.velocity_from_denoiser(x, self.method.denoise(self.denoiser, x, t, cond), t)


METHODS = {"gumbel_fm": GumbelSoftmaxFM, "gumbel_score": GumbelSoftmaxScoreMatching, "linear_fm": LinearSimplexFM}
"""The methods by name (command line, checkpoints, benchmark)."""


def build_method(name: str, alphabet_size: int | None = None, tau_max: float = 10.0, decay: float = 3.0,
                 beta: float = 2.0, step: str = "euler") -> SimplexFlowMethod:
    """Build a method by name with the path hyper-parameters (ignored by the linear baseline)."""
    if name not in METHODS:
        raise ConfigError(expected(f"a method in {sorted(METHODS)}", repr(name), "use 'gumbel_fm'"))
    if name == "linear_fm":
        return LinearSimplexFM(alphabet_size)
    return METHODS[name](GumbelSoftmaxPath(tau_max, decay, beta), alphabet_size, step=step)
