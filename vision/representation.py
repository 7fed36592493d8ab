r"""A representation autoencoder (RAE: Zheng, Xie et al., "Diffusion Transformers with Representation Autoencoders",
arXiv 2510.11690, §3): a FROZEN pretrained representation encoder, its feature map normalised per channel with
statistics of the training split, and a decoder trained to reconstruct the image from it; the flow then runs on
the (high-dimensional) normalised representations. MF-RAE (Hu, Lai, Wu, Mitsufuji, Ermon, arXiv 2511.13019)
trains its few-step flow map in that space (:func:`flowzoo.vision.latent.train_latent_fm`, ``objective="mfrae"``).

**Encoder.** RAE freezes DINOv2 and keeps its patch tokens. flowzoo ships no DINOv2 weights, so the stand-in is an
in-repo representation network: the convolutional trunk of the data set's cached feature classifier
(:func:`flowzoo.vision.features.load_feature_classifier`) trained for
:data:`~flowzoo.vision.methods.GUIDANCE_EPOCHS` epochs, the network BFM's feature guidance also uses, taken at its
last spatial feature map, before the pooling (for 28×28 MNIST a (64, 7, 7) map, four times the pixel count, as
DINOv2's 768×16×16 tokens are four times a 256-px image). It is deliberately NOT the evaluator's classifier
(default epochs): the Fréchet distance is measured in that network's features, and a latent space built from
the same network would make the evaluation circular. Images of at most 16×16 pixels get an MLP classifier
with no spatial map; they are refused (load them larger with ``size=``).

**Latent.** With the encoder's features :math:`f(x) \in \mathbb R^{c \times h \times w}`,

.. math::  z = \frac{f(x) - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad \epsilon = 10^{-5},

where :math:`\mu, \sigma^2 \in \mathbb R^c` are measured once over the training images and pixels (RAE's
released statistics are per channel and position; per channel keeps them well estimated on a few thousand
images). They are buffers of the module, so they are stored in the run's checkpoint and reused on reload,
never recomputed.

**Decoder** :math:`D`: a convolutional net that upsamples the latent back through the encoder's resolutions to
the image, trained on :math:`\|D(z + n) - x\|^2` with RAE's noise augmentation :math:`n = \sigma\epsilon`,
:math:`\sigma \sim U(0, \tau)` per image (``noise_tau``), which makes it tolerant of generated latents; the
encoder stays frozen (``requires_grad`` False, eval mode). The encoder's weights are not part of the checkpoint:
the run records which classifier it froze (data spec, epochs, seed, load options, feature version) and a SHA-256
of its weights, and :meth:`RepresentationAutoencoder.from_record` rebuilds it from the cache (training it
deterministically where it is missing) and refuses weights that differ. Time plays no part here.
Rationale: a semantic latent space in which a flow learns (and a flow map distils) faster than on pixels.

Example:
    >>> encoder = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.SiLU())
    >>> rae = RepresentationAutoencoder(encoder, (1, 12, 12), channels=8)
    >>> rae = rae.fit_statistics(torch.randn(16, 1, 12, 12))
    >>> rae.latent_shape, tuple(rae.decode(rae.encode(torch.zeros(2, 1, 12, 12))).shape)
    ((4, 6, 6), (2, 1, 12, 12))
    >>> sorted(rae.state_dict())[:2]     # the frozen encoder is not saved with the decoder
    ['decoder.0.bias', 'decoder.0.weight']
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.validation import check_nonnegative, check_positive_int, check_tensor

__all__ = ["REPRESENTATION_KIND", "check_representation_shape", "representation_trunk", "load_representation_encoder",
           "weights_checksum", "RepresentationAutoencoder"]

REPRESENTATION_KIND = "representation"  # the autoencoder record's "kind" of this module's network
EPS = 1e-5  # RAE's epsilon of the latent normalisation


def weights_checksum(module: nn.Module) -> str:
    """SHA-256 over ``module``'s state (names, shapes, dtypes and float32 bytes, in name order).

    Example:
        >>> weights_checksum(nn.Linear(2, 2)) != weights_checksum(nn.Linear(2, 2))
        True
    """
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def check_representation_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Refuse images of at most 256 pixels (their feature classifier is an MLP, without a spatial feature map)
    before any classifier is trained; returns the shape.

    Example:
        >>> check_representation_shape((1, 28, 28))
        (1, 28, 28)
    """
    c, h, w = (int(v) for v in shape)
    if h * w <= 256:
        raise ConfigError(expected("images of more than 16x16 pixels for a representation autoencoder (its encoder "
                                   "is a CNN feature map)", f"{h}x{w} images, whose feature classifier is an MLP",
                                   "load the images larger (e.g. --size 28), or use --ae.kind conv"))
    return c, h, w


