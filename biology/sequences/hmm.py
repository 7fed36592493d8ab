r"""A planted-motif hidden Markov model: sequence data whose statistics are known exactly.

Evaluation data for sequence generators: synthetic motif sequences whose likelihood and k-mer statistics have
closed forms, so a generator is judged against the true model rather than against held-out samples. The model
has ``B`` background states and ``m`` motif states at alphabet size K:

* background state b emits from its own distribution (a Dirichlet(``concentration``) draw, seeded), stays with
  probability :math:`1 - p_{enter} - p_{switch}`, moves to another background state with :math:`p_{switch}`
  (split evenly) and enters the motif with :math:`p_{enter}`;
* motif state j emits the planted letter ``motif[j]`` with probability ``motif_fidelity`` (the rest spread
  evenly over the other letters) and moves to j + 1 with probability 1; the last motif state returns to a
  background state chosen uniformly;
* the chain starts in a uniformly chosen background state.

Because the parameters are known, the likelihood of any sequence is exact (forward algorithm in log space,
vectorised over the batch), and so is the expected k-mer distribution
:math:`P(x_i..x_{i+k-1})` averaged over positions (state marginals :math:`\pi_i = \pi_0 T^i` propagated
through k emissions). Generated sequences are judged by their true-model negative log-likelihood per
token, the Jensen–Shannon divergence (nats, at most ln 2) of their k-mer histogram from the exact one,
motif counts / occupancy (fraction of sequences holding the motif at least once) and diversity (mean
pairwise Hamming distance per position, fraction of unique sequences).

Example:
    >>> hmm = planted_motif_hmm(4, seed=0)
    >>> tokens = hmm.sample(8, 32, generator=torch.Generator().manual_seed(0))
    >>> tokens.shape, hmm.log_likelihood(tokens).shape
    (torch.Size([8, 32]), torch.Size([8]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, ShapeError, expected
from flowzoo.core.validation import check_int

__all__ = [
    "PlantedMotifHMM",
    "planted_motif_hmm",
    "kmer_frequencies",
    "js_divergence",
    "kmer_js_divergence",
    "motif_counts",
    "motif_occupancy",
    "mean_pairwise_hamming",
    "unique_fraction",
    "uniform_nll",
    "check_tokens",
]

DEFAULT_MOTIF_LENGTH = {4: 6, 20: 4, 64: 3}


def check_tokens(tokens: object, alphabet_size: int, name: str = "tokens") -> torch.Tensor:
    """Check an integer index tensor (N, L) with values in [0, K)."""
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        received = getattr(tokens, "dtype", type(tokens).__name__)
        raise DTypeError(expected(f"{name} as an integer tensor (N, L)", received,
                                  "pass token indices, e.g. probabilities.argmax(-1)"))
    if tokens.dim() != 2:
        raise ShapeError(expected(f"{name} of shape (N, L)", tuple(tokens.shape), "stack sequences into a batch"))
    if tokens.numel() == 0:
        raise EmptyInputError(expected(f"a non-empty {name}", tuple(tokens.shape), "pass at least one sequence"))
    if int(tokens.min()) < 0 or int(tokens.max()) >= alphabet_size:
        raise ShapeError(expected(f"{name} values in [0, {alphabet_size})",
                                  f"range [{int(tokens.min())}, {int(tokens.max())}]", "use the model's alphabet size"))
    return tokens


class PlantedMotifHMM:
    """An HMM with background states and a planted motif (see the module doc).

    Args:
        alphabet_size: K, the number of letters.
        motif: the planted motif as letter indices.
        background_states: B.
        concentration: Dirichlet concentration of the background emissions (small: peaked).
        p_enter: probability of entering the motif from a background state.
        p_switch: probability of moving to another background state.
        motif_fidelity: probability that a motif state emits its planted letter.
        seed: seed of the background emission draws.
    """

    def __init__(self, alphabet_size: int, motif: Sequence[int], background_states: int = 3,
                 concentration: float = 0.3, p_enter: float = 0.03, p_switch: float = 0.05,
                 motif_fidelity: float = 0.95, seed: int = 0):
        check_int(alphabet_size, "alphabet_size", low=2, fix="use 4, 20 or 64")
        motif = [int(m) for m in motif]
        if not motif or any(not 0 <= m < alphabet_size for m in motif):
            raise ConfigError(expected(f"a non-empty motif of indices in [0, {alphabet_size})", motif,
                                       "encode the motif with the alphabet"))
        if background_states < 1 or not 0 < p_enter < 1 or not 0 <= p_switch < 1 - p_enter:
            raise ConfigError(expected("background_states >= 1, 0 < p_enter < 1, 0 <= p_switch < 1 - p_enter",
                                       (background_states, p_enter, p_switch), "keep the defaults"))
        if not 1.0 / alphabet_size <= motif_fidelity <= 1 or concentration <= 0:
            raise ConfigError(expected("motif_fidelity in [1/K, 1] and concentration > 0",
                                       (motif_fidelity, concentration), "keep the defaults"))
        self.alphabet_size, self.motif = alphabet_size, motif
        self.background_states = background_states
        b, m, k = background_states, len(motif), alphabet_size
        s = b + m
        rng = np.random.default_rng(seed)
        background = torch.from_numpy(rng.dirichlet(np.full(k, float(concentration)), size=b))
        background = background.clamp_min(1e-12)
        emission = torch.empty(s, k, dtype=torch.float64)
        emission[:b] = background / background.sum(1, keepdim=True)
        off = (1 - motif_fidelity) / (k - 1)
        emission[b:] = off
        emission[torch.arange(b, s), torch.tensor(motif)] = motif_fidelity
        transition = torch.zeros(s, s, dtype=torch.float64)
        transition[:b, :b] = p_switch / (b - 1) if b > 1 else 0.0
        transition[torch.arange(b), torch.arange(b)] = 1 - p_enter - (p_switch if b > 1 else 0.0)
        transition[:b, b] = p_enter
        for j in range(m - 1):
            transition[b + j, b + j + 1] = 1.0
        transition[b + m - 1, :b] = 1.0 / b
        initial = torch.zeros(s, dtype=torch.float64)
        initial[:b] = 1.0 / b
        self.initial, self.transition, self.emission = initial, transition, emission

    @property
    def num_states(self) -> int:
        return self.initial.numel()

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` sequences of ``length`` letters: tokens (n, length)."""
        return self.sample_with_states(n, length, generator)[0]

    def sample_with_states(self, n: int, length: int,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` sequences and their hidden states: ``(tokens, states)``, both (n, length)."""
        if n < 1 or length < 1:
            raise ConfigError(expected("n >= 1 and length >= 1", (n, length), "ask for at least one letter"))
        states = torch.empty(n, length, dtype=torch.long)
        states[:, 0] = torch.multinomial(self.initial.expand(n, -1), 1, generator=generator)[:, 0]
        for i in range(1, length):
            states[:, i] = torch.multinomial(self.transition[states[:, i - 1]], 1, generator=generator)[:, 0]
        flat = torch.multinomial(self.emission[states.reshape(-1)], 1, generator=generator)[:, 0]
        return flat.reshape(n, length), states

    def log_likelihood(self, tokens: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) (n,) in nats by the forward algorithm in log space (float64)."""
        tokens = check_tokens(tokens, self.alphabet_size)
        log_t, log_e = self.transition.log(), self.emission.log()
        log_alpha = self.initial.log()[None] + log_e[:, tokens[:, 0]].T
        for i in range(1, tokens.shape[1]):
            log_alpha = torch.logsumexp(log_alpha[:, :, None] + log_t[None], dim=1) + log_e[:, tokens[:, i]].T
        return torch.logsumexp(log_alpha, dim=1)

    def nll_per_token(self, tokens: torch.Tensor) -> float:
        """Mean negative log-likelihood per letter (nats)."""
        return float(-self.log_likelihood(tokens).mean() / tokens.shape[1])

    def state_marginals(self, length: int) -> torch.Tensor:
        """P(state at position i) for i < length: (length, S)."""
        out = torch.empty(length, self.num_states, dtype=torch.float64)
        out[0] = self.initial
        for i in range(1, length):
            out[i] = out[i - 1] @ self.transition
        return out

    def exact_kmer_distribution(self, length: int, k: int = 3) -> torch.Tensor:
        """Exact distribution (K**k,) of the k-mer at a uniformly chosen start in a sequence of ``length``."""
        if not 1 <= k <= length:
            raise ConfigError(expected(f"1 <= k <= length ({length})", k, "use k = 3"))
        marginals = self.state_marginals(length - k + 1).mean(0)
        # joint[s, w] = P(state after the emitted prefix w is s, prefix w), grown one letter at a time.
        joint = marginals[:, None] * self.emission
        for _ in range(k - 1):
            moved = torch.einsum("sw,st->tw", joint, self.transition)
            joint = (moved[:, :, None] * self.emission[:, None, :]).reshape(self.num_states, -1)
        return joint.sum(0)

    def expected_motif_visits(self, length: int) -> float:
        """Exact expected number of passes through the motif start state in a sequence of ``length``."""
        return float(self.state_marginals(length)[:, self.background_states].sum())


def planted_motif_hmm(alphabet_size: int, seed: int = 0, motif_length: int | None = None, **kwargs) -> PlantedMotifHMM:
    """The preset used by tests and benchmarks: a random motif of ``motif_length`` distinct-neighbour letters.

    ``motif_length`` defaults to 6, 4 and 3 at K = 4, 20 and 64 (about as specific as one another), else 4.
    """
    length = motif_length or DEFAULT_MOTIF_LENGTH.get(alphabet_size, 4)
    gen = torch.Generator().manual_seed(10_000 + seed)
    motif = [int(torch.randint(0, alphabet_size, (1,), generator=gen))]
    while len(motif) < length:
        letter = int(torch.randint(0, alphabet_size, (1,), generator=gen))
        if letter != motif[-1]:
            motif.append(letter)
    return PlantedMotifHMM(alphabet_size, motif, seed=seed, **kwargs)


def kmer_frequencies(tokens: torch.Tensor, alphabet_size: int, k: int = 3) -> torch.Tensor:
    """Normalised histogram (K**k,) of the overlapping k-mers of sequences (N, L)."""
    tokens = check_tokens(tokens, alphabet_size)
    if not 1 <= k <= tokens.shape[1]:
        raise ConfigError(expected(f"1 <= k <= L ({tokens.shape[1]})", k, "use k = 3"))
    windows = tokens.unfold(1, k, 1)
    powers = alphabet_size ** torch.arange(k - 1, -1, -1)
    codes = (windows * powers).sum(-1).reshape(-1)
    counts = torch.bincount(codes, minlength=alphabet_size ** k).to(torch.float64)
    return counts / counts.sum()


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen–Shannon divergence (nats, in [0, ln 2]) between two distributions of the same support."""
    p, q = p.to(torch.float64) / p.sum(), q.to(torch.float64) / q.sum()
    mid = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        mask = a > 0
        return (a[mask] * (a[mask] / mid[mask]).log()).sum()

    return float(0.5 * kl(p) + 0.5 * kl(q))


def kmer_js_divergence(tokens: torch.Tensor, reference: torch.Tensor | PlantedMotifHMM, alphabet_size: int,
                       k: int = 3) -> float:
    """JS divergence of the k-mer histogram of ``tokens`` from ``reference`` (sequences, or an HMM: exact)."""
    observed = kmer_frequencies(tokens, alphabet_size, k)
    if isinstance(reference, PlantedMotifHMM):
        target = reference.exact_kmer_distribution(tokens.shape[1], k)
    else:
        target = kmer_frequencies(reference, alphabet_size, k)
    return js_divergence(observed, target)


def motif_counts(tokens: torch.Tensor, motif: Sequence[int]) -> torch.Tensor:
    """Occurrences (overlapping) of ``motif`` in each sequence: (N,) integers."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ShapeError(expected("tokens of shape (N, L)", getattr(tokens, "shape", type(tokens).__name__),
                                  "stack sequences into a batch"))
    motif_t = torch.as_tensor(list(motif), dtype=tokens.dtype, device=tokens.device)
    if motif_t.numel() == 0 or motif_t.numel() > tokens.shape[1]:
        return torch.zeros(tokens.shape[0], dtype=torch.long)
    windows = tokens.unfold(1, motif_t.numel(), 1)
    return (windows == motif_t).all(-1).sum(1)


def motif_occupancy(tokens: torch.Tensor, motif: Sequence[int]) -> float:
    """Fraction of sequences holding ``motif`` at least once."""
    return float((motif_counts(tokens, motif) > 0).float().mean())


def mean_pairwise_hamming(tokens: torch.Tensor) -> float:
    """Mean Hamming distance per position over all pairs of distinct sequences (0: all equal).

    Computed from per-position letter counts c: the fraction of unequal pairs at a position is
    1 - sum_k c_k (c_k - 1) / (N (N - 1)), so no N x N matrix is formed.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] < 2:
        raise ShapeError(expected("at least two sequences (N >= 2, L)", getattr(tokens, "shape", None),
                                  "generate more sequences"))
    n = tokens.shape[0]
    size = int(tokens.max()) + 1
    counts = torch.nn.functional.one_hot(tokens, size).sum(0).to(torch.float64)  # (L, K)
    same = (counts * (counts - 1)).sum(1) / (n * (n - 1))
    return float((1 - same).mean())


def unique_fraction(tokens: torch.Tensor) -> float:
    """Fraction of distinct sequences among the N given."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[0] == 0:
        raise ShapeError(expected("tokens of shape (N, L) with N >= 1", getattr(tokens, "shape", None),
                                  "pass a batch of sequences"))
    return torch.unique(tokens, dim=0).shape[0] / tokens.shape[0]


def uniform_nll(alphabet_size: int) -> float:
    """NLL per letter of the uniform distribution: ln K (the no-information reference)."""
    return math.log(alphabet_size)
