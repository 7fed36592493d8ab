r"""SymmFlow: one flow that generates images from semantic maps and segments images into maps.

Symmetrical Flow Matching (Caetano, Viviers, de With & van der Sommen, AAAI 2026, arXiv 2506.10634, §3) trains
one network on the concatenated state :math:`z = (x, m)` of an image x and its encoded semantic map m
(:class:`~flowzoo.vision.segmentation.MapCodec`), with the two modalities on opposite time directions. With
:math:`t \sim U(0, 1)`, :math:`\sigma_{min} = 10^{-4}` and independent noises :math:`\epsilon_x, \epsilon_m`:

.. math::
    x_t = (1 - (1-\sigma_{min}) t)\, \epsilon_x + t\, x, \qquad
    m_t = (1 - (1-\sigma_{min}) t)\, m + t\, \epsilon_m,

    \mathcal L = w\, \| v^x_\theta(z_t, t) - (x - (1-\sigma_{min})\epsilon_x) \|^2
        + (1-w)\, \| v^m_\theta(z_t, t) - (\epsilon_m - (1-\sigma_{min}) m) \|^2 ,

the map being dequantised with uniform noise first (the paper's trap: a map of exact codes makes the flow
degenerate). **Time convention.** ``t`` is the image's flowzoo time (0 = noise, 1 = image) and the network is
called ``model(z, t)``; the map sits at its own flowzoo time ``1 - t`` (0 = noise, 1 = map), so the paper's single
time needs no renaming. :func:`generate` integrates t from 0 to 1 starting at :math:`(\epsilon_x, m)` and reads
the image channels; :func:`segment` integrates t from 1 to 0 starting at :math:`(x, \epsilon_m)` and reads the
map channels (the map runs forward in its own time). :func:`classify` is the paper's one-step classification:
segment in one Euler step, then read the class off the map; the paper trains on constant maps (every pixel holds
the image's class), which ``background=False`` reads, and on a semantic map with a background class the
foreground pixels vote. One Euler step from t = 1 returns the network's estimate of E[m | x]: the one-hot code
decodes that mean to the most probable class (argmax), the colour code to the nearest code, which need not be;
but one-hot feeds the network one noise channel per class at t ≈ 1, which it learns to ignore only slowly, so
with many classes and a short training the three-channel colour code learns faster.

The single-direction baselines are the same network and loss with one modality held clean: ``direction=
"generate"`` is map-conditioned image FM (the map channels never move), ``"segment"`` is image-conditioned map
FM. :class:`PooledClassifier` is a classifier of the same U-Net, and :func:`fit` a small training loop for all
of them. Rationale: one network, three tasks, and each task compared with a model trained for it alone.

Example:
    >>> from flowzoo.vision.segmentation import MapCodec
    >>> net = SymmFlowNet(1, MapCodec(3), channels=8, head_channels=8)
    >>> batch = {"x1": torch.rand(2, 1, 8, 8) * 2 - 1, "map": torch.randint(0, 3, (2, 8, 8))}
    >>> loss, metrics = SymmFlowLoss(net.codec)(net, batch)
    >>> sorted(metrics), segment(net, batch["x1"], steps=1).extras["labels"].shape
    (['loss', 'loss_image', 'loss_map'], torch.Size([2, 8, 8]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from flowzoo.core.batching import per_sample_mean, per_sample_weight, reduce_weighted
from flowzoo.core.errors import ConfigError, ShapeError, TrainingDivergedError, expected
from flowzoo.core.nets import UNet
from flowzoo.core.sampling import SampleResult, integrate
from flowzoo.core.validation import (as_item_time, broadcast_time, check_bool, check_int, check_number, check_positive,
                                     check_positive_int, check_probability, check_tensor)
from flowzoo.vision.segmentation import MapCodec, SegmentationData, check_maps

__all__ = ["SymmFlowNet", "SymmFlowLoss", "PooledClassifier", "ClassifierLoss", "generate", "segment", "classify",
           "fit", "segmentation_batch", "DIRECTIONS", "SMALL_UNET"]

DIRECTIONS = ("symmetric", "generate", "segment")
SMALL_UNET = {"channels": 16, "multipliers": (1, 2), "res_blocks": 1, "attention_levels": (), "head_channels": 32}
"""A U-Net small enough to train on CPU in a minute (16×16 to 32×32 images)."""


def _check_direction(direction: object) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(expected(f"direction in {DIRECTIONS}", repr(direction),
                                   "'symmetric' is SymmFlow; the others are its single-direction baselines"))
    return direction


def _check_images(images: object, channels: int, name: str = "images") -> torch.Tensor:
    images = check_tensor(images, name, min_dim=4)
    if images.dim() != 4 or images.shape[1] != channels:
        raise ShapeError(expected(f"{name} (B, {channels}, H, W)", f"shape {tuple(images.shape)}",
                                  f"pass images with {channels} channel(s), batch first"))
    return images


class SymmFlowNet(nn.Module):
    """The joint velocity ``model(z, t)`` over z = (image, encoded map) concatenated on channels.

    Args:
        image_channels: channels of the images (1 grey, 3 RGB).
        codec: the map encoding; its ``channels`` follow the image's in z.
        direction: ``"symmetric"`` (SymmFlow), or a single-direction baseline whose held modality gets zero
            velocity (``"generate"``: the map; ``"segment"``: the image).
        skip: add the linear skip term c(t)·z (below) to the U-Net's output.
        sigma_min: σ_min of the paths (the loss's), used by the skip coefficients.
        **unet: :class:`~flowzoo.core.nets.UNet` settings (default :data:`SMALL_UNET`).

    **Skip term.** Near t = 1 the map's velocity is almost ε_m − m, i.e. the noise the network is fed, which a
    small network learns to copy only slowly, and one-step segmentation reads exactly that copy. As EDM's
    preconditioning (Karras et al., arXiv 2206.00364, §5, c_skip), the output adds the best linear predictor of
    each modality's target from its own state for unit-variance, zero-mean data: with k = 1 − σ_min and
    b = 1 − k t, the image's state b·ε_x + t·x against its target x − k·ε_x and the map's state b·m + t·ε_m
    against ε_m − k·m give the same coefficient :math:`c(t) = (t - k b)/(b^2 + t^2)` (−k at t = 0, ≈ 1 at
    t = 1). It changes the function the network represents, not the objective or its minimiser.
    """

    def __init__(self, image_channels: int, codec: MapCodec, *, direction: str = "symmetric", skip: bool = True,
                 sigma_min: float = 1e-4, **unet) -> None:
        super().__init__()
        self.image_channels = check_positive_int(image_channels, "image_channels")
        if not isinstance(codec, MapCodec):
            raise ConfigError(expected("codec as a MapCodec", type(codec).__name__, "pass MapCodec(num_classes)"))
        self.codec, self.direction = codec, _check_direction(direction)
        self.skip = check_bool(skip, "skip")
        self.sigma_min = check_number(sigma_min, "sigma_min", low=0.0, high=1.0, strict_high=True)
        self.backbone = UNet(in_channels=self.image_channels + codec.channels, **{**SMALL_UNET, **unet})

    def skip_coefficient(self, t: torch.Tensor) -> torch.Tensor:
        """c(t), shape (B,), of the skip term at image times ``t`` (the same for both modalities)."""
        k = 1.0 - self.sigma_min
        b = 1.0 - k * t
        return (t - k * b) / (b * b + t * t)

    def forward(self, z: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The velocity dz/dt at image time ``t``, shaped like ``z``."""
        v = self.backbone(z, t)
        if self.skip:
            v = v + broadcast_time(self.skip_coefficient(as_item_time(t, z, "t", "image")), z) * z
        if self.direction == "generate":
            v = torch.cat([v[:, :self.image_channels], torch.zeros_like(v[:, self.image_channels:])], 1)
        elif self.direction == "segment":
            v = torch.cat([torch.zeros_like(v[:, :self.image_channels]), v[:, self.image_channels:]], 1)
        return v


class SymmFlowLoss:
    r"""The symmetric objective (module docstring; the paper's ``symmetrical_flow_matching_loss``).

    The batch holds ``"x1"`` (images (B, C, H, W) in [−1, 1]) and ``"map"`` (class maps (B, H, W)); optional
    ``"x0"`` (the image noise :math:`\epsilon_x`), ``"map0"`` (the map noise :math:`\epsilon_m`, shaped like the
    encoded map) and ``"weight"`` (B,). A single-direction ``direction`` keeps the other modality clean and drops
    its term.

    Args:
        codec: encodes the maps.
        image_weight: w, the image term's weight (``1 - w`` for the map's) in the symmetric loss.
        sigma_min: σ_min of the paths.
        dequantize: width of the uniform noise added to the encoded map (0 switches it off).
        direction: ``"symmetric"``, ``"generate"`` or ``"segment"``.
        generator: drives t, the noises and the dequantisation.
    """

    def __init__(self, codec: MapCodec, *, image_weight: float = 0.5, sigma_min: float = 1e-4,
                 dequantize: float = 0.1, direction: str = "symmetric",
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(codec, MapCodec):
            raise ConfigError(expected("codec as a MapCodec", type(codec).__name__, "pass MapCodec(num_classes)"))
        self.codec = codec
        self.image_weight = check_probability(image_weight, "image_weight")
        self.sigma_min = check_number(sigma_min, "sigma_min", low=0.0, high=1.0, strict_high=True)
        self.dequantize = check_number(dequantize, "dequantize", low=0.0, high=codec.min_distance, strict_high=True,
                                       fix=f"keep it below the codes' spacing {codec.min_distance:g}")
        self.direction = _check_direction(direction)
        self.generator = generator

    def _noise(self, batch: Mapping, key: str, like: torch.Tensor) -> torch.Tensor:
        if key not in batch:
            return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)
        noise = check_tensor(batch[key], key)
        if noise.shape != like.shape:
            raise ShapeError(expected(f"{key} of shape {tuple(like.shape)}", f"shape {tuple(noise.shape)}",
                                      f"draw {key} shaped like the encoded data"))
        return noise

    def __call__(self, model, batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, Mapping) or "x1" not in batch or "map" not in batch:
            raise ConfigError(expected("a batch mapping with 'x1' (images) and 'map' (class maps)",
                                       type(batch).__name__ if not isinstance(batch, Mapping) else sorted(batch),
                                       "build it with segmentation_batch(data, index)"))
        x = check_tensor(batch["x1"], "x1", min_dim=4)
        if x.dim() != 4:
            raise ShapeError(expected("x1 images (B, C, H, W)", f"shape {tuple(x.shape)}", "pass a batch of images"))
        maps = check_maps(batch["map"], self.codec.num_classes, "map", shape=tuple(x.shape[2:]))
        if maps.shape[0] != x.shape[0]:
            raise ShapeError(expected("one map per image", f"{maps.shape[0]} maps, {x.shape[0]} images",
                                      "pair each image with its map"))
        m = self.codec.encode(maps, dequantize=self.dequantize, generator=self.generator).to(x)
        eps_x, eps_m = self._noise(batch, "x0", x), self._noise(batch, "map0", m)
        t = torch.rand(x.shape[0], generator=self.generator, device=x.device, dtype=x.dtype)
        tb, keep = broadcast_time(t, x), 1.0 - self.sigma_min
        x_t = x if self.direction == "segment" else (1 - keep * tb) * eps_x + tb * x
        m_t = m if self.direction == "generate" else (1 - keep * tb) * m + tb * eps_m
        v = model(torch.cat([x_t, m_t], 1), t)
        c = x.shape[1]
        if not isinstance(v, torch.Tensor) or v.shape != (x.shape[0], c + m.shape[1], *x.shape[2:]):
            raise ShapeError(expected("the model to return a velocity shaped like z = (image, map)",
                                      tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__,
                                      "build the model with in_channels = image channels + codec.channels"))
        loss_x = per_sample_mean((v[:, :c] - (x - keep * eps_x)).square())
        loss_m = per_sample_mean((v[:, c:] - (eps_m - keep * m)).square())
        w = {"symmetric": self.image_weight, "generate": 1.0, "segment": 0.0}[self.direction]
        weight = per_sample_weight(batch["weight"], x.shape[0], "weight") if "weight" in batch else None
        loss = reduce_weighted(w * loss_x + (1 - w) * loss_m, weight)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(expected("a finite SymmFlow loss", float(loss), "lower the learning rate"))
        return loss, {"loss": float(loss.detach()), "loss_image": float(loss_x.detach().mean()),
                      "loss_map": float(loss_m.detach().mean())}


def _parts(model) -> tuple[int, MapCodec]:
    channels, codec = getattr(model, "image_channels", None), getattr(model, "codec", None)
    if not isinstance(channels, int) or not isinstance(codec, MapCodec):
        raise ConfigError(expected("a SymmFlow model with .image_channels and .codec", type(model).__name__,
                                   "build it with SymmFlowNet(image_channels, codec)"))
    return channels, codec


def generate(model, maps: torch.Tensor, *, steps: int = 10, method: str = "euler", x0: torch.Tensor | None = None,
             generator: torch.Generator | None = None, callback=None, return_trajectory: bool = False,
             progress: bool = False) -> SampleResult:
    """Images from class maps (B, H, W): integrate z from (ε_x, m) at t = 0 to t = 1 and read the image.

    ``x0`` replaces the image noise. Returns a :class:`~flowzoo.core.sampling.SampleResult` whose ``x`` is the
    images (B, C, H, W) and ``extras["state"]`` the final joint state; ``trajectory`` holds the joint states.
    """
    channels, codec = _parts(model)
    m = codec.encode(check_maps(maps, codec.num_classes))
    if x0 is None:
        x0 = torch.randn((m.shape[0], channels, *m.shape[2:]), generator=generator).to(m.device)
    x0 = _check_images(x0, channels, "x0")
    if x0.shape[0] != m.shape[0] or x0.shape[2:] != m.shape[2:]:
        raise ShapeError(expected(f"x0 of shape {(m.shape[0], channels, *m.shape[2:])}", tuple(x0.shape),
                                  "draw one noise image per map, of the maps' size"))
    out = integrate(model, torch.cat([x0, m.to(x0)], 1), method=method, steps=check_positive_int(steps, "steps"),
                    t0=0.0, t1=1.0, callback=callback, return_trajectory=return_trajectory, progress=progress)
    return SampleResult(out.x[:, :channels], out.nfe, out.trajectory, out.times, {"state": out.x})


def segment(model, images: torch.Tensor, *, steps: int = 1, method: str = "euler",
            generator: torch.Generator | None = None, callback=None, return_trajectory: bool = False,
            progress: bool = False) -> SampleResult:
    """Maps from images (B, C, H, W): integrate z from (x, ε_m) at t = 1 back to t = 0 and read the map.

    Returns a :class:`~flowzoo.core.sampling.SampleResult` whose ``x`` is the encoded map (B, K, H, W), with
    ``extras["labels"]`` its decoded class map (B, H, W) and ``extras["state"]`` the final joint state.
    """
    channels, codec = _parts(model)
    images = _check_images(images, channels)
    eps = torch.randn((images.shape[0], codec.channels, *images.shape[2:]), generator=generator).to(images)
    out = integrate(model, torch.cat([images, eps], 1), method=method, steps=check_positive_int(steps, "steps"),
                    t0=1.0, t1=0.0, callback=callback, return_trajectory=return_trajectory, progress=progress)
    m = out.x[:, channels:]
    return SampleResult(m, out.nfe, out.trajectory, out.times, {"labels": codec.decode(m), "state": out.x})


def classify(model, images: torch.Tensor, *, steps: int = 1, multilabel: bool = False, background: bool = True,
             min_pixels: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Image-level classes from a ``steps``-step segmentation (one Euler step by default) by pixel vote.

    With ``background`` class 0 is background and never voted for; labels are then class − 1. Returns (B,)
    int64 labels (the class with most pixels; when none is predicted, the one whose code is nearest on
    average), or with ``multilabel`` a (B, L) bool tensor of the classes with at least ``min_pixels`` pixels.
    """
    multilabel, background = check_bool(multilabel, "multilabel"), check_bool(background, "background")
    min_pixels = check_positive_int(min_pixels, "min_pixels")
    result = segment(model, images, steps=steps, generator=generator)
    _, codec = _parts(model)
    first = 1 if background else 0
    counts = F.one_hot(result.extras["labels"].flatten(1), codec.num_classes).sum(1)[:, first:]
    if multilabel:
        return counts >= min_pixels
    fallback = codec.scores(result.x).mean((2, 3))[:, first:]
    return torch.where(counts.sum(1) > 0, counts.argmax(1), fallback.argmax(1))


class PooledClassifier(nn.Module):
    """The classifier baseline: the same U-Net as :class:`SymmFlowNet`, whose per-pixel outputs in
    ``num_outputs`` extra channels are averaged over the image into logits (global average pooling of class
    maps, a fully convolutional classifier). Call ``model(images) -> (B, num_outputs)``."""

    def __init__(self, image_channels: int, num_outputs: int, **unet) -> None:
        super().__init__()
        self.image_channels = check_positive_int(image_channels, "image_channels")
        self.num_outputs = check_int(num_outputs, "num_outputs", low=2)
        self.backbone = UNet(in_channels=self.image_channels + self.num_outputs, **{**SMALL_UNET, **unet})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images, self.image_channels)
        blank = images.new_zeros((images.shape[0], self.num_outputs, *images.shape[2:]))
        return self.backbone(torch.cat([images, blank], 1), 1.0)[:, self.image_channels:].mean((2, 3))


class ClassifierLoss:
    """Cross-entropy of ``model(batch["x1"])`` against ``batch["y"]`` (B,) labels, or with ``multilabel``
    binary cross-entropy against ``batch["multilabel"]`` (B, L)."""

    def __init__(self, multilabel: bool = False) -> None:
        self.multilabel = check_bool(multilabel, "multilabel")

    def __call__(self, model, batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["x1"])
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, batch["multilabel"].to(logits))
        else:
            loss = F.cross_entropy(logits, batch["y"])
        return loss, {"loss": float(loss.detach())}


def segmentation_batch(data: SegmentationData, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch of rows ``index``: ``{"x1": images, "map": maps, "y": labels, "multilabel": multilabels}``."""
    return {"x1": data.images[index], "map": data.maps[index], "y": data.labels[index],
            "multilabel": data.multilabels[index]}


def fit(model: nn.Module, loss, data: SegmentationData, *, steps: int, batch_size: int = 32, lr: float = 2e-3,
        seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``model`` on random batches of ``data`` with AdamW, a short warm-up and cosine decay; returns the
    per-step losses. A small loop for tests and benchmarks; long runs belong to the core Trainer."""
    steps, batch_size = check_positive_int(steps, "steps"), check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="fit", leave=False)
    losses = []
    model.train()
    for _ in range(steps):
        value, _ = loss(model, segmentation_batch(data, torch.randint(len(data), (batch_size,), generator=gen)))
        opt.zero_grad(set_to_none=True)
        value.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(value.detach()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return losses
