r"""Flows on the product of simplices with a denoiser parameterisation, and the linear-simplex baseline.

A sequence of L letters over an alphabet of K is a point of the product of L simplices in R^K. The methods
here share one recipe (Stark et al., Dirichlet FM, arXiv 2402.05841; Tang et al., arXiv 2503.17361 Eq. 11–12):
a network :math:`x_\theta(x_t, t)` predicts the clean letter at every position (softmax of its logits), is
trained with the cross-entropy :math:`-\log\langle x_\theta, x_1\rangle` on points :math:`x_t` of the method's
interpolant, and the marginal velocity is the conditional velocity :math:`u(x \mid e_k)` averaged over the
prediction, :math:`\sum_k x_{\theta,k}\, u(x \mid e_k)` (exact when u is linear in e_k). Sampling integrates
from the method's prior at t = 0 to t = 1 with Euler steps that stay on the simplex and reads the letters
off as the argmax (or draws them from the denoiser's categorical at t = 1). Time runs 0 = noise to 1 = data,
as everywhere in flowzoo.

**Linear-simplex baseline** (:class:`LinearSimplexFM`): :math:`x_t = (1 - t)x_0 + t e_k` with
:math:`x_0 \sim` Dirichlet(1) (uniform on the simplex), :math:`u(x \mid e_k) = (e_k - x)/(1 - t)`, so the
marginal velocity is :math:`(x_\theta - x)/(1 - t)`; its Euler steps are convex combinations and stay on the
simplex. The Gumbel-softmax methods live in :mod:`flowzoo.biology.sequences.gumbel_fm`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.batching import per_sample_weight, reduce_weighted
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.validation import check_positive_int
from flowzoo.core.paths import UniformTime

__all__ = ["SimplexFlowMethod", "LinearSimplexFM", "SimplexSample", "SimplexVelocity", "Guidance",
           "check_sequence_batch", "denoiser_logits", "tangent"]

Tensor = torch.Tensor
Guidance = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``guidance(x, x_hat, t) -> velocity (B, L, K)`` added to the flow's velocity at each step."""


def tangent(x: Tensor, direction: Tensor) -> Tensor:
    """Replicator projection :math:`x \\odot (d - \\langle x, d\\rangle)`: tangent, zero on empty letters."""
    return x * (direction - (x * direction).sum(-1, keepdim=True))


@dataclass
class SimplexSample:
    """What a sampler returns: final simplex points (B, L, K), letters (B, L) and the last denoiser output."""

    x: Tensor
    tokens: Tensor
    x_hat: Tensor


def check_sequence_batch(batch: object, alphabet_size: int | None) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Validate a batch; return ``(one-hot x1 (B, L, K), weight (B,) or None, conditioning kwargs)``."""
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


def denoiser_logits(model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
    """``model(x, t, **cond)``, checked to be logits shaped like x."""
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
        x1, weight, cond = check_sequence_batch(batch, self.alphabet_size)
        t = self.time_sampler.sample(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        per_position = self.position_loss(model, x1, t, cond, generator)
        loss = reduce_weighted(per_position.mean(1), weight)
        return loss, {"loss": float(loss.detach())}

    def position_loss(self, model, x1, t, cond, generator) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def denoise(self, model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        """The predicted clean-letter distribution x_θ (B, L, K)."""
        return torch.softmax(denoiser_logits(model, x, t, cond), -1)

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
               progress: bool = False, final: str = "argmax") -> SimplexSample:
        """Integrate from the prior at t = 0 to t = 1 with ``steps`` Euler steps (module doc).

        ``guidance(x, x_hat, t)`` returns a velocity added at every step (see :mod:`flowzoo.biology.sequences.stgflow`).
        ``final="argmax"`` reads the letters off :math:`x_1`; ``final="denoiser"`` evaluates the denoiser once
        more at t = 1 and draws each letter from its categorical :math:`x_\theta(x_1, 1)`, which is exact
        for a Bayes denoiser even where :math:`x_1` is still ambiguous.
        """
        for name, value in (("steps", steps), ("n", n), ("length", length)):
            check_positive_int(value, name, fix="e.g. steps=100, n=64, length=50")
        if final not in ("argmax", "denoiser"):
            raise ConfigError(expected("final 'argmax' or 'denoiser'", repr(final), "use 'argmax'"))
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
        if final == "argmax":
            return SimplexSample(x=x, tokens=x.argmax(-1), x_hat=x_hat)
        x_hat = self.denoise(model, x, torch.ones(n, device=x.device, dtype=x.dtype), cond)
        draws = torch.multinomial(x_hat.reshape(-1, x_hat.shape[-1]), 1, generator=generator)
        return SimplexSample(x=x, tokens=draws.reshape(n, length), x_hat=x_hat)


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
        return -(torch.log_softmax(denoiser_logits(model, x_t, t, cond), -1) * x1).sum(-1)

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