def representation_trunk(classifier: nn.Module) -> nn.Sequential:
    """The layers of a :class:`~flowzoo.vision.features.FeatureClassifier`'s CNN body before its pooling (its last
    spatial feature map), frozen and in eval mode; an MLP classifier (images of at most 256 pixels) is refused.

    Example:
        >>> from flowzoo.vision.features import FeatureClassifier
        >>> trunk = representation_trunk(FeatureClassifier((1, 28, 28), num_classes=10))
        >>> tuple(trunk(torch.zeros(1, 1, 28, 28)).shape)
        (1, 64, 7, 7)
    """
    layers = list(getattr(classifier, "body", []))
    cut = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.AdaptiveAvgPool2d)), None)
    if not layers or cut is None or not any(isinstance(layer, nn.Conv2d) for layer in layers[:cut]):
        shape = getattr(classifier, "shape", "?")
        raise ConfigError(expected("a convolutional feature classifier (images of more than 16x16 pixels) for the "
                                   "representation encoder", f"an MLP classifier for images {shape}",
                                   "load the images larger (e.g. --size 28), or use --ae.kind conv"))
    return nn.Sequential(*layers[:cut]).eval().requires_grad_(False)


def load_representation_encoder(spec: str, *, epochs: int | None = None, seed: int = 0,
                                load: Mapping[str, Any] | None = None, cache_dir: str | None = None,
                                verbose: bool = False) -> tuple[nn.Sequential, dict[str, Any]]:
    """The frozen encoder of data set ``spec`` (module docstring) and the record that identifies it.

    Args:
        spec: the data spec (``"mnist"``, ``"folder:PATH"``, ...) the classifier is trained on.
        epochs: the classifier's epochs (None: :data:`~flowzoo.vision.methods.GUIDANCE_EPOCHS`).
        seed: its seed (and its train/test split's).
        load: options of :func:`~flowzoo.vision.datasets.load_images` (``size``, ``pad``, ``channels``).
        cache_dir: the feature cache (default ``$FLOWZOO_CACHE/vision``); not recorded.
        verbose: say so when the classifier is trained.

    Returns ``(encoder, record)`` with ``record`` = spec, epochs, seed, load options, feature version (the inputs of
    the classifier cache's key), the image shape, the classifier's test accuracy and ``sha256`` of the encoder's
    weights.
    """
    from flowzoo.vision.features import FEATURE_VERSION, load_feature_classifier
    from flowzoo.vision.methods import GUIDANCE_EPOCHS

    epochs = GUIDANCE_EPOCHS if epochs is None else check_positive_int(epochs, "encoder epochs")
    load = {str(k): v for k, v in (load or {}).items()}
    classifier, accuracy = load_feature_classifier(spec, cache_dir=cache_dir, seed=seed, epochs=epochs,
                                                   verbose=verbose, **load)
    encoder = representation_trunk(classifier)
    record = {"spec": spec, "epochs": epochs, "seed": seed, "load": load, "feature_version": FEATURE_VERSION,
              "shape": list(classifier.shape), "classifier_accuracy": float(accuracy),
              "sha256": weights_checksum(encoder)}
    return encoder, record


