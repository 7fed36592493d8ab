"""Learning: a short CPU training on Markov-chain sequences reaches the chain's entropy and its k-mer statistics.

Chain: 6 symbols, order 1, length 8 (exact entropy 1.27 nats/token; log 6 = 1.79; a model that ignores the
context, i.e. learns the letter frequencies only, scores 1.67 and its samples have a 3-mer JS of about 0.23).
"""

from __future__ import annotations

import math

import pytest
import torch

from discrete_support import TinyMLP
from flowzoo.biology.sequences.hmm import kmer_js_divergence
from flowzoo.core.discrete import (DiscreteFlowMatchingLoss, DiscreteTransformer, MarkovText, MixtureDiscretePath,
                                   discrete_elbo, discrete_sample)

V, L = 6, 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chain():
    return MarkovText(vocab_size=V, order=1, concentration=0.3, seed=0)


def _train(model, path, kind, data, steps, lr=3e-3, batch=256):
    loss_fn = DiscreteFlowMatchingLoss(path, kind=kind)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x1 = data[torch.randint(0, len(data), (batch,), generator=generator)]
        loss, _ = loss_fn(model, {"x1": x1}, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.mark.parametrize("source,kind", [("mask", "cross_entropy"), ("uniform", "generalized_kl")])
def test_training_reaches_the_chain(chain, source, kind):
    torch.manual_seed(0)
    data = chain.sample(4000, L, generator=torch.Generator().manual_seed(0))
    held_out = chain.sample(1000, L, generator=torch.Generator().manual_seed(5))
    path = MixtureDiscretePath(V, source=source)
    model, _ = _train(TinyMLP(path.num_states, V, L), path, kind, data, steps=300)
    samples = discrete_sample(model, path.source.sample((1000, L), generator=torch.Generator().manual_seed(3)),
                              path=path, steps=32, generator=torch.Generator().manual_seed(3)).x
    entropy = chain.entropy_per_token(L)
    assert chain.nll_per_token(samples) < entropy + 0.25
    assert kmer_js_divergence(samples, held_out, V, 3) < 0.05
    if source == "mask":   # the masked bound is tight enough to read the entropy off it
        nelbo = discrete_elbo(model, held_out, path=path, n_time=32, generator=torch.Generator().manual_seed(2))
        exact = -chain.log_prob(held_out)
        per_token = float(nelbo.mean()) / L
        assert per_token < entropy + 0.15 < math.log(V) - 0.3
        gap = nelbo.double() - exact
        assert float(gap.mean()) > -3 * float(gap.std()) / math.sqrt(len(gap))   # a bound on the exact NLL


def test_discrete_transformer_learns(chain):
    """The library's token transformer trains (loss falls well below the uniform log V)."""
    torch.manual_seed(0)
    path = MixtureDiscretePath(V, source="mask")
    net = DiscreteTransformer(V, L, num_states=path.num_states, hidden=32, depth=1, heads=2)
    data = chain.sample(2000, L, generator=torch.Generator().manual_seed(0))
    _, losses = _train(net, path, "cross_entropy", data, steps=60, lr=3e-3, batch=64)
    assert sum(losses[-10:]) / 10 < math.log(V) - 0.3 < losses[0]
