r"""The factorised mixture path of discrete flow matching, its sources (masked, uniform) and token checks.

Gat et al., "Discrete Flow Matching", arXiv 2407.15595 (and Campbell et al., arXiv 2402.04997 for
the masked and uniform sources): every token of a sequence moves independently along

.. math::  p_t(x^i \mid x_0, x_1) = (1 - \kappa_t)\,\delta_{x_0^i}(x^i) + \kappa_t\,\delta_{x_1^i}(x^i),
           \qquad x_0 \sim p_0,

so with :math:`x_0` integrated out,
:math:`p_t(x^i \mid x_1) = (1 - \kappa_t)\,p_0(x^i) + \kappa_t\,\delta_{x_1^i}(x^i)`.
Time is flowzoo's (and the paper's): t = 0 source, t = 1 data. The source is either the *mask* distribution
(every token is one extra mask id, outside the data vocabulary) or the *uniform* distribution over the data
vocabulary. A model sees token ids in ``[0, num_states)`` (the vocabulary plus the mask id, if any) and
predicts logits over the ``vocab_size`` data tokens only: a model can never propose the mask.

Example:
    >>> import torch
    >>> path = MixtureDiscretePath(4, source="mask")
    >>> path.num_states, path.source.mask_id
    (5, 4)
    >>> out = path.sample(torch.tensor([[0, 1, 2, 3]]), torch.tensor([0.0]))
    >>> out.x_t.tolist()
    [[4, 4, 4, 4]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, ShapeError, expected
from flowzoo.core.validation import check_bool, check_int, check_positive_int, check_unit_time
from flowzoo.core.discrete.schedulers import ConvexScheduler, LinearConvexScheduler

__all__ = ["SOURCES", "DiscreteSource", "masked_source", "uniform_source", "DiscretePathSample",
           "MixtureDiscretePath", "check_token_ids"]

Tensor = torch.Tensor
SOURCES = ("mask", "uniform")


def check_token_ids(x: object, name: str, num_states: int, *, min_dim: int = 2) -> Tensor:
    """``x`` as an integer tensor of token ids in ``[0, num_states)`` with at least ``min_dim`` dims (B, L, ...).

    Raises DTypeError for floats and bools, ShapeError / EmptyInputError for a bad shape, ConfigError for ids
    outside the range.

    Example:
        >>> check_token_ids(torch.tensor([[0, 5]]), "x1", 4)
        Traceback (most recent call last):
            ...
        flowzoo.core.errors.ConfigError: expected x1 as token ids in [0, 4); received ids in [0, 5]. Fix: map the tokens to 0..3 (the data vocabulary), or build the path with a larger vocab_size
    """
    if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise DTypeError(expected(f"{name} as an integer tensor of token ids", getattr(x, "dtype", type(x).__name__),
                                  f"pass token ids as a torch.long tensor, e.g. {name}.long() or logits.argmax(-1)"))
    if x.dim() < min_dim:
        raise ShapeError(expected(f"{name} with at least {min_dim} dimensions (batch, length, ...)",
                                  f"shape {tuple(x.shape)}", "add a batch dimension, e.g. x[None]"))
    if x.numel() == 0:
        raise EmptyInputError(expected(f"a non-empty {name}", f"shape {tuple(x.shape)}", "pass at least one token"))
    low, high = (int(v) for v in torch.aminmax(x))
    if low < 0 or high >= num_states:
        raise ConfigError(expected(f"{name} as token ids in [0, {num_states})", f"ids in [{low}, {high}]",
                                   f"map the tokens to 0..{num_states - 1} (the data vocabulary), or build the path "
                                   "with a larger vocab_size"))
    return x if x.dtype == torch.long else x.long()


@dataclass(frozen=True)
class DiscreteSource:
    """The source distribution :math:`p_0` of a mixture path, factorised over tokens.

    Attributes:
        kind: ``"mask"`` (all mass on ``mask_id``) or ``"uniform"`` (uniform over the data vocabulary).
        vocab_size: V, the number of data tokens (ids ``0 .. V-1``).
        mask_id: the mask token's id (``>= V``) for the masked source, ``None`` for the uniform one.

    Example:
        >>> masked_source(3).probs().tolist()
        [0.0, 0.0, 0.0, 1.0]
    """

    kind: str
    vocab_size: int
    mask_id: int | None = None

    def __post_init__(self):
        if self.kind not in SOURCES:
            raise ConfigError(expected(f"a source in {SOURCES}", repr(self.kind), "use source='mask' or 'uniform'"))
        check_int(self.vocab_size, "vocab_size", low=2 if self.kind == "uniform" else 1)
        if self.kind == "uniform" and self.mask_id is not None:
            raise ConfigError(expected("no mask_id for the uniform source", self.mask_id, "drop mask_id"))
        if self.kind == "mask":
            mask_id = check_int(self.mask_id, "mask_id", low=0)
            if mask_id < self.vocab_size:
                raise ConfigError(expected(f"a mask_id outside the data vocabulary (>= vocab_size {self.vocab_size})",
                                           mask_id, f"use mask_id={self.vocab_size}, the default"))

    @property
    def num_states(self) -> int:
        """How many token ids a model may receive: V, or ``mask_id + 1`` for the masked source."""
        return self.vocab_size if self.mask_id is None else self.mask_id + 1

    def probs(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """:math:`p_0` over the ``num_states`` ids (zeros on unused ids between V and the mask id)."""
        p = torch.zeros(self.num_states, device=device, dtype=dtype)
        if self.mask_id is None:
            p.fill_(1.0 / self.vocab_size)
        else:
            p[self.mask_id] = 1.0
        return p

    def sample(self, shape: tuple[int, ...] | torch.Size, *, device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Draw source tokens of the given shape (long)."""
        if self.mask_id is not None:
            return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)
        return torch.randint(0, self.vocab_size, tuple(shape), device=device, generator=generator)


