r"""Text-like token sequences with an exact likelihood: a seeded character Markov chain of order 1 or 2.

Evaluation data for discrete generative models in the spirit of text8 (27 symbols: ``a``-``z`` and space), but
drawn from a known chain, so that a model's ELBO and samples can be judged against the exact entropy instead of
a held-out estimate. Each context (the previous ``order`` symbols) has its own next-symbol distribution, a
Dirichlet(``concentration``) draw from a seeded generator (small concentrations give peaked, word-like
transitions). The first ``order`` symbols come from the chain's stationary distribution over contexts, so the
process is stationary and

.. math::  \log p(x_{1:L}) = \log \pi(x_{1:k}) + \sum_{i > k} \log T(x_i \mid x_{i-k:i-1}),
           \qquad \tfrac1L H(X_{1:L}) = \tfrac1L\big[H(\pi) + (L - k)\,h\big],

with k = ``order`` and h the entropy rate. No time convention applies (this is data).

Example:
    >>> chain = MarkovText(order=1, seed=0)
    >>> seqs = chain.sample(4, 16, generator=torch.Generator().manual_seed(0))
    >>> seqs.shape, chain.log_prob(seqs).shape
    (torch.Size([4, 16]), torch.Size([4]))
    >>> chain.entropy_per_token(16) < math.log(27)
    True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_count, check_int, check_positive
from flowzoo.core.discrete.path import check_token_ids

__all__ = ["TEXT8_ALPHABET", "MarkovText"]

TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "

Tensor = torch.Tensor


class MarkovText:
    """A stationary character Markov chain of order 1 or 2 over ``vocab_size`` symbols (module doc).

    Args:
        vocab_size: number of symbols (27 for text8's alphabet).
        order: 1 or 2 (previous symbols the next one depends on).
        concentration: Dirichlet concentration of each transition row (smaller: lower entropy).
        seed: seeds the transition rows.

    Attributes:
        transition: (V,)*order + (V,) float64 tensor of next-symbol probabilities.
        initial: (V,)*order float64 tensor, the stationary distribution of the first ``order`` symbols.
    """

    def __init__(self, vocab_size: int = 27, order: int = 1, concentration: float = 0.15, seed: int = 0):
        self.vocab_size = check_int(vocab_size, "vocab_size", low=2)
        self.order = check_int(order, "order", low=1, high=2, fix="pass order=1 or order=2")
        self.concentration = check_positive(concentration, "concentration")
        rng = np.random.default_rng(check_int(seed, "seed", low=0))
        rows = rng.dirichlet(np.full(self.vocab_size, self.concentration), size=self.vocab_size ** self.order)
        rows = np.maximum(rows, 1e-12)  # every transition possible: exact log-probabilities stay finite
        rows /= rows.sum(-1, keepdims=True)
        self.transition = torch.from_numpy(rows).reshape(*(self.vocab_size,) * (self.order + 1))
        self.initial = self._stationary()

    def __repr__(self) -> str:
        return (f"MarkovText(vocab_size={self.vocab_size}, order={self.order}, "
                f"concentration={self.concentration})")

    def _stationary(self) -> Tensor:
        """The stationary distribution over contexts (power iteration on the context chain)."""
        v = self.vocab_size
        if self.order == 1:
            pi = torch.full((v,), 1.0 / v, dtype=torch.float64)
            for _ in range(2000):
                pi = pi @ self.transition
            return pi / pi.sum()
        pair = torch.full((v, v), 1.0 / v ** 2, dtype=torch.float64)
        for _ in range(2000):
            pair = torch.einsum("ab,abc->bc", pair, self.transition)
        return pair / pair.sum()

    def entropy_rate(self) -> float:
        """h = sum over contexts of π(context) H(T(· | context)), nats per symbol."""
        row_entropy = -(self.transition * self.transition.log()).sum(-1)
        return float((self.initial * row_entropy).sum())

    def entropy_per_token(self, length: int) -> float:
        """The exact entropy of a length-``length`` sequence divided by ``length`` (nats/token)."""
        length = check_int(length, "length", low=self.order)
        initial_entropy = float(-(self.initial * self.initial.log()).sum())
        return (initial_entropy + (length - self.order) * self.entropy_rate()) / length

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` sequences of ``length`` symbols, (n, length) long."""
        n = check_count(n, "n")
        length = check_int(length, "length", low=self.order, fix=f"pass length >= order ({self.order})")
        v = self.vocab_size
        first = torch.multinomial(self.initial.reshape(-1).float(), n, replacement=True, generator=generator)
        columns = [first] if self.order == 1 else [first // v, first % v]
        flat = self.transition.reshape(-1, v).float()
        cdf = flat.cumsum(-1)
        for _ in range(length - self.order):
            context = columns[-1] if self.order == 1 else columns[-2] * v + columns[-1]
            u = torch.rand(n, 1, generator=generator) * cdf[context, -1:]
            columns.append(torch.searchsorted(cdf[context], u, right=True).squeeze(1).clamp_(max=v - 1))
        return torch.stack(columns, dim=1)

    def log_prob(self, seqs: Tensor) -> Tensor:
        """The exact log-probability (nats) of each sequence of ``seqs`` (n, L), as (n,) float64."""
        seqs = check_token_ids(seqs, "seqs", self.vocab_size)
        if seqs.dim() != 2 or seqs.shape[1] < self.order:
            raise ConfigError(expected(f"seqs of shape (n, L) with L >= {self.order}", tuple(seqs.shape),
                                       "pass a batch of sequences"))
        log_t = self.transition.log()
        if self.order == 1:
            total = self.initial.log()[seqs[:, 0]]
            return total + log_t[seqs[:, :-1], seqs[:, 1:]].sum(1)
        total = self.initial.log()[seqs[:, 0], seqs[:, 1]]
        return total + log_t[seqs[:, :-2], seqs[:, 1:-1], seqs[:, 2:]].sum(1)

    def nll_per_token(self, seqs: Tensor) -> float:
        """Mean negative log-likelihood per symbol of ``seqs`` under the chain (nats)."""
        return float(-self.log_prob(seqs).sum() / seqs.numel())

    def decode(self, seqs: Tensor, alphabet: str = TEXT8_ALPHABET, mask: str = "_") -> list[str]:
        """Sequences as strings (ids >= len(alphabet), such as a mask id, print as ``mask``).

        Example:
            >>> MarkovText().decode(torch.tensor([[7, 8, 26, 27]]))
            ['hi _']
        """
        if seqs.dim() != 2:
            raise ConfigError(expected("seqs of shape (n, L)", tuple(seqs.shape), "pass a batch of sequences"))
        return ["".join(alphabet[i] if 0 <= i < len(alphabet) else mask for i in row) for row in seqs.tolist()]

