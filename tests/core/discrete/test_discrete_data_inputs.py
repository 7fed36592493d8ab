"""The Markov text data (exact likelihood by enumeration), the token transformer, and bad input everywhere."""

from __future__ import annotations

import math

import pytest
import torch

from discrete_support import all_sequences
from flowzoo.core.discrete import (DiscreteFlowMatchingLoss, DiscreteTransformer, MarkovText, MixtureDiscretePath,
                                   discrete_elbo, discrete_sample, masked_source)
from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, ShapeError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("order", [1, 2])
def test_markov_log_prob_is_a_distribution_and_entropy_is_exact(order):
    chain = MarkovText(vocab_size=3, order=order, concentration=0.5, seed=1)
    seqs = all_sequences(3, 4)
    log_p = chain.log_prob(seqs)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    assert float(-(log_p.exp() * log_p).sum()) / 4 == pytest.approx(chain.entropy_per_token(4), rel=1e-6)
    draws = chain.sample(20000, 4, generator=torch.Generator().manual_seed(0))
    assert chain.nll_per_token(draws) == pytest.approx(chain.entropy_per_token(4), abs=0.03)


def test_markov_text_defaults_and_decode():
    chain = MarkovText()
    assert chain.vocab_size == 27 and chain.entropy_rate() < math.log(27) - 1
    text = chain.decode(chain.sample(2, 20, generator=torch.Generator().manual_seed(0)))
    assert len(text) == 2 and all(len(s) == 20 and set(s) <= set("abcdefghijklmnopqrstuvwxyz ") for s in text)
    with pytest.raises(ConfigError):
        MarkovText(order=3)


def test_transformer_shapes_and_gradients():
    net = DiscreteTransformer(5, 7, hidden=16, depth=2, heads=4)
    x = torch.randint(0, 6, (3, 7))
    out = net(x, torch.rand(3))
    assert out.shape == (3, 7, 5)
    out.sum().backward()
    assert net.tokens.weight.grad is not None
    with pytest.raises(ShapeError):
        net(torch.randint(0, 5, (3, 6)), torch.rand(3))
    with pytest.raises(ConfigError, match="heads"):
        DiscreteTransformer(5, 7, hidden=10, heads=4)


PATH = MixtureDiscretePath(4, source="mask")


@pytest.mark.parametrize("x1,error", [
    (torch.tensor([[0, 4]]), ConfigError),                 # >= vocab (4 is the mask, never data)
    (torch.tensor([[-1, 0]]), ConfigError),                # negative
    (torch.tensor([[0.0, 1.0]]), DTypeError),              # floats where ids belong
    (torch.tensor([[True, False]]), DTypeError),
    (torch.tensor([1, 2]), ShapeError),                    # no batch dimension
    (torch.zeros(0, 3, dtype=torch.long), EmptyInputError),
    ([[0, 1]], DTypeError),
])
def test_bad_token_ids(x1, error):
    with pytest.raises(error):
        DiscreteFlowMatchingLoss(PATH)(lambda x, t: torch.zeros(*x.shape, 4), {"x1": x1})
    with pytest.raises(error):
        discrete_elbo(lambda x, t: torch.zeros(*x.shape, 4), x1, path=PATH)


def test_bad_sources_and_paths():
    with pytest.raises(ConfigError, match="mask_id outside the data vocabulary"):
        masked_source(10, mask_id=3)                      # collides with a data token
    with pytest.raises(ConfigError):
        MixtureDiscretePath(10, source="mask", mask_id=9)
    with pytest.raises(ConfigError):
        MixtureDiscretePath(10, source="gaussian")
    with pytest.raises(ConfigError):
        MixtureDiscretePath(10, source="uniform", carry_over=True)
    with pytest.raises(ConfigError):
        MixtureDiscretePath(0)
    with pytest.raises(ConfigError):
        DiscreteFlowMatchingLoss(PATH, kind="mse")
    with pytest.raises(ConfigError):
        PATH.sample(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.5, 1.5]))      # t outside [0, 1]


@pytest.mark.parametrize("kwargs,error", [
    ({"steps": 0}, ConfigError),
    ({"steps": -3}, ConfigError),
    ({"steps": 2.5}, ConfigError),
    ({"steps": 4, "top_k": 0}, ConfigError),
    ({"steps": 4, "top_k": 5}, ConfigError),           # more than the 4 data tokens
    ({"steps": 4, "temperature": 0.0}, ConfigError),
    ({"steps": 4, "temperature": -1.0}, ConfigError),
    ({"steps": 4, "div_free": -0.5}, ConfigError),
    ({"time_grid": [1.0, 0.0]}, ConfigError),          # sampling runs forward
    ({"time_grid": [0.0, 2.0]}, ConfigError),
    ({}, ConfigError),                                 # neither steps nor grid
])
def test_bad_sampler_options(kwargs, error):
    with pytest.raises(error):
        discrete_sample(lambda x, t: torch.zeros(*x.shape, 4), PATH.source.sample((2, 3)), path=PATH, **kwargs)


def test_bad_model_output_and_start_state():
    with pytest.raises(ShapeError, match="logits of shape"):
        discrete_sample(lambda x, t: torch.zeros(*x.shape, 5), PATH.source.sample((2, 3)), path=PATH, steps=2)
    with pytest.raises(ConfigError):
        discrete_sample(lambda x, t: torch.zeros(*x.shape, 4), torch.full((2, 3), 7), path=PATH, steps=2)
    with pytest.raises(DTypeError):
        discrete_sample(lambda x, t: torch.zeros(*x.shape, 4), torch.zeros(2, 3), path=PATH, steps=2)
    with pytest.raises(ConfigError):
        discrete_sample(lambda x, t: torch.zeros(*x.shape, 4), PATH.source.sample((2, 3)), path="mask", steps=2)
    with pytest.raises(ConfigError, match='"x1"'):
        DiscreteFlowMatchingLoss(PATH)(lambda x, t: torch.zeros(*x.shape, 4), {"x0": torch.zeros(2, 3)})
