"""Latent flow matching (flowzoo.vision.autoencoder, flowzoo.vision.latent): autoencoder shapes and KL term, the
latent scale, reconstruction and LFM learning on digits, the bound terms on cases with known answers, bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError
from flowzoo.core.training import TrainerConfig
from flowzoo.vision.autoencoder import (AutoencoderConfig, AutoencoderLoss, ConvAutoencoder, load_autoencoder,
                                        train_autoencoder)
from flowzoo.vision.datasets import load_images
from flowzoo.vision.latent import (LatentCodec, build_latent_net, encode_dataset, generate_latent, load_latent_fm,
                                   train_latent_fm)
from flowzoo.vision.latent_bound import decoder_lipschitz, lfm_bound_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(steps: int, batch: int = 64, lr: float = 2e-3, ema: float = 0.0) -> TrainerConfig:
    return TrainerConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=10, ema_decay=ema, checkpoint_every=0,
                         progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits"), load_images("digits", split="test")


@pytest.fixture(scope="module")
def autoencoder_run(digits, tmp_path_factory):
    # A module fixture is set up before the per-test one_thread fixture, so it sets the thread count itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = AutoencoderConfig(latent_channels=2, downsample=1, channels=16)
    try:
        yield train_autoencoder(digits[0], tmp_path_factory.mktemp("ae"), config=config, trainer=quiet(300))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("shape, latent", [((1, 28, 28), (4, 7, 7)), ((3, 28, 28), (4, 7, 7)),
                                           ((1, 32, 32), (4, 8, 8)), ((3, 32, 32), (4, 8, 8))])
@pytest.mark.parametrize("variational", [False, True])
def test_autoencoder_shapes(shape, latent, variational):
    ae = ConvAutoencoder(shape, latent_channels=4, downsample=2, channels=8, variational=variational)
    x = torch.randn(2, *shape)
    reconstruction, mean, logvar = ae(x)
    assert ae.latent_shape == latent and mean.shape == (2, *latent) and reconstruction.shape == x.shape
    assert (logvar is not None) == variational and (logvar is None or logvar.shape == mean.shape)
    assert ae.decode(ae.encode(x)).shape == x.shape


@pytest.mark.parametrize("net, latent", [("unet", (4, 7, 7)), ("unet", (4, 8, 8)), ("dit", (4, 7, 7))])
def test_latent_nets_fit_odd_and_even_latents(net, latent):
    model = build_latent_net(latent, net=net, width=16, res_blocks=1, num_classes=10)
    x = torch.randn(3, *latent)
    assert model(x, torch.rand(3), y=torch.tensor([0, 5, 10])).shape == x.shape
    with pytest.raises(ConfigError, match="net 'unet' or 'dit'"):
        build_latent_net(latent, net="mlp")


def test_autoencoder_rejects_sides_that_do_not_divide():
    with pytest.raises(ShapeError, match="multiples of 2\\*\\*downsample = 4"):
        ConvAutoencoder((1, 25, 25), downsample=2)
    with pytest.raises(ConfigError, match="variational"):
        AutoencoderConfig(beta=0.1)
    with pytest.raises(ConfigError, match="variational"):
        AutoencoderLoss(beta=0.1)(ConvAutoencoder((1, 8, 8), downsample=1, channels=4), {"x1": torch.zeros(2, 1, 8, 8)})


def test_kl_term_matches_hand_computation():
    ae = ConvAutoencoder((1, 8, 8), latent_channels=2, downsample=1, channels=4, variational=True)
    head = ae.encoder[-1]
    mean, logvar = 0.5, math.log(2.0)
    with torch.no_grad():  # constant posterior N(0.5, 2) for every latent value
        head.weight.zero_()
        head.bias.copy_(torch.tensor([mean, mean, logvar, logvar]))
    _, metrics = AutoencoderLoss(beta=1.0)(ae, {"x1": torch.randn(3, 1, 8, 8)})
    per_value = 0.5 * (mean ** 2 + 2.0 - 1.0 - logvar)
    assert metrics["kl"] == pytest.approx(per_value * (2 * 4 * 4) / 64, rel=1e-5)


def test_latent_scale_is_one_over_the_measured_std(digits):
    torch.manual_seed(0)
    ae = ConvAutoencoder((1, 8, 8), latent_channels=2, downsample=1, channels=4)
    images = digits[0].images
    codec = LatentCodec.fit(ae, images)
    with torch.no_grad():
        measured = float(ae.encode(images).double().std())
    assert codec.scale == pytest.approx(1.0 / measured, rel=1e-6)
    assert float(codec.encode(images).std()) == pytest.approx(1.0, rel=1e-4)
    z = codec.encode(images[:4])
    with torch.no_grad():
        assert torch.allclose(codec.decode(z), ae.decode(ae.encode(images[:4])), atol=1e-5)


def test_reconstruction_beats_the_mean_image(autoencoder_run, digits):
    train, test = digits
    ae = load_autoencoder(autoencoder_run, shape=train.shape)
    with torch.no_grad():
        mse = float((ae.decode(ae.encode(test.images)) - test.images).pow(2).mean())
    baseline = float((train.images.mean(0) - test.images).pow(2).mean())
    assert mse < 0.35 * baseline, (mse, baseline)
    assert (autoencoder_run / "reconstructions.png").is_file()


def test_autoencoder_for_another_shape_is_refused_with_the_file_and_shape(autoencoder_run, tmp_path):
    with pytest.raises(ShapeError) as error:
        load_autoencoder(autoencoder_run, shape=(1, 28, 28))
    message = str(error.value)
    assert str(autoencoder_run) in message and "1x28x28" in message and "1x8x8" in message
    codec = LatentCodec(load_autoencoder(autoencoder_run), 1.0, str(autoencoder_run))
    with pytest.raises(ShapeError, match="1x8x8"):
        encode_dataset(codec, load_images("digits", size=16))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_autoencoder(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no latent record"):
        load_latent_fm(autoencoder_run)


class ScaledIdentity(nn.Module):
    """E(x) = x / a, D(z) = a z: reconstruction exact, decoder Lipschitz a (times 1 / the codec's scale)."""

    def __init__(self, shape, a: float) -> None:
        super().__init__()
        self.shape, self.latent_shape, self.a = tuple(shape), tuple(shape), a
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return x / self.a

    def decode(self, z):
        return z * self.a


@pytest.mark.parametrize("a, scale", [(1.0, 1.0), (3.0, 2.0)])
def test_bound_terms_on_a_linear_codec(a, scale):
    gen = torch.Generator().manual_seed(0)
    codec = LatentCodec(ScaledIdentity((1, 4, 4), a), scale)
    data = torch.randn(60, 1, 4, 4, generator=gen)
    samples = torch.randn(60, 1, 4, 4, generator=gen) * 1.5 + 0.3
    terms = lfm_bound_terms(codec, data, samples, generator=gen)
    assert terms.recon_w2 == pytest.approx(0.0, abs=1e-5)
    assert terms.lipschitz == pytest.approx(a / scale, rel=1e-4)
    assert terms.measured_w2 == pytest.approx(a / scale * terms.latent_w2, rel=1e-4)
    assert terms.bound == pytest.approx(terms.measured_w2, rel=1e-4) and terms.n == 60


def test_decoder_lipschitz_finds_the_largest_singular_value():
    class Linear(nn.Module):
        shape = latent_shape = (1, 2, 2)

        def __init__(self):
            super().__init__()
            self.matrix = torch.diag(torch.tensor([0.5, 4.0, 1.0, 2.0]))

        def encode(self, x):
            return x

        def decode(self, z):
            return (z.flatten(1) @ self.matrix.T).view_as(z)

    sigma = decoder_lipschitz(LatentCodec(Linear(), 1.0), torch.randn(5, 1, 2, 2), iterations=50)
    assert sigma == pytest.approx(4.0, rel=1e-4)


def _pixel_w2_to(test_images, images):
    from flowzoo.core.analysis import wasserstein2

    return wasserstein2(test_images[:200], images[:200].clamp(-1, 1))


def test_tiny_latent_fm_learns_and_reloads(autoencoder_run, digits, tmp_path):
    train, test = digits
    torch.manual_seed(0)
    run = train_latent_fm(train, autoencoder_run, tmp_path / "lfm", width=16, trainer=quiet(150, batch=64, ema=0.99))
    assert run.codec.scale == pytest.approx(LatentCodec.fit(load_autoencoder(autoencoder_run), train.images).scale)
    labels = torch.arange(200) % 10
    gen = torch.Generator().manual_seed(1)
    trained = generate_latent(run.model, run.codec, 200, steps=10, labels=labels, generator=gen)
    untrained_net = build_latent_net(run.codec.latent_shape, width=16, num_classes=10).eval()
    untrained = generate_latent(untrained_net, run.codec, 200, steps=10, labels=labels,
                                generator=torch.Generator().manual_seed(1))
    w2_trained, w2_untrained = _pixel_w2_to(test.images, trained.images), _pixel_w2_to(test.images, untrained.images)
    assert w2_trained < 0.7 * w2_untrained, (w2_trained, w2_untrained)
    loaded = load_latent_fm(tmp_path / "lfm")
    assert loaded.codec.scale == run.codec.scale and loaded.class_cond and loaded.num_classes == 10
    again = generate_latent(loaded.model, loaded.codec, 200, steps=10, labels=labels,
                            generator=torch.Generator().manual_seed(1))
    assert torch.allclose(again.images, trained.images, atol=1e-5)
    adaptive = generate_latent(loaded.model, loaded.codec, 8, method="dopri5", labels=labels[:8], atol=1e-3, rtol=1e-3)
    assert adaptive.nfe > 2 and adaptive.images.shape == (8, 1, 8, 8)


def test_train_latent_fm_bad_input(autoencoder_run, digits, tmp_path):
    train = digits[0]
    unlabelled = dataclasses.replace(train, labels=None, num_classes=0)
    with pytest.raises(ConfigError, match="class_cond"):
        train_latent_fm(unlabelled, autoencoder_run, tmp_path / "a", trainer=quiet(1))
    with pytest.raises(ShapeError, match=str(autoencoder_run)):
        train_latent_fm(load_images("digits", size=16), autoencoder_run, tmp_path / "b", trainer=quiet(1))
