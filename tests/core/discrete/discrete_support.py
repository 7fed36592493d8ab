"""Shared helpers of the discrete flow matching tests: an exact posterior for an enumerable joint, a tiny MLP."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from flowzoo.core.discrete import MixtureDiscretePath


def all_sequences(vocab_size: int, length: int) -> torch.Tensor:
    """Every sequence of ``length`` tokens over ``vocab_size``: (V**L, L), in lexicographic order."""
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))


def random_joint(vocab_size: int, length: int, seed: int = 0, sharpness: float = 2.0) -> torch.Tensor:
    """A random distribution over all V**L sequences (lexicographic order), far from uniform."""
    logits = torch.randn(vocab_size ** length, generator=torch.Generator().manual_seed(seed)) * sharpness
    return torch.softmax(logits.double(), 0)


class ExactPosterior:
    """The true factorised posterior p(x1^i | x_t) of a joint over enumerable sequences on a mixture path."""

    def __init__(self, joint: torch.Tensor, path: MixtureDiscretePath, length: int):
        self.joint, self.path, self.length = joint, path, length
        self.seqs = all_sequences(path.vocab_size, length)
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        kappa = self.path.scheduler.kappa(t.double())[:, None, None]                      # (B, 1, 1)
        p0 = self.path.source.probs(dtype=torch.float64)[x]                               # (B, L)
        same = (x[:, None, :] == self.seqs[None]).double()                                # (B, N, L)
        likelihood = (kappa * same + (1 - kappa) * p0[:, None, :]).prod(-1)               # (B, N)
        weights = likelihood * self.joint[None]
        weights = weights / weights.sum(1, keepdim=True)
        one_hot = nn.functional.one_hot(self.seqs, self.path.vocab_size).double()         # (N, L, V)
        marginals = torch.einsum("bn,nlv->blv", weights, one_hot)
        return marginals.clamp_min(1e-30).log().float()


def sequence_index(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The lexicographic index of each sequence of x (B, L)."""
    powers = vocab_size ** torch.arange(x.shape[1] - 1, -1, -1)
    return (x * powers).sum(1)


class TinyMLP(nn.Module):
    """A fast posterior net for learning tests: one-hot sequence and time -> logits (B, L, V)."""

    def __init__(self, num_states: int, vocab_size: int, length: int, hidden: int = 256):
        super().__init__()
        self.num_states, self.vocab_size, self.length = num_states, vocab_size, length
        self.net = nn.Sequential(nn.Linear(length * num_states + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, length * vocab_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = torch.cat([nn.functional.one_hot(x, self.num_states).float().flatten(1), t[:, None].float()], 1)
        return self.net(features).view(x.shape[0], self.length, self.vocab_size)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square p-value of observed ``counts`` against ``probs`` (bins with expected >= 5 kept)."""
    from scipy import stats

    n = counts.sum()
    expected = probs.double() * n
    keep = expected >= 5
    rest_obs, rest_exp = counts[~keep].sum(), expected[~keep].sum()
    obs = torch.cat([counts[keep].double(), rest_obs[None].double()])
    exp = torch.cat([expected[keep], rest_exp[None]])
    if rest_exp < 5:
        obs, exp = obs[:-1], exp[:-1]
        exp = exp * obs.sum() / exp.sum()
    return float(stats.chisquare(obs.numpy(), exp.numpy()).pvalue)


