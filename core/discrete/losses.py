r"""Training losses of discrete flow matching: the cross-entropy denoiser and the generalised KL.

A model is ``model(x_t, t, **cond) -> logits (B, L, ..., V)``: the factorised posterior
:math:`p_{1|t}(x_1^i \mid x_t)` over the V data tokens (x1-prediction, Gat et al., arXiv 2407.15595).

* ``kind="cross_entropy"``: :math:`-\log p_{1|t}(x_1^i \mid x_t)` averaged over tokens (arXiv
  2407.15595; Campbell et al., arXiv 2402.04997). Minimised by the true posterior.
* ``kind="generalized_kl"``: the generalised KL between the conditional CTMC rates
  :math:`u_t(y \mid x_t, x_1) = \frac{\dot\kappa_t}{1-\kappa_t}\delta_{x_1}(y)` and the model's
  :math:`\frac{\dot\kappa_t}{1-\kappa_t} p_{1|t}(y \mid x_t)` (:math:`y \ne x_t`), per token

  .. math::  \ell^i = -\frac{\dot\kappa_t}{1-\kappa_t}\Big[p_{1|t}(x_t^i \mid x_t) - \delta_{x_1^i}(x_t^i)
             + (1 - \delta_{x_1^i}(x_t^i))\log p_{1|t}(x_1^i \mid x_t)\Big],

  Shaul et al., "Flow Matching with General Discrete Paths: A Kinetic-Optimal Perspective", arXiv 2412.03487
  (the generalised KL of mixture paths). Its integral over t is the negative ELBO
  (:mod:`flowzoo.core.discrete.likelihood`), so this loss trains the likelihood bound directly.

Time is flowzoo's: t = 0 source, t = 1 data; the weight :math:`\dot\kappa/(1-\kappa)` grows without bound at
t = 1, so the default time sampler draws t from U[0, 1 - 1e-3].

Example:
    >>> import torch
    >>> from flowzoo.core.discrete.path import MixtureDiscretePath
    >>> path = MixtureDiscretePath(5, source="mask")
    >>> model = lambda x, t: torch.zeros(*x.shape, 5)          # uniform posterior
    >>> loss, metrics = DiscreteFlowMatchingLoss(path)(model, {"x1": torch.randint(0, 5, (4, 6))})
    >>> round(loss.item(), 4)                                  # log 5
    1.6094
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from flowzoo.core.batching import per_sample_weight, reduce_weighted
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.paths.timesamplers import TimeSampler, UniformTime
from flowzoo.core.discrete.path import MixtureDiscretePath, check_token_ids

__all__ = ["LOSS_KINDS", "DiscreteFlowMatchingLoss", "generalized_kl", "call_posterior", "check_discrete_batch"]

Tensor = torch.Tensor
LOSS_KINDS = ("cross_entropy", "generalized_kl")
_MODEL_CALL = "model(x_t, t, **cond)"
# Below this many classes a log-softmax over the last dim runs one short row at a time (several times slower,
# forward and backward, on CPU), so such logits are reduced with the vocabulary as dim 1, where the kernel
# vectorises over the tokens; from here on the (tokens, V) rows are the faster layout.
_SHORT_VOCAB = 16


def call_posterior(model: Callable[..., Tensor], x_t: Tensor, t: Tensor, cond: Mapping[str, object],
                   vocab_size: int) -> Tensor:
    """``model(x_t, t, **cond)``, checked to return logits of shape ``x_t.shape + (vocab_size,)``."""
    logits = model(x_t, t, **cond)
    want = (*x_t.shape, vocab_size)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ShapeError(expected(f"{_MODEL_CALL} to return logits of shape {want}", got,
                                  f"end the model with a layer of {vocab_size} outputs (the data tokens; never the "
                                  "mask)"))
    return logits


def generalized_kl(logits: Tensor, x1: Tensor, x_t: Tensor, t: Tensor, path: MixtureDiscretePath) -> Tensor:
    r"""The per-token generalised KL :math:`\ell^i` of the module doc, shaped like ``x1`` (nats per unit time).

    Ids of ``x_t`` outside the data vocabulary (the mask) have :math:`p_{1|t}(x_t^i) = 0`; with the path's
    ``carry_over`` the posterior at unmasked positions is :math:`\delta_{x_t^i}`, so their terms are zero.

    Example:
        >>> path = MixtureDiscretePath(2, source="mask")
        >>> logits = torch.log(torch.tensor([[[0.25, 0.75]]]))
        >>> round(generalized_kl(logits, torch.tensor([[1]]), torch.tensor([[2]]), torch.tensor([0.5]), path).item(), 4)
        0.5754
    """
    vocab = path.vocab_size
    weight = path.scheduler.jump_coefficient(t.float()).reshape(t.shape[0], *([1] * (x1.dim() - 1)))
    if path.carry_over:   # only masked tokens contribute, and there p(x_t) = 0 and x_t != x1: the term is -w log p(x1)
        nll = _token_cross_entropy(logits, x1, reduction="none")
        return torch.where(x_t >= vocab, nll, 0.0) * weight
    log_p = _token_log_softmax(logits)
    # one gather for both ids (x_1 and x_t; the mask clamped into range and zeroed below) halves the backward
    picked = log_p.gather(-1, torch.stack((x1, x_t.clamp(max=vocab - 1) if path.masked else x_t), dim=-1))
    log_p_x1, p_xt = picked[..., 0], picked[..., 1].exp()
    if path.masked:
        p_xt = torch.where(x_t < vocab, p_xt, 0.0)
    # p(x_t) - 1 where x_t = x_1, else p(x_t) + log p(x_1): the bracket of the module doc without its products
    return (p_xt + torch.where(x_t == x1, -1.0, log_p_x1)) * -weight


def _token_cross_entropy(logits: Tensor, x1: Tensor, reduction: str = "mean") -> Tensor:
    r""":math:`-\log p_{1|t}(x_1^i \mid x_t)` per token (shaped like ``x1``), or its mean over all tokens.

    Example:
        >>> round(_token_cross_entropy(torch.zeros(1, 3, 2), torch.tensor([[0, 1, 1]])).item(), 4)   # log 2
        0.6931
    """
    if logits.shape[-1] < _SHORT_VOCAB:   # the vocabulary as the class dim (B, V, L, ...): tokens vectorise
        return torch.nn.functional.cross_entropy(logits.movedim(-1, 1).float(), x1, reduction=reduction)
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x1.reshape(-1),
                                                  reduction=reduction)
    return per_token if reduction == "mean" else per_token.reshape(x1.shape)


def _token_log_softmax(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last dim of ``logits`` (B, L, ..., V) in float32, laid out for speed (as above).

    Example:
        >>> _token_log_softmax(torch.zeros(1, 2, 2)).exp().tolist()
        [[[0.5, 0.5], [0.5, 0.5]]]
    """
    if logits.shape[-1] < _SHORT_VOCAB:
        return torch.log_softmax(logits.movedim(-1, 1).float(), dim=1).movedim(1, -1)
    return torch.log_softmax(logits.float(), dim=-1)


