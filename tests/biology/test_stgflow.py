"""flowzoo.biology.sequences.stgflow: straight-through gradients by hand, tangency, and guidance toward a motif."""

import pytest
import torch

from flowzoo.biology.sequences.gumbel_fm import GumbelSoftmaxFM
from flowzoo.biology.sequences.simplex_flow import LinearSimplexFM
from flowzoo.biology.sequences.hmm import mean_pairwise_hamming, motif_counts, planted_motif_hmm
from flowzoo.biology.sequences.nets import ConvSequenceNet
from flowzoo.biology.sequences.alphabets import one_hot
from flowzoo.biology.sequences.stgflow import (SequenceClassifier, StraightThroughGuidance, straight_through_direction,
                                     train_guide)
from flowzoo.core.errors import ConfigError, ShapeError

torch.set_num_threads(1)


def test_direction_of_a_linear_score_is_its_weights():
    weights = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))

    def score(h):
        return (h * weights).sum((1, 2))

    probabilities = torch.softmax(torch.randn(3, 6, 4), -1)
    direction = straight_through_direction(score, probabilities, 5, torch.Generator().manual_seed(1))
    assert torch.allclose(direction, weights.expand(3, 6, 4))


def test_direction_averages_over_the_drawn_sequences():
    # score(h) = (number of letter-0 positions)^2: gradient 2 * count at every letter-0 entry.
    def score(h):
        return h[..., 0].sum(1).pow(2)

    certain = one_hot(torch.tensor([[0, 0, 1]]), 2)
    direction = straight_through_direction(score, certain, 3)
    assert torch.allclose(direction[0, :, 0], torch.full((3,), 4.0)) and direction[0, :, 1].abs().max() == 0


def test_guidance_velocity_is_tangent_and_off_at_strength_zero():
    guide = SequenceClassifier(4, 2, hidden=8, kernel_size=3)
    x = torch.softmax(torch.randn(2, 5, 4), -1)
    t = torch.full((2,), 0.3)
    for method in (GumbelSoftmaxFM(), LinearSimplexFM()):
        velocity = StraightThroughGuidance(guide, method, strength=2.0, num_samples=4)(x, x, t)
        assert velocity.sum(-1).abs().max() < 1e-5 and velocity.abs().max() > 0
        assert StraightThroughGuidance(guide, method, strength=0.0)(x, x, t).abs().max() == 0


def test_guidance_raises_the_fraction_meeting_a_motif_constraint():
    hmm = planted_motif_hmm(4, seed=0)
    data = hmm.sample(2000, 16, generator=torch.Generator().manual_seed(0))
    labels = (motif_counts(data, hmm.motif) > 0).long()
    torch.manual_seed(0)
    guide = SequenceClassifier(4, 2, hidden=32, kernel_size=7)
    train_guide(guide, data, labels, steps=150, seed=0)
    held_out = hmm.sample(500, 16, generator=torch.Generator().manual_seed(5))
    truth = motif_counts(held_out, hmm.motif) > 0
    assert (guide(one_hot(held_out, 4)).argmax(-1) == truth).float().mean() > 0.9
    method = GumbelSoftmaxFM()
    torch.manual_seed(0)
    net = ConvSequenceNet(4, hidden=32, depth=2)
    gen = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = method(net, {"x1": one_hot(data[torch.randint(0, 2000, (64,), generator=gen)], 4)}, generator=gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()

    def fraction(strength):
        guidance = StraightThroughGuidance(guide, method, strength, num_samples=8) if strength else None
        out = method.sample(net, 200, 16, 4, steps=25, generator=torch.Generator().manual_seed(3), guidance=guidance)
        assert out.x.min() >= 0 and torch.allclose(out.x.sum(-1), torch.ones(200, 16), atol=1e-5)
        return float((motif_counts(out.tokens, hmm.motif) > 0).float().mean()), mean_pairwise_hamming(out.tokens)

    unguided, guided = fraction(0.0), fraction(1.0)
    assert guided[0] > unguided[0] + 0.2, (unguided, guided)
    assert guided[1] > 0.4  # guided samples stay diverse, not one copied sequence


def test_bad_inputs():
    guide = SequenceClassifier(4, 2, hidden=8, kernel_size=3)
    with pytest.raises(ConfigError):
        StraightThroughGuidance(guide, GumbelSoftmaxFM(), source="noise")
    with pytest.raises(ConfigError):
        StraightThroughGuidance(guide, GumbelSoftmaxFM(), strength=-1.0)
    with pytest.raises(ShapeError):
        guide(torch.zeros(2, 5, 3))
    with pytest.raises(ShapeError):
        train_guide(guide, torch.zeros(4, 5, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels in"):
        train_guide(guide, torch.zeros(4, 5, dtype=torch.long), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ConfigError):
        SequenceClassifier(4, kernel_size=4)
    with pytest.raises(ShapeError, match="one score per sequence"):
        straight_through_direction(lambda h: h.sum(), torch.full((2, 3, 4), 0.25), 2)
