r"""A small convolutional autoencoder (optionally a KL-regularised VAE) whose latent space latent flow matching
trains in (Dao, Phung, Nguyen, Tran, "Flow Matching in Latent Space", arXiv 2307.08698, §3; the VAE of Rombach
et al., "High-Resolution Image Synthesis with Latent Diffusion Models", arXiv 2112.10752, §3).

The encoder :math:`E` maps an image (C, H, W) to a latent (c, H/f, W/f) with ``f = 2 ** downsample`` (strided
3×3 convolutions, SiLU); the decoder :math:`D` mirrors it (nearest upsampling + convolutions). No batch or group
normalisation: every image is encoded and decoded on its own, so the decoder's Jacobian at one latent does not
depend on the rest of the batch (the Lipschitz estimate of :func:`flowzoo.vision.latent_bound.lfm_bound_terms` relies
on that). As a VAE the encoder outputs a mean and a log-variance and the training latent is
:math:`z = \mu + \sigma\epsilon`; encoding for flow matching uses the mean (the posterior's mode), so it is
deterministic.

:class:`AutoencoderLoss` is the training objective

.. math::
    \mathcal L = \operatorname{mean}|x - D(z)|^p + \beta\,
    \frac{1}{CHW}\,\tfrac12\sum_j \left(\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2\right),

with :math:`p = 1` (``"l1"``, LDM's pixel term) or 2 (``"l2"``) and the KL divergence to :math:`N(0, I)` (LDM
Eq. 25 of its appendix) divided by the number of pixel values, so that ``beta`` weighs it against the per-value
reconstruction error. Time plays no part here. Rationale: the flow then runs in a space f² / (C/c) times smaller,
so each training step and each sampling evaluation is cheaper.

``AutoencoderConfig(kind="representation")`` trains RAE's representation autoencoder instead (a frozen
representation encoder and a decoder, :mod:`flowzoo.vision.representation`) with the same loss and Trainer;
:func:`load_autoencoder` rebuilds either kind from the ``kind`` its run recorded.

Example:
    >>> ae = ConvAutoencoder((1, 28, 28), latent_channels=4, downsample=2, channels=8)
    >>> ae.latent_shape, ae.decode(ae.encode(torch.zeros(2, 1, 28, 28))).shape
    ((4, 7, 7), torch.Size([2, 1, 28, 28]))
    >>> loss, metrics = AutoencoderLoss()(ae, {"x1": torch.zeros(2, 1, 28, 28)})
    >>> sorted(metrics)
    ['kl', 'mse', 'recon']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flowzoo.core.config import config_to_dict, option_help
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.training import Trainer, TrainerConfig, is_main_process, read_checkpoint_record
from flowzoo.core.validation import check_bool, check_int, check_nonnegative, check_positive_int, check_tensor
from flowzoo.vision.datasets import BUNDLED, ImageBatchSampler, ImageData
from flowzoo.vision.metrics import save_image_grid
from flowzoo.vision.representation import (REPRESENTATION_KIND, RepresentationAutoencoder,
                                           check_representation_shape, load_representation_encoder)

__all__ = ["AutoencoderConfig", "ConvAutoencoder", "AutoencoderLoss", "build_representation_autoencoder",
           "train_autoencoder", "load_autoencoder", "AUTOENCODER_KEY", "KINDS", "shape_text"]

AUTOENCODER_KEY = "autoencoder"  # where config.yaml records the architecture and the data it was trained on
KINDS = ("conv", REPRESENTATION_KIND)


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 28, 28)`` as ``"1x28x28"``, the form error messages use."""
    return "x".join(str(int(v)) for v in shape)


