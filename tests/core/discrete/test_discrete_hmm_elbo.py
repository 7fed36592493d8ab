"""The ELBO of a trained discrete flow bounds the exact NLL of planted-motif HMM sequences (issue 24).

The data come from :func:`flowzoo.biology.sequences.hmm.planted_motif_hmm` (K = 4 letters, length 12), whose
log-likelihood is exact (forward algorithm). A model trained for a few seconds must have a negative ELBO
(:func:`flowzoo.core.discrete.discrete_elbo`) at or above the exact NLL on average, within Monte Carlo error (it is
a bound for any model), and well below the uniform model's log 4 per token (it learned the data). A broken
estimator fails one side: a missing jump weight or a dropped token falls under the exact NLL, a wrong sign or
scale lands far above log 4. The estimator's integrand (the generalised KL) and the cross-entropy are checked
against the plain formula on both sides of the losses' vocabulary-size layout switch.
"""

from __future__ import annotations

import math

import pytest
import torch

from discrete_support import TinyMLP
from flowzoo.biology.sequences.hmm import planted_motif_hmm, uniform_nll
from flowzoo.core.discrete import DiscreteFlowMatchingLoss, MixtureDiscretePath, discrete_elbo, generalized_kl

K, L = 4, 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hmm():
    return planted_motif_hmm(K, seed=0)


def _train(path, kind, data, steps, batch=256):
    torch.manual_seed(0)
    model = TinyMLP(path.num_states, K, L, hidden=128)
    loss_fn = DiscreteFlowMatchingLoss(path, kind=kind)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x1 = data[torch.randint(0, len(data), (batch,), generator=generator)]
        loss, _ = loss_fn(model, {"x1": x1}, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


# (source, loss, steps, slack over the entropy per token; None: the bound only). The uniform source's bound stays
# loose (above log 4) after a short training, so only its bound property is checked.
CASES = [("mask", "generalized_kl", 500, 0.1), ("mask", "cross_entropy", 300, 0.15),
         ("uniform", "generalized_kl", 300, None)]


@pytest.mark.parametrize("source,kind,steps,slack", CASES)
def test_elbo_bounds_the_exact_hmm_nll(hmm, source, kind, steps, slack):
    data = hmm.sample(4000, L, generator=torch.Generator().manual_seed(0))
    held_out = hmm.sample(1000, L, generator=torch.Generator().manual_seed(5))
    exact = -hmm.log_likelihood(held_out)                                   # (n,) nats, float64
    path = MixtureDiscretePath(K, source=source)
    model = _train(path, kind, data, steps)
    nelbo = discrete_elbo(model, held_out, path=path, n_time=32, generator=torch.Generator().manual_seed(2))
    gap = nelbo.double() - exact
    standard_error = float(gap.std()) / math.sqrt(len(gap))
    assert float(gap.mean()) > -3 * standard_error                          # an upper bound on -log p(x1)
    per_token, uniform = float(nelbo.mean()) / L, uniform_nll(K)
    entropy = float(exact.mean()) / L
    assert entropy < uniform - 0.2                                          # the HMM is far from uniform
    if slack is not None:
        assert per_token < entropy + slack < uniform - 0.05                 # and the model learned it


@pytest.mark.parametrize("vocab", [6, 20])           # either side of the losses' layout switch
@pytest.mark.parametrize("source,carry_over", [("mask", True), ("mask", False), ("uniform", False)])
def test_losses_match_the_textbook_formula_in_every_layout(vocab, source, carry_over):
    """The ELBO's integrand and the cross-entropy, computed the plain way, on a conv head's strided logits."""
    path = MixtureDiscretePath(vocab, source=source, carry_over=carry_over)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randint(0, vocab, (8, 5), generator=gen)
    t = torch.rand(8, generator=gen)
    x_t = path.sample(x1, t, generator=gen).x_t
    logits = torch.randn(8, vocab + 1, 5, generator=gen).transpose(1, 2)[..., :vocab]    # (B, L, V), strided
    log_p = torch.log_softmax(logits.double(), -1)
    log_p_x1 = log_p.gather(-1, x1[..., None])[..., 0]
    p_xt = torch.where(x_t < vocab, log_p.gather(-1, x_t.clamp(max=vocab - 1)[..., None])[..., 0].exp(), 0.0)
    same = (x_t == x1).double()
    want = -(1.0 / (1.0 - t.double()))[:, None] * (p_xt - same + (1 - same) * log_p_x1)       # linear kappa
    if carry_over:
        want = torch.where(x_t < vocab, 0.0, want)
    torch.testing.assert_close(generalized_kl(logits, x1, x_t, t, path).double(), want, rtol=1e-5, atol=1e-5)
    model = lambda x, time: logits
    loss, _ = DiscreteFlowMatchingLoss(path)(model, {"x1": x1})
    assert loss.item() == pytest.approx(float(-log_p_x1.mean()), rel=1e-5)
    weight = torch.arange(1.0, 9.0)
    weighted, _ = DiscreteFlowMatchingLoss(path)(model, {"x1": x1, "weight": weight})
    assert weighted.item() == pytest.approx(float((weight * -log_p_x1.mean(1)).mean()), rel=1e-5)