def check_discrete_batch(batch: object, path: MixtureDiscretePath) -> tuple[Tensor, Tensor | None, Tensor | None,
                                                                          dict[str, object]]:
    """Validate a batch ``{"x1": ids (B, L, ...), "x0"?: ids, "weight"?: (B,), **cond}``; return its parts."""
    if not isinstance(batch, Mapping) or "x1" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ConfigError(expected('a batch mapping with token ids under "x1"', got, 'pass {"x1": tokens}'))
    x1 = check_token_ids(batch["x1"], 'batch["x1"]', path.vocab_size)
    x0 = batch.get("x0")
    if x0 is not None:
        x0 = check_token_ids(x0, 'batch["x0"]', path.num_states)
        if x0.shape != x1.shape:
            raise ShapeError(expected('batch["x0"] shaped like batch["x1"]', f"{tuple(x0.shape)}",
                                      "draw the source with the data's shape, or drop x0"))
    weight = batch.get("weight")
    weight = None if weight is None else per_sample_weight(weight, x1.shape[0], 'batch["weight"]')
    cond = {key: value for key, value in batch.items() if key not in ("x0", "x1", "weight")}
    return x1, x0, weight, cond


class DiscreteFlowMatchingLoss:
    """Discrete flow matching on a mixture path (module doc): ``loss(model, batch) -> (scalar, metrics)``.

    Args:
        path: the :class:`~flowzoo.core.discrete.path.MixtureDiscretePath` (vocabulary, source, κ).
        kind: ``"cross_entropy"`` or ``"generalized_kl"``.
        time_sampler: distribution of t (default U[0, 1 - 1e-3]).

    The batch holds ``"x1"`` (token ids, B x L x ...), optional ``"x0"`` (source ids; drawn from the path's
    source when absent), optional ``"weight"`` (B,) and conditioning keys passed to the model. The per-token
    loss is averaged over each sequence, then over the (weighted) batch. Metrics: ``loss``.
    """

    def __init__(self, path: MixtureDiscretePath, kind: str = "cross_entropy", time_sampler: TimeSampler | None = None):
        if not isinstance(path, MixtureDiscretePath):
            raise ConfigError(expected("path as a MixtureDiscretePath", type(path).__name__,
                                       "pass MixtureDiscretePath(vocab_size, source='mask')"))
        if kind not in LOSS_KINDS:
            raise ConfigError(expected(f"kind in {LOSS_KINDS}", repr(kind), "use 'cross_entropy'"))
        if time_sampler is not None and not isinstance(time_sampler, TimeSampler):
            raise ConfigError(expected("a TimeSampler", type(time_sampler).__name__, "pass UniformTime(0, 0.999)"))
        self.path, self.kind = path, kind
        self.time_sampler = time_sampler or UniformTime(0.0, 1.0 - 1e-3)

    def __repr__(self) -> str:
        return f"DiscreteFlowMatchingLoss(path={self.path!r}, kind={self.kind!r}, time_sampler={self.time_sampler!r})"

    def __call__(self, model: Callable[..., Tensor], batch: Mapping[str, object],
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        x1, x0, weight, cond = check_discrete_batch(batch, self.path)
        t = self.time_sampler.sample(x1.shape[0], device=x1.device, generator=generator)
        x_t = self.path.draw(x1, t, x0=x0, generator=generator).x_t
        logits = call_posterior(model, x_t, t, cond, self.path.vocab_size)
        if self.kind == "cross_entropy" and weight is None:
            # every sequence has the same number of tokens: the mean of sequence means is the token mean
            loss = _token_cross_entropy(logits, x1)
        else:
            per_token = (_token_cross_entropy(logits, x1, reduction="none") if self.kind == "cross_entropy"
                         else generalized_kl(logits, x1, x_t, t, self.path))
            loss = per_token.mean() if weight is None else reduce_weighted(
                per_token.reshape(x1.shape[0], -1).mean(1), weight)
        return loss, {"loss": float(loss.detach())}