@dataclass
class AutoencoderConfig:
    """Architecture and loss of an autoencoder run: a :class:`ConvAutoencoder` (``kind="conv"``) or RAE's
    :class:`~flowzoo.vision.representation.RepresentationAutoencoder` (``kind="representation"``, whose latent is
    the frozen encoder's feature map: ``latent_channels``, ``downsample`` and the VAE options do not apply)."""

    latent_channels: int = field(default=4, metadata=option_help("channels of the latent"))
    downsample: int = field(default=2, metadata=option_help("stride-2 stages (latent side: image side / 2**n)"))
    channels: int = field(default=32, metadata=option_help("width of the first stage (doubled per stage)"))
    variational: bool = field(default=False, metadata=option_help("a VAE (mean and log-variance, KL term)"))
    beta: float = field(default=0.0, metadata=option_help("weight of the KL term (variational only)"))
    # l2 by default: on mostly-background images (digits) the L1 median sticks at the blank image for hundreds
    # of steps, while the squared error pulls the strokes in at once.
    reconstruction: Literal["l1", "l2"] = field(default="l2", metadata=option_help("reconstruction error"))
    # last, so that the conv fields keep their positions for positional construction
    kind: Literal["conv", "representation"] = field(default="conv", metadata=option_help(
        "conv (a conv AE / VAE) or representation (RAE: frozen feature-classifier encoder + trained decoder)"))
    encoder_epochs: int = field(default=0, metadata=option_help(
        "representation: epochs of the frozen feature classifier (0: BFM's guidance network's)"))
    noise_tau: float = field(default=0.0, metadata=option_help(
        "representation: RAE's latent noise while the decoder trains, sigma ~ U(0, tau) (RAE: 0.8)"))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(expected(f"--ae.kind in {KINDS}", repr(self.kind), "pass --ae.kind conv"))
        check_int(self.encoder_epochs, "encoder_epochs", low=0)
        check_nonnegative(self.noise_tau, "noise_tau")
        if self.kind == "conv" and self.noise_tau > 0:
            raise ConfigError(expected("noise_tau = 0 for a conv autoencoder (RAE's latent noise)",
                                       f"noise_tau={self.noise_tau}", "pass --ae.kind representation, or drop it"))
        if self.kind == REPRESENTATION_KIND and self.variational:
            raise ConfigError(expected("a deterministic representation autoencoder", "variational=True",
                                       "drop --ae.variational, or use --ae.kind conv"))
        check_positive_int(self.latent_channels, "latent_channels")
        check_int(self.downsample, "downsample", low=0, high=4)
        check_positive_int(self.channels, "channels")
        check_bool(self.variational, "variational")
        check_nonnegative(self.beta, "beta")
        if self.beta > 0 and not self.variational:
            raise ConfigError(expected("beta = 0 for a plain autoencoder (the KL term needs variational=True)",
                                       f"beta={self.beta}", "pass variational=True, or beta=0"))
        if self.reconstruction not in ("l1", "l2"):
            raise ConfigError(expected("reconstruction 'l1' or 'l2'", repr(self.reconstruction), "pass 'l2'"))


