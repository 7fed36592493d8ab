r"""The Euler sampler of discrete flow matching: a CTMC simulated with one jump draw per token per step.

Gat et al., "Discrete Flow Matching", arXiv 2407.15595 (the probability velocity of an x1-predicting model;
Campbell et al., arXiv 2402.04997, for the Euler scheme). With the model's factorised posterior
:math:`p_{1|t}(\cdot \mid x_t)`, token i jumps from :math:`x_t^i` to :math:`y \ne x_t^i` at the marginal rate

.. math::  u_t^i(y \mid x_t) = \frac{\dot\kappa_t}{1-\kappa_t}\, p_{1|t}(y \mid x_t)
           + c\,\frac{\dot\kappa_t}{\kappa_t(1-\kappa_t)}\big[\kappa_t\, p_{1|t}(y \mid x_t) + (1-\kappa_t)\,p_0(y)\big],

the second term being the divergence-free corrector of strength :math:`c` = ``div_free`` (arXiv 2407.15595:
forward rates minus the backward rates :math:`\frac{\dot\kappa_t}{\kappa_t}(\delta_{x_t} - p_0)`;
it leaves the path's marginals unchanged and re-noises tokens, e.g. re-masks them). One step of size h
jumps with probability :math:`1 - e^{-h\lambda^i}`, :math:`\lambda^i = \sum_{y \ne x_t^i} u_t^i(y)`, to a
token drawn from :math:`u_t^i(\cdot)/\lambda^i`; the last step (ending at t = 1) draws every token from
:math:`p_{1|t}` itself, so no mask survives. With the masked path's ``carry_over`` (its default) an unmasked
token keeps its value (its posterior is taken as a point mass). Time is flowzoo's: t = 0 source, t = 1 data.

``temperature`` divides the logits and ``top_k`` keeps the k most likely tokens of each posterior before the
rates are formed (``top_k=1``: every jump goes to the arg-max token).

Example:
    >>> import torch
    >>> from flowzoo.core.discrete.path import MixtureDiscretePath
    >>> path = MixtureDiscretePath(3, source="mask")
    >>> model = lambda x, t: torch.tensor([0.0, 0.0, 5.0]).expand(*x.shape, 3)
    >>> out = discrete_sample(model, torch.full((2, 4), 3), path=path, steps=8, top_k=1)
    >>> out.x.tolist(), out.nfe
    ([[2, 2, 2, 2], [2, 2, 2, 2]], 8)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive
from flowzoo.core.sampling import Callback, SampleResult, StepRecorder, check_cond, resolve_grid
from flowzoo.core.discrete.path import MixtureDiscretePath, check_token_ids
from flowzoo.core.discrete.losses import call_posterior

__all__ = ["discrete_sample", "posterior_probs", "jump_rates", "step_kernel", "sample_categorical"]

Tensor = torch.Tensor
_KAPPA_FLOOR = 1e-6  # keeps the corrector's 1/κ finite at t = 0 (there it only reshuffles source tokens)


def sample_categorical(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from unnormalised non-negative ``weights`` (..., S) by inverse CDF; rows must not be all 0.

    Example:
        >>> sample_categorical(torch.tensor([[0.0, 2.0, 0.0]])).tolist()
        [1]
    """
    cdf = weights.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), device=weights.device, dtype=cdf.dtype, generator=generator)
    index = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
    return index.squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def posterior_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
    """softmax(logits / temperature) restricted to the ``top_k`` largest logits of each row (None: all).

    Example:
        >>> posterior_probs(torch.tensor([1.0, 3.0, 2.0]), top_k=1).tolist()
        [0.0, 1.0, 0.0]
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def jump_rates(probs: Tensor, x: Tensor, t: float, path: MixtureDiscretePath, div_free: float = 0.0) -> Tensor:
    r"""The rates :math:`u_t(y \mid x_t)` of the module doc over the ``num_states`` ids, zero at :math:`y = x_t`.

    ``probs`` (..., V) is the posterior over data tokens and ``x`` (...) the current ids; returns (..., S).
    """
    out = path.scheduler(torch.tensor(float(t), dtype=torch.float64))
    kappa, d_kappa = float(out.kappa), float(out.d_kappa)
    scale = d_kappa / (1.0 - kappa)
    extra = path.num_states - path.vocab_size
    rates = probs * scale if extra == 0 else torch.nn.functional.pad(probs * scale, (0, extra))
    if div_free > 0.0:  # c κ̇/(κ(1-κ)) [κ p + (1-κ) p0] = c κ̇/(1-κ) p + c κ̇/κ p0
        source = path.source.probs(probs.device, probs.dtype)
        rates = rates * (1.0 + div_free) + (div_free * d_kappa / max(kappa, _KAPPA_FLOOR)) * source
    return rates.scatter(-1, x.unsqueeze(-1), 0.0)


def step_kernel(probs: Tensor, x: Tensor, t: float, h: float, path: MixtureDiscretePath,
                div_free: float = 0.0) -> Tensor:
    """The one-step transition probabilities P(x_{t+h} = y | x_t) (..., S) of the Euler jump; rows sum to one.

    Example:
        >>> path = MixtureDiscretePath(2, source="mask")
        >>> kernel = step_kernel(torch.tensor([[0.5, 0.5]]), torch.tensor([2]), 0.0, 0.5, path)
        >>> [round(v, 4) for v in kernel[0].tolist()]
        [0.1967, 0.1967, 0.6065]
    """
    rates = jump_rates(probs, x, t, path, div_free)
    total = rates.sum(-1, keepdim=True)
    jump = -torch.expm1(-h * total)
    kernel = torch.where(total > 0, rates / total.clamp_min(1e-30), torch.zeros_like(rates)) * jump
    return kernel.scatter_add(-1, x.unsqueeze(-1), 1.0 - jump)


def _euler_jump(probs: Tensor, x: Tensor, t: float, h: float, path: MixtureDiscretePath, div_free: float,
                generator: torch.Generator | None) -> Tensor:
    # Every token draws a destination, used only where it jumps: no host synchronisation inside the loop.
    rates = jump_rates(probs, x, t, path, div_free)
    jumps = torch.rand(x.shape, device=x.device, generator=generator) < -torch.expm1(-h * rates.sum(-1))
    return torch.where(jumps, sample_categorical(rates, generator), x)


def _check_sampling_options(div_free: float, temperature: float, top_k: int | None,
                            path: MixtureDiscretePath) -> tuple[float, float, int | None]:
    div_free = check_nonnegative(div_free, "div_free", fix="pass div_free >= 0 (0: no corrector)")
    temperature = check_positive(temperature, "temperature", fix="pass e.g. temperature=1.0")
    if top_k is not None:
        top_k = check_int(top_k, "top_k", low=1, high=path.vocab_size,
                          fix=f"pass top_k in [1, {path.vocab_size}] or None (no truncation)")
    return div_free, temperature, top_k


@torch.no_grad()
def discrete_sample(model: Callable[..., Tensor], x: Tensor, *, path: MixtureDiscretePath, steps: int | None = None,
                    time_grid: Tensor | Sequence[float] | None = None, div_free: float = 0.0,
                    temperature: float = 1.0, top_k: int | None = None, cond: Mapping[str, Any] | None = None,
                    generator: torch.Generator | None = None, callback: Callback | None = None,
                    return_trajectory: bool = False, progress: bool = False) -> SampleResult:
    """Sample a discrete flow by Euler jumps (module doc) from the source tokens ``x`` (B, L, ...).

    Args:
        model: ``model(x_t, t, **cond) -> logits (B, L, ..., V)``, the posterior over data tokens.
        x: start ids at ``time_grid[0]``, e.g. ``path.source.sample((B, L))`` (all mask ids).
        path: the mixture path the model was trained on.
        steps, time_grid: uniform steps over [0, 1], or an increasing grid in [0, 1].
        div_free: strength c >= 0 of the divergence-free corrector.
        temperature, top_k: posterior shaping (temperature > 0; top_k in [1, V] or None).
        cond, generator, callback, return_trajectory, progress: as every flowzoo sampler.

    Returns:
        SampleResult with ``x`` the token ids, ``nfe`` = number of model calls (one per step), and
        ``extras["jumps"]`` the number of token changes made by the Euler steps before the last.
    """
    if not isinstance(path, MixtureDiscretePath):
        raise ConfigError(expected("path as a MixtureDiscretePath", type(path).__name__,
                                   "pass the path the model was trained on"))
    x = check_token_ids(x, "x", path.num_states)
    div_free, temperature, top_k = _check_sampling_options(div_free, temperature, top_k, path)
    cond = check_cond(cond)
    grid = resolve_grid(steps, time_grid, torch.empty(0, dtype=torch.float64, device=x.device))
    times = grid.tolist()
    if times[0] < 0.0 or times[-1] > 1.0 or times[-1] < times[0]:
        raise ConfigError(expected("an increasing time_grid within [0, 1] (0 = source, 1 = data)",
                                   times[:8], "pass e.g. steps=64"))
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory, progress=progress,
                            desc="discrete sampling")
    batch, jumps = x.shape[0], torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(len(times) - 1):
        t = torch.full((batch,), times[i], device=x.device)
        probs = posterior_probs(call_posterior(model, x, t, cond, path.vocab_size), temperature, top_k)
        probs = path.carry_over_probs(probs, x)
        if i == len(times) - 2 and times[-1] == 1.0:
            x = sample_categorical(probs, generator)
        else:
            new = _euler_jump(probs, x, times[i], times[i + 1] - times[i], path, div_free, generator)
            jumps += (new != x).sum()
            x = new
        if recorder.active:
            recorder.record(i, x)
    return SampleResult(x=x, nfe=len(times) - 1, trajectory=recorder.trajectory(),
                        times=grid.to(torch.float32) if return_trajectory else None, extras={"jumps": int(jumps)})
