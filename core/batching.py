"""Batches of flowzoo objectives: unpacking, validation, weighting and the model call.

A batch is a mapping: ``"x1"`` (data, required), ``"x0"`` (source samples; standard Gaussian noise shaped
like x1 when absent), ``"weight"`` (per-sample weights, shape (B,)); every other key is conditioning, a
tensor with the batch first, passed to the model as a keyword argument: ``model(x_t, t, **cond)``.

Every objective of flowzoo.core (and of the domain packages) builds on these helpers, so that a batch is
read and checked the same way everywhere and a bad one fails with the same message.

Reductions. A per-sample loss is averaged over the non-batch dimensions (:func:`per_sample_mean`); the
batch loss is :math:`\\frac1B\\sum_i w_i \\ell_i` (:func:`reduce_weighted`) -- weights are divided by the
batch size, not by their sum, so a zero weight drops its sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from flowzoo.core.validation import check_finite, check_same_shape, check_tensor
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.paths import PathSample, StochasticInterpolant
from flowzoo.core.paths import UniformTime

__all__ = ["Batch", "RESERVED_KEYS", "unpack_batch", "couple_batch", "raise_if_batch_not_finite", "per_sample_weight",
           "per_sample_mean", "reduce_weighted", "check_time_sampler", "sample_time", "sample_path", "call_model",
           "call_flowmap", "drop_conditions"]

Tensor = torch.Tensor
Model = Callable[..., Tensor]
RESERVED_KEYS = ("x0", "x1", "weight")


@dataclass
class Batch:
    x0: Tensor
    x1: Tensor
    weight: Tensor | None
    cond: dict[str, Tensor]


def per_sample_weight(w: object, batch: int, name: str) -> Tensor:
    w = check_tensor(w, name)
    if w.shape != (batch,):
        raise ShapeError(expected(f"{name} of shape ({batch},), one weight per sample", f"shape {tuple(w.shape)}",
                                  "pass a 1-D weight tensor as long as the batch"))
    if bool((w < 0).any()):
        raise ConfigError(expected(f"non-negative {name}", f"minimum {w.min().item():.4g}",
                                   "weights scale each sample's loss; use 0 to drop a sample"))
    return w


def unpack_batch(batch: object, generator: torch.Generator | None, finite: bool = True) -> Batch:
    """Validate a batch mapping and split it into source, data, weights and conditioning.

    ``finite=False`` defers the NaN/Inf scan of x0/x1 to :func:`raise_if_batch_not_finite`, which a caller runs
    only when its loss came out non-finite: the same error for bad input, no extra kernels otherwise.
    """
    if not isinstance(batch, Mapping):
        raise DTypeError(expected('a batch mapping with key "x1" (and optional "x0", "weight", conditioning)',
                                  type(batch).__name__, 'pass {"x1": data}'))
    if "x1" not in batch:
        raise ConfigError(expected('the data under batch["x1"]', f"keys {sorted(map(str, batch))}",
                                   'rename the data key to "x1" (the source, if any, to "x0")'))
    x1 = check_tensor(batch["x1"], 'batch["x1"]', finite=finite)
    n = x1.shape[0]
    if batch.get("x0") is None:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    else:
        x0 = check_tensor(batch["x0"], 'batch["x0"]', finite=finite)
        check_same_shape(x0, x1, ('batch["x0"]', 'batch["x1"]'))
    weight = None if batch.get("weight") is None else per_sample_weight(batch["weight"], n, 'batch["weight"]')
    cond: dict[str, Tensor] = {}
    for key, value in batch.items():
        if key in RESERVED_KEYS:
            continue
        if not isinstance(key, str):
            raise DTypeError(expected("string keys (passed to the model as keyword arguments)", repr(key),
                                      "rename the key"))
        if not isinstance(value, Tensor):
            raise DTypeError(expected(f'conditioning batch["{key}"] as a tensor', type(value).__name__,
                                      "convert it with torch.as_tensor, or keep it out of the batch"))
        if value.dim() == 0 or value.shape[0] != n:
            raise ShapeError(expected(f'conditioning batch["{key}"] with the batch size {n} first',
                                      f"shape {tuple(value.shape)}", "give one condition per sample"))
        if value.is_floating_point():  # a model may ignore a condition, so scan it now
            check_finite(value, f'batch["{key}"]')
        cond[key] = value
    return Batch(x0, x1, weight, cond)


def couple_batch(coupling: Callable, data: Batch) -> Batch:
    """Re-pair a batch's (x0, x1) with ``coupling`` (a ``flowzoo.core.couplings.minibatch`` object); conditioning and
    weights follow x1 through the pairing's ``index1``, and a pairing weight multiplies the batch weight."""
    n = data.x1.shape[0]
    pairing = coupling(data.x0, data.x1, cond0=None, cond1=data.cond or None)
    x0, x1 = pairing.x0, pairing.x1
    check_same_shape(x0, x1, ("Pairing.x0", "Pairing.x1"))
    cond, weight = data.cond, data.weight
    index1 = getattr(pairing, "index1", None)
    if index1 is not None:
        index1 = torch.as_tensor(index1, device=data.x1.device, dtype=torch.long)
        cond = {k: v[index1] for k, v in cond.items()}
        weight = None if weight is None else weight[index1]
    elif x1.shape[0] != n and (cond or weight is not None):
        raise ShapeError(expected("a Pairing that keeps the batch's rows or gives index1",
                                  f"{x1.shape[0]} pairs from {n} samples and no index1",
                                  "return index1 so that conditioning and weights can follow the data"))
    pair_weight = getattr(pairing, "weight", None)
    if pair_weight is not None:
        pair_weight = per_sample_weight(pair_weight, x1.shape[0], "Pairing.weight")
        weight = pair_weight if weight is None else weight * pair_weight
    return Batch(x0, x1, weight, cond)


