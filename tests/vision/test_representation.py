"""RAE's representation autoencoder: a frozen encoder, stored normalisation, a decoder that learns, checksum checks."""

import json

import pytest
import torch
from torch import nn

from flowzoo.core.errors import CheckpointError, ConfigError
from flowzoo.core.training import TrainerConfig
from flowzoo.vision.autoencoder import AutoencoderConfig, load_autoencoder, train_autoencoder
from flowzoo.vision.datasets import load_images
from flowzoo.vision.features import FeatureClassifier
from flowzoo.vision.latent import LatentCodec
from flowzoo.vision.representation import (RepresentationAutoencoder, load_representation_encoder,
                                           representation_trunk, weights_checksum)

pytestmark = pytest.mark.usefixtures("one_thread")
LOAD = {"size": 20}   # digits at 20 px: the feature classifier is a CNN with a (64, 5, 5) map


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The vision tests' shared feature cache, on one thread (module fixtures run before ``one_thread``)."""
    folder = tmp_path_factory.getbasetemp() / "flowzoo_cache"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWZOO_CACHE", str(folder))
        yield folder
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A representation autoencoder trained for 200 steps on 20-px digits: (run dir, model, data, encoder before)."""
    data = load_images("digits", **LOAD)
    before = {k: v.clone() for k, v in load_representation_encoder("digits", load=LOAD)[0].state_dict().items()}
    out = tmp_path_factory.mktemp("rae") / "run"
    trainer = TrainerConfig(steps=200, batch_size=32, lr=3e-3, warmup_steps=20, ema_decay=0.0, checkpoint_every=0,
                            log_every=100, progress=False, tensorboard=False)
    config = AutoencoderConfig(kind="representation", channels=8, noise_tau=0.1)
    with pytest.MonkeyPatch.context() as patch:   # keep the model the Trainer trained, to look at its gradients
        built = []
        original = RepresentationAutoencoder.fit_statistics

        def spy(self, images, batch_size=512):
            built.append(self)
            return original(self, images, batch_size)
        patch.setattr(RepresentationAutoencoder, "fit_statistics", spy)
        run = train_autoencoder(data, out, config=config, trainer=trainer, spec="digits", load=LOAD)
    return run, built[0], data, before


def test_the_encoder_stays_frozen_while_the_decoder_trains(trained):
    run, model, data, before = trained
    assert all(not p.requires_grad and p.grad is None for p in model.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not model.encoder.training
    model.train()
    assert model.decoder.training and not model.encoder.training
    assert weights_checksum(model.encoder) == model.encoder_record["sha256"]


def test_decode_encode_beats_the_mean_image(trained):
    run, _, data, _ = trained
    rae = load_autoencoder(run, shape=data.shape)
    images = data.images[:300]
    with torch.no_grad():
        mse = float((rae.decode(rae.encode(images)) - images).pow(2).mean())
    trivial = float((images - data.images.mean(0)).pow(2).mean())
    assert mse < 0.4 * trivial, (mse, trivial)


def test_statistics_are_stored_and_reused_on_reload(trained, monkeypatch):
    run, model, data, _ = trained
    raw = model.features(data.images)
    assert torch.allclose(model.latent_mean, raw.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(model.latent_var, raw.var((0, 2, 3), unbiased=False), atol=1e-4, rtol=1e-4)
    z = model.encode(data.images)   # hand computation of the per-channel normalisation
    expected = (raw - raw.mean((0, 2, 3), keepdim=True)) / (raw.var((0, 2, 3), unbiased=False, keepdim=True)
                                                            + 1e-5).sqrt()
    assert torch.allclose(z, expected, atol=1e-3)

    def refuse(*args, **kwargs):
        raise AssertionError("the statistics were recomputed")
    monkeypatch.setattr(RepresentationAutoencoder, "fit_statistics", refuse)
    reloaded = load_autoencoder(run)
    assert torch.equal(reloaded.latent_mean, model.latent_mean) and reloaded.statistics_fitted
    assert "encoder.0.weight" not in reloaded.state_dict()
    codec = LatentCodec.from_record({"autoencoder": str(run), "scale": 1.0, "shape": [1, 20, 20]})
    assert codec.latent_shape == (64, 5, 5)


def test_a_different_frozen_encoder_is_refused(trained, cache, tmp_path, monkeypatch):
    run = trained[0]
    copy = tmp_path / "cache"
    (copy / "vision").mkdir(parents=True)
    for file in (cache / "vision").iterdir():
        (copy / "vision" / file.name).write_bytes(file.read_bytes())
    from safetensors.torch import load_file, save_file

    for meta in (copy / "vision").glob("*.json"):   # perturb the 4-epoch classifier the encoder comes from
        key = json.loads(meta.read_text())["key"]
        if key["epochs"] == 4 and key["spec"] == "digits" and key["load"] == {"size": "20"}:
            weights = meta.with_suffix(".safetensors")
            state = load_file(str(weights))
            state["body.0.weight"] = state["body.0.weight"] + 1e-3
            save_file(state, str(weights))
    monkeypatch.setenv("FLOWZOO_CACHE", str(copy))
    with pytest.raises(CheckpointError, match="sha256") as error:
        load_autoencoder(run)
    assert "feature cache" in str(error.value)


def test_small_images_and_bad_options_are_refused():
    with pytest.raises(ConfigError, match="MLP"):
        representation_trunk(FeatureClassifier((1, 8, 8), num_classes=10))
    for bad in ({"kind": "vit"}, {"kind": "representation", "variational": True}, {"noise_tau": 0.5},
                {"kind": "representation", "noise_tau": -1.0}):
        with pytest.raises(ConfigError):
            AutoencoderConfig(**bad)
    rae = RepresentationAutoencoder(nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1)), (1, 8, 8), channels=4)
    with pytest.raises(ConfigError, match="statistics"):
        rae(torch.zeros(2, 1, 8, 8))


def test_state_dict_round_trip_keeps_the_encoder_and_noise_only_in_training():
    encoder = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.SiLU())
    rae = RepresentationAutoencoder(encoder, (1, 9, 9), channels=4, noise_tau=0.5)
    rae.fit_statistics(torch.randn(8, 1, 9, 9))
    assert rae.latent_shape == (3, 5, 5) and rae.decode(torch.zeros(1, 3, 5, 5)).shape == (1, 1, 9, 9)
    state = rae.state_dict()
    assert not any(k.startswith("encoder.") for k in state)
    other = RepresentationAutoencoder(encoder, (1, 9, 9), channels=4)
    other.load_state_dict(state)
    x = torch.randn(4, 1, 9, 9)
    assert torch.equal(other.eval()(x)[0], rae.eval()(x)[0])
    rae.train()
    assert not torch.equal(rae(x)[0], rae(x)[0])   # RAE's noise while the decoder trains
