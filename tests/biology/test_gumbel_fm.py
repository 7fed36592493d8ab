"""flowzoo.biology.sequences.gumbel_fm: the interpolant's exact velocity, the logit score, simplex samplers, learning."""

import math

import pytest
import torch

from flowzoo.biology.sequences.gumbel_fm import GumbelSoftmaxFM, GumbelSoftmaxScoreMatching, build_method
from flowzoo.biology.sequences.gumbel_path import GumbelSoftmaxPath, logit_log_density, logit_score
from flowzoo.biology.sequences.simplex_flow import LinearSimplexFM, SimplexVelocity, tangent
from flowzoo.biology.sequences.hmm import js_divergence, kmer_js_divergence, mean_pairwise_hamming, planted_motif_hmm
from flowzoo.biology.sequences.nets import ConvSequenceNet, TransformerSequenceNet
from flowzoo.biology.sequences.alphabets import one_hot
from flowzoo.core.errors import ConfigError, DTypeError, ShapeError

torch.set_num_threads(1)


def _x1_and_noise(b=3, length=5, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x1 = one_hot(torch.randint(0, k, (b, length), generator=gen), k, torch.float64)
    gumbel = -torch.log(-torch.log(torch.rand(x1.shape, generator=gen, dtype=torch.float64)))
    return x1, gumbel, torch.rand(b, generator=gen, dtype=torch.float64)


def _finite_difference(path, x1, gumbel, t, h=1e-6):
    ahead, behind = path.logits(x1, gumbel, t + h), path.logits(x1, gumbel, t - h)
    return (torch.softmax(ahead, -1) - torch.softmax(behind, -1)) / (2 * h)


def test_exact_velocity_is_the_time_derivative_of_the_interpolant():
    path = GumbelSoftmaxPath(noise="tempered")
    x1, gumbel, t = _x1_and_noise()
    derivative = _finite_difference(path, x1, gumbel, t)
    z = path.logits(x1, gumbel, t)
    x = torch.softmax(z, -1)
    assert torch.allclose(path.exact_velocity(x1, gumbel, t), derivative, atol=1e-8)
    assert torch.allclose(path.decay * tangent(x, z), derivative, atol=1e-8)
    # Eq. 13 drops the noise: on the paper's path it differs for noisy points and is exact when g = 0.
    assert (path.conditional_velocity(x, x1, t) - derivative).abs().max() > 1e-2
    z0 = path.logits(x1, torch.zeros_like(gumbel), t)
    x0 = torch.softmax(z0, -1)
    assert torch.allclose(path.conditional_velocity(x0, x1, t), path.decay * tangent(x0, z0), atol=1e-12)
    # Hand value: tau(0.5) = 10 e^-1.5; u_i = (lambda / tau) x_i (delta_ik - x_k).
    x = torch.tensor([[[0.5, 0.3, 0.2]]], dtype=torch.float64)
    e0 = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    rate = 3.0 / (10 * math.exp(-1.5))
    expected = rate * torch.tensor([0.5 * 0.5, 0.3 * -0.5, 0.2 * -0.5], dtype=torch.float64)
    assert torch.allclose(path.conditional_velocity(x, e0, torch.tensor([0.5], dtype=torch.float64))[0, 0], expected)


def test_eq13_is_the_exact_velocity_of_the_fixed_noise_interpolant():
    path = GumbelSoftmaxPath()
    assert path.noise == "fixed"
    x1, gumbel, t = _x1_and_noise(k=7)
    derivative = _finite_difference(path, x1, gumbel, t)
    x = torch.softmax(path.logits(x1, gumbel, t), -1)
    assert torch.allclose(path.conditional_velocity(x, x1, t), derivative, atol=1e-8)
    assert torch.allclose(path.exact_velocity(x1, gumbel, t), derivative, atol=1e-8)
    # Hand values: z_t = ((e^{3t} - 1) e_k + g / 2) / 10, so the prior holds no letter.
    t_half = torch.tensor([0.5], dtype=torch.float64)
    z = path.logits(x1[:1], gumbel[:1], t_half)
    assert torch.allclose(z, (math.expm1(1.5) * x1[:1] + gumbel[:1] / 2) / 10, atol=1e-12)
    assert torch.allclose(path.logits(x1, gumbel, torch.zeros(3, dtype=torch.float64)), gumbel / 20, atol=1e-12)
    prior = path.prior(2, 3, 7, generator=torch.Generator().manual_seed(4))
    noise = torch.softmax(-torch.log(-torch.log(torch.rand(2, 3, 7, generator=torch.Generator().manual_seed(4))
                                                .clamp(1e-20, 1 - 1e-7))) / 20, -1)
    assert torch.allclose(prior, noise, atol=1e-6)


@pytest.mark.parametrize("noise", ["fixed", "tempered"])
def test_concrete_parameters_and_the_bayes_posterior(noise):
    path = GumbelSoftmaxPath(noise=noise)
    x1, gumbel, t = _x1_and_noise(b=4, length=3, k=5)
    location, temperature = path.concrete_parameters(t)
    z = path.logits(x1, gumbel, t)
    assert torch.allclose(temperature[:, None, None] * z - location[:, None, None] * x1, gumbel, atol=1e-9)
    # P(k | x) from the Concrete density by Bayes' rule equals the closed form.
    prior = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
    y = torch.log_softmax(z, -1)
    log_joint = torch.stack([prior[j].log() + logit_log_density(
        y, location[:, None, None] * one_hot(torch.full((4, 3), j), 5, torch.float64),
        temperature[:, None].expand(4, 3)) for j in range(5)], -1)
    assert torch.allclose(path.posterior(torch.softmax(z, -1), t, prior), torch.softmax(log_joint, -1), atol=1e-9)


def _letter_statistics(path, steps, n=5000, k=20, seed=0, final="argmax"):
    """Sample i.i.d. letters with the exact Bayes denoiser; return (NLL, entropy, JS) of the letter frequencies."""
    prior = torch.softmax(1.5 * torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)

    def bayes_logits(x, t):
        return path.posterior(x.double(), t.double(), prior).log().to(x.dtype)

    tokens = GumbelSoftmaxFM(path).sample(bayes_logits, n, 1, k, steps=steps, final=final,
                                          generator=torch.Generator().manual_seed(seed + 1)).tokens[:, 0]
    frequencies = torch.bincount(tokens, minlength=k).double() / n
    entropy = float(-(prior * prior.log()).sum())
    return float(-(frequencies * prior.log()).sum()), entropy, js_divergence(frequencies, prior)


def test_sampling_with_the_bayes_denoiser_recovers_the_letter_distribution():
    nll, entropy, js = _letter_statistics(GumbelSoftmaxPath(), steps=200)
    assert abs(nll - entropy) < 0.05 and js < 2e-3, (nll, entropy, js)
    # The paper's interpolant with its Eq. 13 sampler over-concentrates on likely letters, whatever the steps.
    for steps in (50, 200):
        nll, entropy, js = _letter_statistics(GumbelSoftmaxPath(noise="tempered"), steps=steps)
        assert nll < entropy - 0.15 and js > 1e-2, (steps, nll, entropy, js)
    # A slow decay leaves x_1 undecided (beta (e^lambda - 1) = 3.4 < log 19 + margin): its argmax is too
    # random, while a last draw from the denoiser's categorical is exact.
    slow = GumbelSoftmaxPath(decay=1.0)
    nll, entropy, js = _letter_statistics(slow, steps=100)
    assert nll > entropy + 0.3 and js > 1e-2, (nll, entropy, js)
    nll, entropy, js = _letter_statistics(slow, steps=100, final="denoiser")
    assert abs(nll - entropy) < 0.05 and js < 2e-3, (nll, entropy, js)


def test_marginal_velocity_is_tangent_and_the_temperature_schedule():
    path = GumbelSoftmaxPath(tau_max=10, decay=3, beta=2)
    assert float(path.temperature(torch.tensor(1.0))) == pytest.approx(10 * math.exp(-3))
    x = torch.softmax(torch.randn(4, 6, 5, dtype=torch.float64), -1)
    x_hat = torch.softmax(torch.randn(4, 6, 5, dtype=torch.float64), -1)
    velocity = GumbelSoftmaxFM(path).velocity_from_denoiser(x, x_hat, torch.rand(4, dtype=torch.float64))
    assert velocity.sum(-1).abs().max() < 1e-12


def test_logit_score_matches_autograd_and_density_normalises():
    path = GumbelSoftmaxPath()
    x1, gumbel, t = _x1_and_noise(k=6)
    y = torch.log_softmax(path.logits(x1, gumbel, t), -1).requires_grad_(True)
    temperature = (path.beta * path.temperature(t))[:, None].expand(y.shape[:2])
    log_p = logit_log_density(y, path.beta * x1, temperature)
    (grad,) = torch.autograd.grad(log_p.sum(), y)
    score = logit_score(y.detach(), path.beta * x1, temperature)
    assert torch.allclose(grad, score, atol=1e-10) and score.sum(-1).abs().max() < 1e-10
    # K = 2: the density of y1 - y2 (a logistic density) integrates to one.
    y1 = torch.linspace(-60, -1e-13, 200_001, dtype=torch.float64)
    y2 = torch.log1p(-torch.exp(y1))
    density = logit_log_density(torch.stack([y1, y2], -1), torch.tensor([0.7, 0.0], dtype=torch.float64),
                                torch.full_like(y1, 1.3)).exp()
    assert float(torch.trapezoid(density, y1 - y2)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("noise", ["fixed", "tempered"])
def test_score_mixture_reduces_to_the_conditional_score_for_a_certain_posterior(noise):
    method = GumbelSoftmaxScoreMatching(GumbelSoftmaxPath(noise=noise))
    x1, gumbel, t = _x1_and_noise(k=5)
    z = method.path.logits(x1, gumbel, t)
    x = torch.softmax(z, -1)
    location, temperature = (value[:, None, None] for value in method.path.concrete_parameters(t))
    mixture = method.mixture_weights(x, x1, t)
    assert torch.allclose(temperature * (5 * mixture - 1),
                          logit_score(x.log(), location * x1, temperature[..., 0]), atol=1e-9)
    # A mixture over letters is the posterior-weighted mixture of the conditional scores.
    pi = torch.softmax(torch.randn(x.shape, dtype=torch.float64), -1)
    by_letter = torch.stack([method.mixture_weights(x, one_hot(torch.full(x.shape[:2], j), 5, torch.float64), t)
                             for j in range(5)], -1)
    assert torch.allclose(method.mixture_weights(x, pi, t), (by_letter * pi[..., None, :]).sum(-1), atol=1e-12)
    net = ConvSequenceNet(5, hidden=8, depth=1).double()
    score = method.score(net, x, t)
    assert score.shape == x.shape and score.sum(-1).abs().max() < 1e-9
    # The training target is that conditional score: the loss vanishes for a network that outputs x1.
    loss = method.position_loss(lambda x_t, t_, **_: 1e6 * (x1 - 0.5), x1, t, {}, torch.Generator().manual_seed(0))
    assert loss.shape == x1.shape[:2] and loss.max() < 1e-20


def test_linear_simplex_velocity_points_at_the_prediction():
    method = LinearSimplexFM()
    x0 = torch.tensor([[[0.2, 0.3, 0.5]]])
    x1 = torch.tensor([[[0.0, 1.0, 0.0]]])
    t = torch.tensor([0.25])
    x_t = 0.75 * x0 + 0.25 * x1
    assert torch.allclose(method.velocity_from_denoiser(x_t, x1, t), x1 - x0, atol=1e-6)


@pytest.mark.parametrize("name,step,noise", [("gumbel_fm", "euler", "fixed"), ("gumbel_fm", "logit", "fixed"),
                                             ("gumbel_fm", "euler", "tempered"), ("gumbel_score", "euler", "fixed"),
                                             ("linear_fm", "euler", "fixed")])
def test_samples_stay_on_the_simplex(name, step, noise):
    torch.manual_seed(0)
    net = ConvSequenceNet(20, hidden=16, depth=1)
    method = build_method(name, 20, step=step, noise=noise)
    out = method.sample(net, 8, 12, 20, steps=25, generator=torch.Generator().manual_seed(0))
    assert out.x.min() >= 0 and torch.allclose(out.x.sum(-1), torch.ones(8, 12), atol=1e-5)
    assert out.tokens.shape == (8, 12) and torch.equal(out.tokens, out.x.argmax(-1))
    velocity = SimplexVelocity(net, method)(out.x, torch.full((8,), 0.5))
    assert velocity.shape == out.x.shape


def _fit(method, net, data, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = {"x1": one_hot(data[torch.randint(0, len(data), (64,), generator=gen)], 4)}
        loss, metrics = method(net, batch, generator=gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert set(metrics) == {"loss"}
    return net.eval()


@pytest.mark.parametrize("name", ["gumbel_fm", "gumbel_score", "linear_fm"])
def test_learning_on_a_tiny_hmm(name):
    hmm = planted_motif_hmm(4, seed=0)
    data = hmm.sample(2000, 16, generator=torch.Generator().manual_seed(0))
    reference = hmm.sample(400, 16, generator=torch.Generator().manual_seed(1))
    uniform = torch.randint(0, 4, (400, 16), generator=torch.Generator().manual_seed(3))
    method = build_method(name, 4)

    def evaluate(tokens):
        return hmm.nll_per_token(tokens), kmer_js_divergence(tokens, hmm, 4), mean_pairwise_hamming(tokens)

    def sample(net):
        return method.sample(net, 400, 16, 4, steps=30, generator=torch.Generator().manual_seed(2)).tokens

    true, random_letters = evaluate(reference), evaluate(uniform)
    torch.manual_seed(0)
    untrained = evaluate(sample(ConvSequenceNet(4, hidden=32, depth=2).eval()))
    torch.manual_seed(0)
    trained = evaluate(sample(_fit(method, ConvSequenceNet(4, hidden=32, depth=2), data, 200)))

    def close_to_the_data(m):
        return (abs(m[0] - true[0]) < 0.5 * abs(random_letters[0] - true[0])  # NLL: uniform letters are 0.48 off
                and m[1] < 0.5 * random_letters[1]                          # 3-mer statistics
                and abs(m[2] - true[2]) < 0.1)                               # diversity: no collapse

    assert close_to_the_data(trained), (trained, true, random_letters)
    # An untrained denoiser collapses onto a few letters: a low NLL but wrong statistics and no diversity.
    assert not close_to_the_data(untrained), untrained
    if name == "gumbel_fm":
        assert trained[1] < 0.02 and abs(trained[0] - true[0]) < 0.2 and abs(trained[2] - true[2]) < 0.03


def test_transformer_backbone_trains_a_step():
    net = TransformerSequenceNet(4, max_length=16, hidden=16, depth=1, heads=2)
    loss, _ = GumbelSoftmaxFM()(net, {"x1": one_hot(torch.randint(0, 4, (8, 16)), 4)})
    loss.backward()
    assert math.isfinite(float(loss.detach()))


def test_bad_inputs():
    net = ConvSequenceNet(4, hidden=8, depth=1)
    method = GumbelSoftmaxFM()
    with pytest.raises(ConfigError, match='"x1"'):
        method(net, {"x0": torch.zeros(2, 3, 4)})
    with pytest.raises(DTypeError, match="alphabet_size"):
        method(net, {"x1": torch.zeros(2, 3, dtype=torch.long)})
    from_indices, _ = GumbelSoftmaxFM(alphabet_size=4)(net, {"x1": torch.zeros(2, 3, dtype=torch.long)})
    assert math.isfinite(float(from_indices.detach()))
    with pytest.raises(ShapeError, match="one-hot"):
        method(net, {"x1": torch.full((2, 3, 4), 0.25)})
    with pytest.raises(ShapeError):
        GumbelSoftmaxFM(alphabet_size=5)(net, {"x1": one_hot(torch.zeros(2, 3, dtype=torch.long), 4)})
    with pytest.raises(ShapeError, match="logits shaped like x"):
        method(lambda x, t: x[..., :2], {"x1": one_hot(torch.zeros(2, 3, dtype=torch.long), 4)})
    with pytest.raises(ConfigError):
        GumbelSoftmaxPath(tau_max=0.0)
    with pytest.raises(ConfigError, match="noise"):
        build_method("gumbel_fm", 4, noise="cold")
    with pytest.raises(ConfigError):
        build_method("dirichlet_fm")
    with pytest.raises(ConfigError):
        method.sample(net, 2, 3, 4, steps=0)
    with pytest.raises(ConfigError, match="final"):
        method.sample(net, 2, 3, 4, steps=2, final="mode")
    with pytest.raises(ShapeError):
        net(torch.zeros(2, 3, 5), torch.zeros(2))
