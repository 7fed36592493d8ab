"""Discrete FM losses against hand computations, and the ELBO against exact likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

from discrete_support import ExactPosterior, all_sequences, random_joint, sequence_index
from flowzoo.core.discrete import (DiscreteFlowMatchingLoss, MixtureDiscretePath, discrete_elbo, elbo_per_token,
                                   generalized_kl)
from flowzoo.core.paths.timesamplers import UniformTime


pytestmark = pytest.mark.usefixtures("one_thread")


def test_generalized_kl_by_hand():
    """Three cases of the per-token formula, linear κ at t = 0.5 (weight κ̇/(1-κ) = 2)."""
    path = MixtureDiscretePath(3, source="uniform")
    p = torch.tensor([0.2, 0.3, 0.5])
    logits = p.log().expand(1, 3, 3)
    x1 = torch.tensor([[2, 2, 1]])
    x_t = torch.tensor([[2, 0, 1]])      # equal to x1, different, equal
    got = generalized_kl(logits, x1, x_t, torch.tensor([0.5]), path)[0]
    want = [-2 * (0.5 - 1), -2 * (0.2 + math.log(0.5)), -2 * (0.3 - 1)]
    assert got.tolist() == pytest.approx(want, rel=1e-5)


def test_generalized_kl_masked_with_and_without_carry_over():
    logits = torch.tensor([0.1, 0.9]).log().expand(1, 2, 2)
    x1, x_t, t = torch.tensor([[1, 0]]), torch.tensor([[2, 0]]), torch.tensor([0.25])
    plain = MixtureDiscretePath(2, source="mask", carry_over=False)
    carried = MixtureDiscretePath(2, source="mask")
    weight = 1 / 0.75
    assert generalized_kl(logits, x1, x_t, t, plain)[0].tolist() == pytest.approx(
        [-weight * math.log(0.9), -weight * (0.1 - 1)], rel=1e-5)
    assert generalized_kl(logits, x1, x_t, t, carried)[0].tolist() == pytest.approx(
        [-weight * math.log(0.9), 0.0], rel=1e-5)


@pytest.mark.parametrize("kind", ["cross_entropy", "generalized_kl"])
def test_loss_value_weights_and_metrics(kind):
    path = MixtureDiscretePath(4, source="uniform")
    fixed = torch.tensor([0.1, 0.2, 0.3, 0.4])
    model = lambda x, t: fixed.log().expand(*x.shape, 4)
    x1 = torch.randint(0, 4, (6, 5), generator=torch.Generator().manual_seed(0))
    loss_fn = DiscreteFlowMatchingLoss(path, kind=kind, time_sampler=UniformTime(0.3, 0.3 + 1e-9))
    loss, metrics = loss_fn(model, {"x1": x1, "x0": x1}, generator=torch.Generator().manual_seed(1))
    if kind == "cross_entropy":
        assert loss.item() == pytest.approx(float(-fixed.log()[x1].mean()), rel=1e-5)
    else:   # x0 = x1: every token sits at x1, so each term is (1 - p(x1)) κ̇/(1-κ)
        assert loss.item() == pytest.approx(float((1 - fixed[x1]).mean() / 0.7), rel=1e-4)
    assert metrics["loss"] == pytest.approx(loss.item())
    weight = torch.tensor([1.0, 0, 0, 0, 0, 0]) * 6
    weighted, _ = loss_fn(model, {"x1": x1, "x0": x1, "weight": weight})
    per_seq = -fixed.log()[x1[0]].mean() if kind == "cross_entropy" else (1 - fixed[x1[0]]).mean() / 0.7
    assert weighted.item() == pytest.approx(float(per_seq), rel=1e-4)


def test_loss_passes_conditioning_and_backpropagates():
    path = MixtureDiscretePath(3, source="mask")
    table = torch.nn.Parameter(torch.zeros(2, 3))
    model = lambda x, t, y: table[y][:, None, :].expand(*x.shape, 3)
    loss, _ = DiscreteFlowMatchingLoss(path)(model, {"x1": torch.zeros(4, 2, dtype=torch.long),
                                                      "y": torch.tensor([0, 1, 0, 1])})
    loss.backward()
    assert table.grad is not None and table.grad[:, 0].lt(0).all()


def test_elbo_is_tight_for_the_masked_source_and_factorised_data():
    """Masked source + true posterior of a factorised distribution: E[negative ELBO] = exact NLL."""
    v, length = 5, 4
    marginals = torch.softmax(torch.randn(length, v, generator=torch.Generator().manual_seed(0)) * 1.5, -1)
    path = MixtureDiscretePath(v, source="mask")
    model = lambda x, t: marginals.log().expand(x.shape[0], length, v)     # unmasked positions carried over
    x1 = torch.stack([torch.multinomial(marginals[i], 3000, replacement=True,
                                        generator=torch.Generator().manual_seed(i)) for i in range(length)], 1)
    exact = -marginals.log().gather(1, x1.T).sum(0).double()
    nelbo = discrete_elbo(model, x1, path=path, n_time=16, generator=torch.Generator().manual_seed(9)).double()
    gap = nelbo - exact
    assert abs(float(gap.mean())) < 4 * float(gap.std()) / math.sqrt(len(gap)) + 1e-3


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_elbo_bounds_the_exact_nll_of_a_correlated_joint(source):
    """True posterior of a correlated joint: the bound holds for each source (strictly for uniform)."""
    v, length = 3, 3
    joint = random_joint(v, length, seed=3, sharpness=1.0)
    path = MixtureDiscretePath(v, source=source)
    x1 = all_sequences(v, length)[torch.multinomial(joint.float(), 3000, replacement=True,
                                                    generator=torch.Generator().manual_seed(0))]
    exact = -joint.log()[sequence_index(x1, v)]
    nelbo = discrete_elbo(ExactPosterior(joint, path, length), x1, path=path, n_time=16,
                          generator=torch.Generator().manual_seed(1)).double()
    gap = nelbo - exact
    standard_error = float(gap.std()) / math.sqrt(len(gap))
    assert float(gap.mean()) > -4 * standard_error
    if source == "uniform":
        assert float(gap.mean()) > 0.1                      # the uniform source's bound is loose
    per_token = elbo_per_token(ExactPosterior(joint, path, length), x1, path=path, n_time=16, batch_size=1000)
    assert per_token == pytest.approx(float(nelbo.mean()) / length, rel=0.1)