class ConvAutoencoder(nn.Module):
    """Convolutional (variational) autoencoder for images (C, H, W) with H and W multiples of ``2 ** downsample``.

    Args:
        shape: (C, H, W) of the images, e.g. (1, 28, 28) or (3, 32, 32).
        latent_channels: channels c of the latent (c, H / f, W / f).
        downsample: number of stride-2 stages (f = 2 ** downsample).
        channels: width of the first stage, doubled at each stage.
        variational: also predict a log-variance (VAE).

    ``forward(x)`` returns ``(reconstruction, mean, logvar)`` with ``logvar`` None for a plain autoencoder (one
    call, so that the Trainer's DDP wrapper sees it); :meth:`encode` / :meth:`decode` are the deterministic maps.
    """

    def __init__(self, shape: Sequence[int], latent_channels: int = 4, downsample: int = 2, channels: int = 32,
                 variational: bool = False) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ShapeError(expected("an image shape (C, H, W)", tuple(shape), "pass data.shape"))
        self.shape = tuple(check_positive_int(v, "shape") for v in shape)
        self.latent_channels = check_positive_int(latent_channels, "latent_channels")
        self.downsample = check_int(downsample, "downsample", low=0, high=4)
        self.channels = check_positive_int(channels, "channels")
        self.variational = check_bool(variational, "variational")
        c, h, w = self.shape
        factor = 2 ** self.downsample
        if h % factor or w % factor:
            raise ShapeError(expected(f"image sides that are multiples of 2**downsample = {factor}",
                                      shape_text(self.shape),
                                      "pad the images (load_images(pad=...)) or lower downsample"))
        widths = [self.channels * 2 ** i for i in range(self.downsample + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1), nn.SiLU()]
        for low, high in zip(widths[:-1], widths[1:]):
            encoder += [nn.Conv2d(low, high, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(high, high, 3, padding=1),
                        nn.SiLU()]
        encoder.append(nn.Conv2d(widths[-1], self.latent_channels * (2 if self.variational else 1), 1))
        decoder: list[nn.Module] = [nn.Conv2d(self.latent_channels, widths[-1], 3, padding=1), nn.SiLU()]
        for high, low in zip(widths[:0:-1], widths[-2::-1]):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(high, low, 3, padding=1), nn.SiLU(),
                        nn.Conv2d(low, low, 3, padding=1), nn.SiLU()]
        decoder.append(nn.Conv2d(widths[0], c, 3, padding=1))
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, H / f, W / f) of one latent."""
        factor = 2 ** self.downsample
        return self.latent_channels, self.shape[1] // factor, self.shape[2] // factor

    def record(self) -> dict[str, Any]:
        """The constructor's arguments as plain values (stored in ``config.yaml``; :meth:`from_record` inverts it)."""
        return {"shape": list(self.shape), "latent_channels": self.latent_channels, "downsample": self.downsample,
                "channels": self.channels, "variational": self.variational}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ConvAutoencoder":
        """The (untrained) network a :meth:`record` describes."""
        return cls(tuple(record["shape"]), int(record["latent_channels"]), int(record["downsample"]),
                   int(record["channels"]), bool(record["variational"]))

    def _check_images(self, x: object) -> torch.Tensor:
        x = check_tensor(x, "images", min_dim=4, finite=False)
        if tuple(x.shape[1:]) != self.shape:
            raise ShapeError(expected(f"images (B, {', '.join(map(str, self.shape))})", f"shape {tuple(x.shape)}",
                                      "encode images of the shape the autoencoder was built for"))
        return x

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's mean and log-variance (None for a plain autoencoder) of images (B, C, H, W)."""
        out = self.encoder(self._check_images(x))
        if not self.variational:
            return out, None
        mean, logvar = out.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent (the posterior's mean) of images (B, C, H, W)."""
        return self.encode_distribution(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) decoded from latents (B, c, h, w)."""
        z = check_tensor(z, "latents", min_dim=4, finite=False)
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ShapeError(expected(f"latents (B, {', '.join(map(str, self.latent_shape))})",
                                      f"shape {tuple(z.shape)}", "decode latents of this autoencoder"))
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(reconstruction, mean, logvar)``; a VAE decodes a reparameterised sample while training."""
        mean, logvar = self.encode_distribution(x)
        z = mean
        if logvar is not None and self.training:
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decoder(z), mean, logvar


class AutoencoderLoss:
    """Reconstruction error plus ``beta`` times the per-value KL term (module docstring) for a
    :class:`ConvAutoencoder`; ``loss(model, batch) -> (loss, {"recon", "kl", "mse"})`` with the images in ``"x1"``.

    Args:
        reconstruction: ``"l1"`` or ``"l2"``.
        beta: weight of the KL term; it needs a variational model.
    """

    def __init__(self, reconstruction: str = "l2", beta: float = 0.0) -> None:
        if reconstruction not in ("l1", "l2"):
            raise ConfigError(expected("reconstruction 'l1' or 'l2'", repr(reconstruction), "pass 'l2'"))
        self.reconstruction = reconstruction
        self.beta = check_nonnegative(beta, "beta")

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x = check_tensor(batch["x1"], "batch['x1']", min_dim=4)
        reconstruction, mean, logvar = model(x)
        error = reconstruction - x
        recon = error.abs().mean() if self.reconstruction == "l1" else error.pow(2).mean()
        kl = torch.zeros((), device=x.device)
        if logvar is not None:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean() / x[0].numel()
        elif self.beta > 0:
            raise ConfigError(expected("a variational autoencoder for beta > 0", "a plain autoencoder",
                                       "build it with variational=True, or pass beta=0"))
        loss = recon + self.beta * kl
        return loss, {"recon": float(recon.detach()), "kl": float(kl.detach()),
                      "mse": float(error.detach().pow(2).mean())}


def _default_trainer(out_dir: str) -> TrainerConfig:
    return TrainerConfig(steps=2000, batch_size=64, lr=1e-3, warmup_steps=50, ema_decay=0.0, checkpoint_every=0,
                         log_every=50, out_dir=out_dir)


def build_representation_autoencoder(data: ImageData, config: AutoencoderConfig, *, spec: str | None = None,
                                     load: Mapping[str, Any] | None = None,
                                     cache_dir: str | None = None) -> RepresentationAutoencoder:
    """RAE's autoencoder for ``data``: the frozen encoder of data set ``spec`` (default: ``data``'s bundled set)
    loaded with ``load`` (``size``, ``pad``, ``channels``: those ``data`` was loaded with), its normalisation
    measured on ``data``, and an untrained decoder of width ``config.channels``."""
    check_representation_shape(data.shape)
    kind = data.name.partition("/")[0]
    if spec is None and kind not in BUNDLED:
        raise ConfigError(expected("the data spec of a representation autoencoder (its encoder is that data set's "
                                   "feature classifier)", f"{data.name} from {data.source}",
                                   "pass spec= the spec the images were loaded with (folder:PATH, cifar10:PATH)"))
    encoder, record = load_representation_encoder(spec or kind, epochs=config.encoder_epochs or None,
                                                  load=load, cache_dir=cache_dir, verbose=True)
    if tuple(record["shape"]) != tuple(data.shape):
        raise ShapeError(expected(f"a feature classifier for the images' shape {shape_text(data.shape)}",
                                  f"{spec or kind} loaded with {dict(load or {})} gives {shape_text(record['shape'])}",
                                  "pass load= the size/pad/channels options the images were loaded with"))
    model = RepresentationAutoencoder(encoder, data.shape, channels=config.channels, noise_tau=config.noise_tau,
                                      encoder_record=record)
    return model.fit_statistics(data.images)


def train_autoencoder(data: ImageData, out_dir: str | Path, *, config: AutoencoderConfig | None = None,
                      trainer: TrainerConfig | None = None, spec: str | None = None,
                      load: Mapping[str, Any] | None = None) -> Path:
    """Train a :class:`ConvAutoencoder` (or, with ``config.kind="representation"``, the decoder of RAE's
    representation autoencoder, :func:`build_representation_autoencoder`) on ``data`` with the core Trainer;
    returns the run directory.

    ``trainer`` sets steps, batch size, learning rate, progress, ... (default: 2000 steps of 64 images at
    learning rate 1e-3, no EMA); its ``out_dir`` is replaced by ``out_dir``. The run's ``config.yaml`` records
    the architecture and the data under ``autoencoder`` so that :func:`load_autoencoder` can rebuild it; each
    evaluation reports the reconstruction MSE and PSNR of up to 256 training images, and ``reconstructions.png``
    shows eight training images above their reconstructions. ``spec`` and ``load``: the data spec and load options
    of ``data``, which name the representation encoder (``kind="representation"`` only).
    """
    if not isinstance(data, ImageData):
        raise ConfigError(expected("data as an ImageData (load_images(...))", type(data).__name__,
                                   "load it with flowzoo.vision.datasets.load_images"))
    config = AutoencoderConfig() if config is None else config
    trainer = _default_trainer(str(out_dir)) if trainer is None else dataclasses.replace(trainer, out_dir=str(out_dir))
    torch.manual_seed(trainer.seed)
    if config.kind == REPRESENTATION_KIND:
        model: nn.Module = build_representation_autoencoder(data, config, spec=spec, load=load)
    else:
        model = ConvAutoencoder(data.shape, config.latent_channels, config.downsample, config.channels,
                                config.variational)
    probe = data.images[:256]

    def evaluate(eval_model: nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        with torch.no_grad():
            device = next(eval_model.parameters()).device
            mse = float((eval_model.decode(eval_model.encode(probe.to(device))).cpu() - probe).pow(2).mean())
        return {"recon_mse": mse, "recon_psnr": float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))))}

    record = {**model.record(), "data": data.name, "source": data.source, "loss": config_to_dict(config)}
    run_config = {AUTOENCODER_KEY: record, "trainer": config_to_dict(trainer)}
    fitted = Trainer(model, AutoencoderLoss(config.reconstruction, config.beta),
                     ImageBatchSampler(data, trainer.batch_size, labels=False), trainer, evaluate=evaluate,
                     run_config=run_config)
    fitted.fit()
    if is_main_process():  # originals (top row) above their reconstructions
        with torch.no_grad():
            originals = probe[:8]
            decoded = model.eval().decode(model.encode(originals.to(fitted.device))).cpu()
        save_image_grid(torch.cat([originals, decoded]).clamp(-1, 1), Path(out_dir) / "reconstructions.png",
                        nrow=len(originals), scale=max(1, min(4, 64 // data.shape[-1])))
    return Path(out_dir)


def load_autoencoder(path: str | Path, *, shape: Sequence[int] | None = None
                     ) -> ConvAutoencoder | RepresentationAutoencoder:
    """Rebuild the autoencoder of a :func:`train_autoencoder` run (its directory or a checkpoint), in eval mode:
    the kind its record names (a conv autoencoder, or a representation autoencoder whose frozen encoder is rebuilt
    from the feature cache and checked against the recorded checksum).

    ``shape``: the (C, H, W) of the images it will encode; a run trained on another shape raises a ShapeError
    naming the checkpoint and both shapes.
    """
    checkpoint, record, _ = read_checkpoint_record(path, AUTOENCODER_KEY, run_of="train_autoencoder",
                                                   fix="pass the out_dir of train_autoencoder(data, out_dir)",
                                                   required="shape")
    stored = tuple(int(v) for v in record["shape"])
    if shape is not None and tuple(int(v) for v in shape) != stored:
        raise ShapeError(expected(f"an autoencoder for images of shape {shape_text(shape)}",
                                  f"{checkpoint.path}, trained on {record.get('data', '?')} images of shape "
                                  f"{shape_text(stored)}", "train an autoencoder on this data set "
                                  "(train_autoencoder), or load the data with the shape it was trained on"))
    kind = record.get("kind", "conv")
    if kind not in KINDS:
        raise CheckpointError(expected(f"an autoencoder kind in {KINDS}", f"{checkpoint.path}: {kind!r}",
                                       "pass a run of this version of train_autoencoder"))
    model: ConvAutoencoder | RepresentationAutoencoder
    if kind == REPRESENTATION_KIND:
        model = RepresentationAutoencoder.from_record(record, where=str(checkpoint.path))
    else:
        model = ConvAutoencoder.from_record(record)
    model.load_state_dict(checkpoint.inference_weights)
    return model.eval()