class RepresentationAutoencoder(nn.Module):
    """Frozen ``encoder`` + per-channel normalisation + a trainable conv decoder (module docstring).

    Args:
        encoder: a frozen network mapping images (B, C, H, W) to a feature map (B, c, h, w).
        shape: (C, H, W) of the images.
        channels: the decoder's width at the image resolution (doubled at each coarser resolution, up to 4x).
        noise_tau: RAE's noise augmentation of the latents while the decoder trains (0: off).
        encoder_record: what identifies the encoder (:func:`load_representation_encoder`), kept in :meth:`record`.

    It plugs into :class:`~flowzoo.vision.latent.LatentCodec` like
    :class:`~flowzoo.vision.autoencoder.ConvAutoencoder`: :meth:`encode`, :meth:`decode`, ``shape``,
    ``latent_shape``, :meth:`record` / :meth:`from_record`; ``forward(x)`` returns ``(reconstruction, latent,
    None)`` for :class:`~flowzoo.vision.autoencoder.AutoencoderLoss`.
    """

    def __init__(self, encoder: nn.Module, shape: Sequence[int], *, channels: int = 32, noise_tau: float = 0.0,
                 encoder_record: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ShapeError(expected("an image shape (C, H, W)", tuple(shape), "pass data.shape"))
        self.shape = tuple(check_positive_int(v, "shape") for v in shape)
        self.channels = check_positive_int(channels, "channels")
        self.noise_tau = check_nonnegative(noise_tau, "noise_tau")
        self.encoder_record = dict(encoder_record or {})
        self.encoder = encoder.eval().requires_grad_(False)
        sizes = self._resolutions()
        self.latent_channels, self.latent_size = int(sizes[-1][0]), (int(sizes[-1][1]), int(sizes[-1][2]))
        self.register_buffer("latent_mean", torch.zeros(self.latent_channels))
        self.register_buffer("latent_var", torch.ones(self.latent_channels))
        self.register_buffer("statistics_count", torch.zeros((), dtype=torch.long))
        self.decoder = self._build_decoder([size[1:] for size in sizes])

    def _resolutions(self) -> list[tuple[int, int, int]]:
        """(channels, h, w) of the image and after each resolution change of the encoder."""
        sizes = [self.shape]

        def note(module, inputs, output):
            if tuple(output.shape[-2:]) != tuple(sizes[-1][1:]):
                sizes.append(tuple(int(v) for v in output.shape[1:]))

        hooks = [m.register_forward_hook(note) for m in self.encoder.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                out = self.encoder(torch.zeros(1, *self.shape, device=self._encoder_device()))
        finally:
            for hook in hooks:
                hook.remove()
        if out.dim() != 4:
            raise ShapeError(expected("an encoder that returns a feature map (B, c, h, w)",
                                      f"shape {tuple(out.shape)}", "pass a convolutional trunk"))
        if tuple(out.shape[-2:]) != tuple(sizes[-1][1:]) or sizes[-1][0] != out.shape[1]:
            sizes.append(tuple(int(v) for v in out.shape[1:]))
        return sizes

    def _encoder_device(self) -> torch.device:
        return next(self.encoder.parameters(), torch.empty(0)).device

    def _build_decoder(self, resolutions: list[tuple[int, ...]]) -> nn.Sequential:
        """3x3 convolutions at the latent's resolution, then nearest upsampling through the encoder's resolutions
        (coarse to fine) with two convolutions each, then a 3x3 convolution to the image channels."""
        levels = len(resolutions) - 1
        widths = [self.channels * 2 ** min(i, 2) for i in range(levels + 1)]   # widths[i] at resolution i
        layers: list[nn.Module] = [nn.Conv2d(self.latent_channels, widths[levels], 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(widths[levels], widths[levels], 3, padding=1), nn.SiLU()]
        for level in range(levels - 1, -1, -1):
            layers += [nn.Upsample(size=tuple(resolutions[level]), mode="nearest"),
                       nn.Conv2d(widths[level + 1], widths[level], 3, padding=1), nn.SiLU(),
                       nn.Conv2d(widths[level], widths[level], 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(widths[0], self.shape[0], 3, padding=1))
        return nn.Sequential(*layers)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of one latent: the encoder's last feature map."""
        return (self.latent_channels, *self.latent_size)

    @property
    def statistics_fitted(self) -> bool:
        """Whether :meth:`fit_statistics` has measured the normalisation (or a checkpoint restored it)."""
        return int(self.statistics_count) > 0

    def train(self, mode: bool = True) -> "RepresentationAutoencoder":
        """Train or eval mode for the decoder; the frozen encoder always stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False):
        """The decoder's weights and the normalisation statistics; the frozen encoder is left out (module
        docstring: it is rebuilt from the feature cache and checked by its checksum)."""
        state = super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in state if k.startswith(f"{prefix}encoder.")]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load :meth:`state_dict`'s entries; the encoder keeps its own (frozen) weights."""
        full = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        full.update(state_dict)
        return super().load_state_dict(full, strict=strict, assign=assign)

    def _check_images(self, x: object) -> torch.Tensor:
        x = check_tensor(x, "images", min_dim=4, finite=False)
        if tuple(x.shape[1:]) != self.shape:
            raise ShapeError(expected(f"images (B, {', '.join(map(str, self.shape))})", f"shape {tuple(x.shape)}",
                                      "encode images of the shape the autoencoder was built for"))
        return x

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's raw feature map (B, c, h, w) of images (B, C, H, W)."""
        return self.encoder(self._check_images(x)).float()

    @torch.no_grad()
    def fit_statistics(self, images: torch.Tensor, batch_size: int = 512) -> "RepresentationAutoencoder":
        """Measure the per-channel mean and variance of the features of ``images`` (the training split) over images
        and positions (float64 sums), store them in the buffers and return ``self``."""
        images = check_tensor(images, "images", min_dim=4)
        total = torch.zeros(self.latent_channels, dtype=torch.float64)
        squares, count = torch.zeros_like(total), 0
        device = self._encoder_device()
        for start in range(0, len(images), batch_size):
            f = self.features(images[start:start + batch_size].to(device)).double().cpu()
            total += f.sum((0, 2, 3))
            squares += f.pow(2).sum((0, 2, 3))
            count += f.shape[0] * f.shape[2] * f.shape[3]
        mean = total / count
        self.latent_mean.copy_(mean.float())
        self.latent_var.copy_((squares / count - mean.pow(2)).clamp_min(0.0).float())
        self.statistics_count.fill_(len(images))
        return self

    def _normalise(self, features: torch.Tensor) -> torch.Tensor:
        mean, var = self.latent_mean.view(1, -1, 1, 1), self.latent_var.view(1, -1, 1, 1)
        return (features - mean) / torch.sqrt(var + EPS)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised representation (B, c, h, w) of images (B, C, H, W); deterministic, no gradient."""
        return self._normalise(self.features(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) decoded from normalised representations (B, c, h, w)."""
        z = check_tensor(z, "latents", min_dim=4, finite=False)
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ShapeError(expected(f"latents (B, {', '.join(map(str, self.latent_shape))})",
                                      f"shape {tuple(z.shape)}", "decode latents of this autoencoder"))
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """``(reconstruction, latent, None)``; while training, the decoder sees the latent plus RAE's noise."""
        if not self.statistics_fitted:
            raise ConfigError(expected("normalisation statistics before training the decoder", "none measured",
                                       "call fit_statistics(training_images) first"))
        z = self.encode(x)
        decoded = z
        if self.training and self.noise_tau > 0:
            sigma = self.noise_tau * torch.rand((z.shape[0], 1, 1, 1), device=z.device)
            decoded = z + sigma * torch.randn_like(z)
        return self.decoder(decoded), z, None

    def record(self) -> dict[str, Any]:
        """The values :meth:`from_record` needs (stored in ``config.yaml``): kind, shapes, decoder width, noise and
        the encoder's identity."""
        return {"kind": REPRESENTATION_KIND, "shape": list(self.shape), "latent_shape": list(self.latent_shape),
                "channels": self.channels, "noise_tau": self.noise_tau, "encoder": dict(self.encoder_record)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, cache_dir: str | None = None,
                    where: str = "the run") -> "RepresentationAutoencoder":
        """The (untrained-decoder) network a :meth:`record` describes, with its frozen encoder rebuilt from the
        feature cache; a CheckpointError when the rebuilt encoder's checksum is not the recorded one."""
        stored = dict(record.get("encoder") or {})
        if "spec" not in stored or "sha256" not in stored:
            raise CheckpointError(expected("a representation autoencoder record naming its frozen encoder "
                                           "(encoder.spec, encoder.sha256)", f"{where}: {sorted(stored)}",
                                           "retrain the autoencoder with --ae.kind representation"))
        encoder, rebuilt = load_representation_encoder(stored["spec"], epochs=int(stored["epochs"]),
                                                       seed=int(stored.get("seed", 0)), load=stored.get("load"),
                                                       cache_dir=cache_dir)
        if rebuilt["sha256"] != stored["sha256"]:
            raise CheckpointError(expected(
                f"the frozen encoder {where} was trained with (the {stored['spec']} feature classifier, "
                f"{stored['epochs']} epochs, sha256 {stored['sha256'][:12]})",
                f"a classifier in this machine's feature cache with sha256 {rebuilt['sha256'][:12]}",
                "copy the feature cache ($FLOWZOO_CACHE/vision, or ~/.cache/flowzoo/vision) from the machine that "
                "trained the run, or retrain the autoencoder here"))
        return cls(encoder, tuple(record["shape"]), channels=int(record["channels"]),
                   noise_tau=float(record.get("noise_tau", 0.0)), encoder_record=stored)
