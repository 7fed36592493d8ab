r"""The evidence lower bound of a discrete flow model: an upper bound on each sequence's NLL, in nats.

Shaul et al., "Flow Matching with General Discrete Paths: A Kinetic-Optimal Perspective", arXiv 2412.03487,
(the ELBO of a mixture path; Campbell et al., arXiv 2205.14987, for CTMCs): for a mixture path the conditional process
starts at the model's own source :math:`p_0` and ends at :math:`x_1`, so the KL between the conditional and
the model's path measures bounds the likelihood of the CTMC that :func:`~flowzoo.core.discrete.discrete_sample`
simulates:

.. math::  -\log p_1^\theta(x_1) \le \int_0^1 \mathbb{E}_{x_t \sim p_t(\cdot \mid x_1)}
           \sum_i \ell^i(x_1, x_t, t)\, dt,

with :math:`\ell^i` the generalised KL of :func:`~flowzoo.core.discrete.losses.generalized_kl`. For the masked
source with ``carry_over`` (the path's default: unmasked tokens are final), :math:`\ell^i` vanishes off the mask
and the bound is the familiar

.. math::  \int_0^1 \frac{\dot\kappa_t}{1-\kappa_t} \sum_{i\ \mathrm{masked}} -\log p_{1|t}(x_1^i \mid x_t)\,dt.

Time is flowzoo's (0 = source, 1 = data). The integral is estimated with ``n_time`` stratified times
:math:`t_k = (k + u_k)/n`, :math:`u_k \sim U[0, 1)` drawn per sequence, each with one path draw: unbiased, and
the strata keep its variance low.

Example:
    >>> import math, torch
    >>> from flowzoo.core.discrete.path import MixtureDiscretePath
    >>> path = MixtureDiscretePath(4, source="mask")
    >>> model = lambda x, t: torch.zeros(*x.shape, 4)        # uniform posterior: NLL = 5 log 4 = 6.93
    >>> x1 = torch.randint(0, 4, (200, 5), generator=torch.Generator().manual_seed(0))
    >>> nelbo = discrete_elbo(model, x1, path=path, n_time=16, generator=torch.Generator().manual_seed(0))
    >>> abs(nelbo.mean().item() - 5 * math.log(4)) < 0.3       # unbiased, within Monte Carlo error
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_positive_int
from flowzoo.core.sampling import check_cond
from flowzoo.core.discrete.path import MixtureDiscretePath, check_token_ids
from flowzoo.core.discrete.losses import call_posterior, generalized_kl

__all__ = ["discrete_elbo", "elbo_per_token"]

Tensor = torch.Tensor


@torch.no_grad()
def discrete_elbo(model: Callable[..., Tensor], x1: Tensor, *, path: MixtureDiscretePath, n_time: int = 64,
                  cond: Mapping[str, Any] | None = None, generator: torch.Generator | None = None,
                  t_max: float = 1.0) -> Tensor:
    """The negative ELBO of each sequence of ``x1`` (B, L, ...), in nats: an upper bound on -log p(x1).

    Args:
        model: ``model(x_t, t, **cond) -> logits (B, L, ..., V)``.
        x1: token ids of the sequences to score.
        path: the mixture path the model was trained on (its source and κ define the bound).
        n_time: stratified time points (one model call each).
        cond: conditioning keyword arguments for the model.
        generator: drives the times and the path draws.
        t_max: integrate over [0, t_max] only (1 for the bound; < 1 drops the end, as some peers do).

    Returns:
        (B,) float tensor, the per-sequence negative ELBO (divide by the number of tokens for nats/token).
    """
    if not isinstance(path, MixtureDiscretePath):
        raise ConfigError(expected("path as a MixtureDiscretePath", type(path).__name__,
                                   "pass the path the model was trained on"))
    x1 = check_token_ids(x1, "x1", path.vocab_size)
    n_time = check_positive_int(n_time, "n_time", fix="pass e.g. n_time=64")
    if not 0.0 < t_max <= 1.0:
        raise ConfigError(expected("t_max in (0, 1]", t_max, "keep t_max=1.0 for a bound"))
    cond = check_cond(cond)
    batch = x1.shape[0]
    total = torch.zeros(batch, dtype=torch.float64, device=x1.device)
    below_one = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))    # the largest float32 below 1
    for k in range(n_time):
        u = torch.rand(batch, device=x1.device, generator=generator, dtype=torch.float64)
        t = ((k + u) / n_time * t_max).to(torch.float32).clamp_(max=below_one)
        x_t = path.draw(x1, t, generator=generator).x_t
        logits = call_posterior(model, x_t, t, cond, path.vocab_size)
        total += generalized_kl(logits, x1, x_t, t, path).reshape(batch, -1).sum(1).double()
    return (total * (t_max / n_time)).to(torch.float32)


def elbo_per_token(model: Callable[..., Tensor], x1: Tensor, *, path: MixtureDiscretePath, n_time: int = 64,
                   cond: Mapping[str, Any] | None = None, generator: torch.Generator | None = None,
                   batch_size: int = 256) -> float:
    """The mean negative ELBO per token over all sequences of ``x1`` (nats/token), in batches of ``batch_size``.

    ``exp`` of it bounds the model's perplexity.

    Example:
        >>> path = MixtureDiscretePath(2, source="mask")
        >>> tokens = torch.zeros(400, 3, dtype=torch.long)
        >>> round(elbo_per_token(lambda x, t: torch.zeros(*x.shape, 2), tokens, path=path, n_time=8,
        ...                      generator=torch.Generator().manual_seed(0)), 1)                 # log 2
        0.7
    """
    x1 = check_token_ids(x1, "x1", path.vocab_size)
    batch_size = check_positive_int(batch_size, "batch_size")
    total = sum(float(discrete_elbo(model, chunk, path=path, n_time=n_time, generator=generator,
                                    cond=None if cond is None else {k: v[i:i + batch_size] for k, v in cond.items()}
                                    ).sum())
                for i, chunk in zip(range(0, x1.shape[0], batch_size), x1.split(batch_size)))
    return total / x1.numel()