def raise_if_batch_not_finite(batch: Mapping[str, object]) -> None:
    """Raise NonFiniteError naming the first batch entry that holds NaN/Inf (none: the model diverged)."""
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.is_floating_point():
            check_finite(value, f'batch["{key}"]')


def check_time_sampler(time_sampler: object):
    time_sampler = UniformTime() if time_sampler is None else time_sampler
    if not callable(getattr(time_sampler, "sample", None)):
        raise ConfigError(expected("a time sampler with .sample(n, device=None, generator=None)",
                                   type(time_sampler).__name__, "use e.g. flowzoo.core.paths.timesamplers.UniformTime()"))
    return time_sampler


def sample_time(time_sampler, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    t = time_sampler.sample(n, device=like.device, generator=generator)
    return t if t.dtype == like.dtype else t.to(like.dtype)


def sample_path(path, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None) -> PathSample:
    """Sample the path; the batch is validated already, so skip the path's own checks when it allows."""
    if isinstance(path, StochasticInterpolant):
        return path.sample_unchecked(x0, x1, t, generator=generator)
    unchecked = getattr(path, "sample_unchecked", None)
    return unchecked(x0, x1, t) if unchecked is not None else path.sample(x0, x1, t)


def call_model(model: Model, x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
    out = model(x, t, **cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(expected(f"the model to return a tensor shaped like x_t {tuple(x.shape)}", got,
                                  "make model(x, t, **cond) return one output per input entry"))
    return out


def call_flowmap(model: Model, x: Tensor, s: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
    """``model(x, s, t, **cond)``, the average velocity of a two-time (flow-map) model over [s, t], checked to
    have x's shape (the objectives' counterpart of :func:`call_model`)."""
    out = model(x, s, t, **cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(expected(f"the flow map to return a tensor shaped like x {tuple(x.shape)}", got,
                                  "make model(x, s, t, **cond) return the average velocity with x's shape"))
    return out


def drop_conditions(cond: Mapping[str, Tensor], null_cond: Mapping[str, object], probability: float, n: int,
                    device: torch.device, generator: torch.Generator | None) -> tuple[dict[str, Tensor], Tensor]:
    """Condition dropout for classifier-free guidance (Ho & Salimans, arXiv 2207.12598): each of the ``n``
    samples independently, with ``probability``, gets ``null_cond[key]`` in place of ``cond[key]`` for every
    key of ``null_cond`` (other keys, e.g. masks, are kept). Returns the new conditioning and the (n,) bool mask
    of dropped samples. One mask serves every key, so a dropped sample loses all its conditions at once.
    """
    missing = sorted(set(null_cond) - set(cond))
    if missing:
        raise ConfigError(expected(f"the batch to hold the conditioning keys of null_cond {sorted(null_cond)}",
                                   f"conditioning keys {sorted(cond)}", f"add {missing} to the batch or "
                                   "remove them from null_cond"))
    dropped = torch.rand(n, generator=generator, device=device) < probability
    cond = dict(cond)
    for key, fill in null_cond.items():
        value = cond[key]
        fill = torch.as_tensor(fill, dtype=value.dtype, device=value.device)
        try:
            fill = torch.broadcast_to(fill, value.shape[1:])
        except RuntimeError:
            raise ShapeError(expected(f'null_cond["{key}"] broadcastable to one sample\'s condition '
                                      f"{tuple(value.shape[1:])}", f"shape {tuple(fill.shape)}",
                                      "pass a scalar or a tensor shaped like one condition")) from None
        cond[key] = torch.where(dropped.reshape(n, *([1] * (value.dim() - 1))), fill, value)
    return cond, dropped


def per_sample_mean(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def reduce_weighted(per_sample: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return per_sample.mean()
    return (weight * per_sample).sum() / per_sample.shape[0]