def masked_source(vocab_size: int, mask_id: int | None = None) -> DiscreteSource:
    """The masked source: every token starts as ``mask_id`` (default ``vocab_size``, one id past the data)."""
    return DiscreteSource("mask", vocab_size, vocab_size if mask_id is None else mask_id)


def uniform_source(vocab_size: int) -> DiscreteSource:
    """The uniform source over the ``vocab_size`` data tokens."""
    return DiscreteSource("uniform", vocab_size)


@dataclass(frozen=True)
class DiscretePathSample:
    """A draw from the mixture path: source ``x0``, data ``x1``, times ``t`` (B,) and the state ``x_t``."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    x_t: Tensor


class MixtureDiscretePath:
    r"""The factorised mixture path :math:`x_t^i = x_1^i` with probability :math:`\kappa_t`, else :math:`x_0^i`.

    Args:
        vocab_size: V, the number of data tokens.
        source: ``"mask"``, ``"uniform"`` or a :class:`DiscreteSource` (whose vocab_size must be V).
        scheduler: the :class:`~flowzoo.core.discrete.schedulers.ConvexScheduler` κ(t) (default linear).
        mask_id: the mask token's id for ``source="mask"`` (default V).
        carry_over: masked source only (default True there): an unmasked token is final, so the posterior at
            an unmasked position is taken as :math:`\delta_{x_t^i}` whatever the model says (Sahoo et al.,
            arXiv 2406.07524, "carry-over unmasking"). The sampler then never changes an unmasked token (except
            to re-mask it under ``div_free``), and the ELBO is the masked-token bound. ``False`` uses the model's
            posterior everywhere, as facebookresearch/flow_matching does.

    Example:
        >>> path = MixtureDiscretePath(3, source="uniform")
        >>> path.marginal_probs(torch.tensor([[2]]), torch.tensor([0.5])).tolist()
        [[[0.1666666716337204, 0.1666666716337204, 0.6666666865348816]]]
    """

    def __init__(self, vocab_size: int, source: str | DiscreteSource = "mask",
                 scheduler: ConvexScheduler | None = None, mask_id: int | None = None,
                 carry_over: bool | None = None):
        vocab_size = check_positive_int(vocab_size, "vocab_size", fix="pass the number of data tokens")
        if isinstance(source, DiscreteSource):
            if source.vocab_size != vocab_size or mask_id is not None:
                raise ConfigError(expected(f"a source over the same vocab_size {vocab_size} (and no extra mask_id)",
                                           source, "build the source with the path's vocab_size"))
        elif source == "mask":
            source = masked_source(vocab_size, mask_id)
        elif source == "uniform":
            if mask_id is not None:
                raise ConfigError(expected("no mask_id for the uniform source", mask_id, "drop mask_id"))
            source = uniform_source(vocab_size)
        else:
            raise ConfigError(expected(f"source in {SOURCES} or a DiscreteSource", repr(source), "use 'mask'"))
        scheduler = LinearConvexScheduler() if scheduler is None else scheduler
        if not isinstance(scheduler, ConvexScheduler):
            raise ConfigError(expected("a ConvexScheduler", type(scheduler).__name__,
                                       "pass e.g. PolynomialConvexScheduler(1.0)"))
        self.vocab_size, self.source, self.scheduler = vocab_size, source, scheduler
        if carry_over is not None:
            check_bool(carry_over, "carry_over")
            if carry_over and source.kind != "mask":
                raise ConfigError(expected("carry_over only with the masked source", "carry_over=True with "
                                           f"source={source.kind!r}", "drop carry_over for the uniform source"))
        self.carry_over = source.kind == "mask" if carry_over is None else carry_over

    def carry_over_probs(self, probs: Tensor, x_t: Tensor) -> Tensor:
        r"""The posterior (..., V) with unmasked positions set to :math:`\delta_{x_t^i}` when ``carry_over``."""
        if not self.carry_over:
            return probs
        unmasked = (x_t < self.vocab_size).unsqueeze(-1)
        one_hot = torch.nn.functional.one_hot(x_t.clamp(max=self.vocab_size - 1), self.vocab_size).to(probs.dtype)
        return torch.where(unmasked, one_hot, probs)

    @property
    def num_states(self) -> int:
        """Token ids a model receives: V, plus the mask id for the masked source."""
        return self.source.num_states

    @property
    def masked(self) -> bool:
        """Whether the source is the mask."""
        return self.source.kind == "mask"

    def __repr__(self) -> str:
        return (f"MixtureDiscretePath(vocab_size={self.vocab_size}, source={self.source!r}, "
                f"scheduler={self.scheduler!r}, carry_over={self.carry_over})")

    def sample(self, x1: Tensor, t: Tensor | float, *, x0: Tensor | None = None,
               generator: torch.Generator | None = None) -> DiscretePathSample:
        """Draw :math:`x_t` given data ``x1`` (B, L, ...) and times ``t`` (B,); ``x0`` defaults to a source draw.

        A token keeps its source value where ``u < 1 - κ_t`` for ``u ~ U[0, 1)`` (one draw per token).
        """
        x1 = check_token_ids(x1, "x1", self.vocab_size)
        t = check_unit_time(t, torch.empty(x1.shape[0], device=x1.device), "t")
        if x0 is not None:
            x0 = check_token_ids(x0, "x0", self.num_states)
            if x0.shape != x1.shape:
                raise ShapeError(expected("x0 shaped like x1", f"{tuple(x0.shape)} and {tuple(x1.shape)}",
                                          "draw the source with the data's shape"))
        return self.draw(x1, t, x0=x0, generator=generator)

    def draw(self, x1: Tensor, t: Tensor, *, x0: Tensor | None = None,
             generator: torch.Generator | None = None) -> DiscretePathSample:
        """:meth:`sample` without its input checks, for callers that validated ``x1``, ``t`` and ``x0`` already
        (a loss or an estimator that calls it every step)."""
        if x0 is None:
            x0 = self.source.sample(x1.shape, device=x1.device, generator=generator)
        keep_source = self.keep_source_mask(x1, t, generator)
        return DiscretePathSample(x0=x0, x1=x1, t=t, x_t=torch.where(keep_source, x0, x1))

    def keep_source_mask(self, x1: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Boolean (B, L, ...): which tokens are still at the source at time t (probability 1 - κ_t each)."""
        kappa = self.scheduler.kappa(t).reshape(t.shape[0], *([1] * (x1.dim() - 1)))
        u = torch.rand(x1.shape, device=x1.device, generator=generator, dtype=kappa.dtype)
        return u < 1.0 - kappa

    def marginal_probs(self, x1: Tensor, t: Tensor) -> Tensor:
        r""":math:`p_t(x^i \mid x_1) = (1 - \kappa_t)\,p_0 + \kappa_t\,\delta_{x_1^i}`: (B, L, ..., num_states)."""
        x1 = check_token_ids(x1, "x1", self.vocab_size)
        kappa = self.scheduler.kappa(t.float()).reshape(t.shape[0], *([1] * x1.dim()))
        one_hot = torch.nn.functional.one_hot(x1, self.num_states).to(kappa.dtype)
        return (1.0 - kappa) * self.source.probs(x1.device, kappa.dtype) + kappa * one_hot
