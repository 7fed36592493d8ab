"""flowzoo.biology.sequences.hmm: exact likelihoods and statistics of the planted-motif HMM, checked by enumeration."""

import itertools
import math

import pytest
import torch

from flowzoo.biology.sequences.hmm import (PlantedMotifHMM, js_divergence, kmer_frequencies, kmer_js_divergence,
                                 mean_pairwise_hamming, motif_counts, motif_occupancy, planted_motif_hmm,
                                 unique_fraction, uniform_nll)
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError


@pytest.mark.parametrize("k", [4, 20, 64])
def test_parameters_are_stochastic_and_motif_planted(k):
    hmm = planted_motif_hmm(k, seed=1)
    assert torch.allclose(hmm.transition.sum(1), torch.ones(hmm.num_states, dtype=torch.float64))
    assert torch.allclose(hmm.emission.sum(1), torch.ones(hmm.num_states, dtype=torch.float64))
    assert len(hmm.motif) == {4: 6, 20: 4, 64: 3}[k]
    tokens, states = hmm.sample_with_states(400, 32, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == states.shape == (400, 32) and int(tokens.max()) < k
    in_motif = states >= hmm.background_states
    planted = tokens[in_motif] == torch.tensor(hmm.motif)[states[in_motif] - hmm.background_states]
    assert 0.9 < float(planted.float().mean()) <= 1.0  # motif_fidelity 0.95
    # Sequences that pass through the motif states mostly show the motif; the true NLL is far below uniform.
    assert motif_occupancy(tokens, hmm.motif) > 0.3
    assert hmm.nll_per_token(tokens) < uniform_nll(k) - 0.25


def _brute_force_log_likelihood(hmm: PlantedMotifHMM, sequence: list[int]) -> float:
    total = 0.0
    for path in itertools.product(range(hmm.num_states), repeat=len(sequence)):
        p = hmm.initial[path[0]] * hmm.emission[path[0], sequence[0]]
        for i in range(1, len(sequence)):
            p = p * hmm.transition[path[i - 1], path[i]] * hmm.emission[path[i], sequence[i]]
        total += float(p)
    return math.log(total)


def test_forward_algorithm_matches_enumeration_of_hidden_paths():
    hmm = PlantedMotifHMM(4, [2, 0, 3], background_states=2, seed=3)
    tokens = hmm.sample(5, 4, generator=torch.Generator().manual_seed(0))
    exact = hmm.log_likelihood(tokens)
    for row, value in zip(tokens.tolist(), exact.tolist()):
        assert value == pytest.approx(_brute_force_log_likelihood(hmm, row), rel=1e-10)


def test_likelihood_normalises_and_kmer_distribution_is_exact():
    hmm = PlantedMotifHMM(4, [1, 2], background_states=2, seed=0)
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))
    probabilities = hmm.log_likelihood(every).exp()
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-12)
    # With L = k the k-mer distribution is the distribution of whole sequences (codes are base-K numbers).
    assert torch.allclose(hmm.exact_kmer_distribution(3, 3), probabilities, atol=1e-12)
    # For longer sequences it is the position average; samples converge to it.
    tokens = hmm.sample(4000, 12, generator=torch.Generator().manual_seed(1))
    assert kmer_js_divergence(tokens, hmm, 4) < 0.01
    random_letters = torch.randint(0, 4, (4000, 12), generator=torch.Generator().manual_seed(2))
    assert kmer_js_divergence(random_letters, hmm, 4) > 0.05


def test_kmer_js_hamming_unique_by_hand():
    tokens = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]])
    freq = kmer_frequencies(tokens, 2, 2)  # 2-mers: 01 10 01 | 11 11 11
    assert freq.tolist() == [0.0, 2 / 6, 1 / 6, 3 / 6]
    p = torch.tensor([1.0, 0.0])
    assert js_divergence(p, p) == 0.0 and js_divergence(p, p.flip(0)) == pytest.approx(math.log(2))
    assert motif_counts(torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]]), [0, 0]).tolist() == [3, 1]
    assert motif_occupancy(torch.tensor([[0, 1], [1, 1]]), [0, 1]) == 0.5
    batch = torch.randint(0, 5, (30, 7), generator=torch.Generator().manual_seed(0))
    pairs = [(a != b).float().mean() for a, b in itertools.combinations(batch, 2)]
    assert mean_pairwise_hamming(batch) == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-6)
    assert unique_fraction(torch.tensor([[1, 2], [1, 2], [2, 1], [0, 0]])) == 0.75


def test_bad_inputs():
    hmm = planted_motif_hmm(4)
    with pytest.raises(DTypeError):
        hmm.log_likelihood(torch.zeros(2, 3))
    with pytest.raises(ShapeError, match=r"values in \[0, 4\)"):
        hmm.log_likelihood(torch.full((2, 3), 4))
    with pytest.raises(ShapeError):
        hmm.log_likelihood(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError):
        PlantedMotifHMM(4, [5])
    with pytest.raises(ConfigError):
        PlantedMotifHMM(4, [1], p_enter=0.0)
    with pytest.raises(ShapeError):
        mean_pairwise_hamming(torch.zeros(1, 4, dtype=torch.long))
