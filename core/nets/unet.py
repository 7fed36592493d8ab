r"""An image U-Net (ADM / torchcfm layout) as a velocity model and as a two-time flow map.

The architecture is the ADM U-Net of Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis"
(NeurIPS 2021, arXiv 2105.05233; openai/guided-diffusion ``unet.py``) in the form torchcfm ships
(``torchcfm/models/unet/unet.py``; Tong et al., TMLR 2024, arXiv 2302.00482) and trains on CIFAR-10
(``examples/images/cifar10``): a stem convolution, then per resolution level ``res_blocks`` residual blocks
(GroupNorm, SiLU, 3x3 convolution; the time embedding added between the two convolutions), self-attention at
the levels in ``attention_levels`` with ``head_channels`` channels per head, a strided-convolution downsample
between levels, a middle block (residual, attention, residual), the mirrored decoder whose blocks take the
encoder's activations as skip connections (nearest upsample + convolution), and a GroupNorm-SiLU-convolution head.
:meth:`UNet.cifar10` is torchcfm's CIFAR-10 configuration (channels 128, multipliers (1, 2, 2, 2), two residual
blocks per level, attention at 16x16, 64 channels per head).

Two deliberate differences from ADM:

* Attention is written as plain matrix products and a softmax, not fused ``scaled_dot_product_attention``:
  fused kernels have no forward-mode derivative, and MeanFlow's target needs one
  (:mod:`flowzoo.core.fewstep.forward_ad`).
* Weights keep PyTorch's default initialisation (ADM zero-initialises each block's last layer).

**Gradient checkpointing.** With ``gradient_checkpointing=True`` each encoder, middle and decoder block (residual
block and its attention) runs under :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``) while the
network trains with gradients enabled: its activations are recomputed in the backward pass instead of stored,
which trades compute for memory, with the same outputs and gradients (dropout's random state is replayed).
A forward pass on forward-mode dual tensors (MeanFlow's JVP, :mod:`flowzoo.core.fewstep.forward_ad`) is not
checkpointed, so JVPs and their back-propagation work as without the option.

**Time.** ``t`` runs from 0 (noise) to 1 (data), flowzoo's convention, and enters through
:class:`~flowzoo.core.nets.mlp.SinusoidalTimeEmbedding` with ``time_scale`` 1 by default, as torchcfm feeds
its times in [0, 1] unscaled: the features vary slowly in t, so a finite-difference derivative in time (MeanFlow's
``derivative="finite_difference"``) stays accurate.

**Flow map.** :class:`FlowMapUNet` is the same network conditioned on two times, called ``model(x, s, t)`` as
in :mod:`flowzoo.core.fewstep.flowmap`: the average velocity over [s, t] of the state ``x`` at time ``s``, so
one step is ``x_t = x_s + (t - s) * model(x_s, s, t)``. The start time ``s`` and the gap ``t - s`` each get a
sinusoidal embedding and an MLP and the two are summed (MeanFlow's (t, t - r) conditioning, Geng et al. 2025,
arXiv 2505.13447 §4, with its r, t renamed to flowzoo's s, t). The gap is formed inside the network, so a JVP
along (v, 1, 0) over (x, s, t) is the total derivative d/ds. At ``s = t`` it is a velocity model
(:meth:`FlowMapUNet.velocity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets.mlp import SinusoidalTimeEmbedding
from flowzoo.core.validation import (as_item_time, check_bool, check_class_labels, check_int, check_number,
                                     check_tensor)

__all__ = ["UNet", "FlowMapUNet"]

Tensor = torch.Tensor
_FIX = "see UNet.cifar10() for a working configuration"


def _norm(channels: int) -> nn.GroupNorm:
    # 32 groups as ADM. Narrow layers get fewer, but at least two channels per group: a group of one channel
    # normalises away the per-channel shift by which the time embedding enters a residual block.
    groups = math.gcd(32, channels)
    while groups > 1 and channels // groups < 2:
        groups //= 2
    return nn.GroupNorm(groups, channels)


class _ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(channels_in), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, channels_out)
        self.norm2, self.drop = _norm(channels_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        out = self.conv1(F.silu(self.norm1(h))) + self.emb(F.silu(emb))[:, :, None, None]
        out = self.conv2(self.drop(F.silu(self.norm2(out))))
        return self.skip(h) + out


class _Attention(nn.Module):
    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels)
        self.qkv, self.out = nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(channels, channels, 1)

    def forward(self, h: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h).reshape(b, c, -1)).reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, 1)
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(q.shape[1]), dim=-1)
        mixed = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, -1)
        return h + self.out(mixed).reshape(b, c, height, width)


def _time_mlp(channels: int, emb_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))


class _UNetBody(nn.Module):
    """The layers shared by :class:`UNet` and :class:`FlowMapUNet`; subclasses build the embedding ``emb``."""

    def __init__(self, in_channels: int, channels: int, multipliers: Sequence[int], res_blocks: int,
                 attention_levels: Sequence[int], head_channels: int, dropout: float, num_classes: int,
                 time_scale: float, gradient_checkpointing: bool = False):
        super().__init__()
        self.gradient_checkpointing = check_bool(gradient_checkpointing, "gradient_checkpointing")
        self.in_channels = check_int(in_channels, "in_channels", low=1, fix=_FIX)
        self.channels = check_int(channels, "channels", low=2, fix=_FIX)
        if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, Sequence) or not multipliers:
            raise ConfigError(expected("multipliers as a non-empty sequence of integers", repr(multipliers),
                                       "pass e.g. multipliers=(1, 2, 2, 2)"))
        multipliers = tuple(check_int(m, "each multiplier", low=1, fix=_FIX) for m in multipliers)
        res_blocks = check_int(res_blocks, "res_blocks", low=1, fix=_FIX)
        attention_levels = tuple(attention_levels)
        if not set(attention_levels) <= set(range(len(multipliers))):
            raise ConfigError(expected(f"attention_levels among the levels 0..{len(multipliers) - 1}",
                                       attention_levels, "index levels from 0 (full resolution)"))
        head_channels = check_int(head_channels, "head_channels", low=1, fix=_FIX)
        dropout = check_number(dropout, "dropout", low=0.0, high=1.0, fix="pass a probability in [0, 1]")
        self.num_classes = check_int(num_classes, "num_classes", low=0, fix=_FIX)
        self.multipliers = multipliers
        emb_dim = 4 * self.channels
        self.time_features = SinusoidalTimeEmbedding(
            self.channels, scale=check_number(time_scale, "time_scale", low=0.0, strict_low=True))
        # Row num_classes is the null label of classifier-free guidance, as in MLPVelocity.
        self.label_embedding = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes else None
        self.stem = nn.Conv2d(self.in_channels, self.channels, 3, padding=1)
        self.down, skips, width = nn.ModuleList(), [self.channels], self.channels
        for level, mult in enumerate(multipliers):
            for _ in range(res_blocks):
                block = nn.ModuleList([_ResBlock(width, mult * self.channels, emb_dim, dropout)])
                width = mult * self.channels
                if level in attention_levels:
                    block.append(_Attention(width, head_channels))
                self.down.append(block)
                skips.append(width)
            if level < len(multipliers) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(width, width, 3, stride=2, padding=1)]))
                skips.append(width)
        self.middle = nn.ModuleList([_ResBlock(width, width, emb_dim, dropout), _Attention(width, head_channels),
                                     _ResBlock(width, width, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(multipliers))):
            for index in range(res_blocks + 1):
                block = nn.ModuleList([_ResBlock(width + skips.pop(), mult * self.channels, emb_dim, dropout)])
                width = mult * self.channels
                if level in attention_levels:
                    block.append(_Attention(width, head_channels))
                if level > 0 and index == res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(width, width, 3, padding=1))
                self.up.append(block)
        self.head = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, self.in_channels, 3, padding=1))

    @classmethod
    def cifar10(cls, dropout: float = 0.0, num_classes: int = 0, gradient_checkpointing: bool = False):
        """torchcfm's CIFAR-10 configuration (3x32x32 images; torchcfm trains it with dropout 0.1)."""
        return cls(3, 128, (1, 2, 2, 2), 2, (1,), 64, dropout=dropout, num_classes=num_classes,
                   gradient_checkpointing=gradient_checkpointing)

    @property
    def null_class(self) -> int:
        """The label index meaning "unconditional" (``num_classes``), for condition dropout and CFG."""
        return self.num_classes

    def _check_images(self, x: object) -> Tensor:
        # No NaN check: it would synchronise with the GPU on every training step (the objectives check batches).
        x = check_tensor(x, "x", min_dim=4, finite=False)
        factor = 2 ** (len(self.multipliers) - 1)
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ShapeError(expected(
                f"images (B, {self.in_channels}, H, W) with H and W multiples of {factor}", f"shape {tuple(x.shape)}",
                f"pad or crop to a multiple of {factor}, or build the net with in_channels={x.shape[1]}"
                if x.dim() == 4 else "pass a batch of images (B, C, H, W)"))
        return x

    def _labels(self, y: Tensor | None, batch: int) -> Tensor | float:
        labels = check_class_labels(y, batch, self.num_classes)
        return 0.0 if labels is None else self.label_embedding(labels)

    @staticmethod
    def _run_block(block: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, (_ResBlock, _Attention)) else layer(h)
        return h

    def _backbone(self, x: Tensor, emb: Tensor) -> Tensor:
        run = self._run_block
        # A forward-mode pass (dual tensors) is never checkpointed: its recomputation would save other tensors.
        dual = any(fwAD.unpack_dual(value).tangent is not None for value in (x, emb))
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and not dual:
            def run(block: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
                return checkpoint(self._run_block, block, h, emb, use_reentrant=False)
        h = self.stem(x)
        kept = [h]
        for block in self.down:
            h = run(block, h, emb)
            kept.append(h)
        h = run(self.middle, h, emb)
        for block in self.up:
            h = run(block, torch.cat([h, kept.pop()], dim=1), emb)
        return self.head(h)


class UNet(_UNetBody):
    """A velocity model ``v(x, t, y=None)`` on images (B, C, H, W): the ADM / torchcfm U-Net (module docstring).

    Args:
        in_channels: image channels (also the output's).
        channels: width of the first level; level ``i`` has ``multipliers[i] * channels``.
        multipliers: one width multiplier per resolution level; H and W must be multiples of
            ``2 ** (len(multipliers) - 1)``.
        res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_levels: levels (0 = full resolution) with self-attention after each residual block.
        head_channels: channels per attention head.
        dropout: dropout inside the residual blocks.
        num_classes: class labels for conditioning (0: none); label ``num_classes`` is the null class.
        time_scale: multiplies t before the sinusoidal features.
        gradient_checkpointing: recompute each block's activations in the backward pass (less memory, more time).

    Example:
        >>> net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> net(torch.randn(2, 1, 8, 8), torch.rand(2)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int = 3, channels: int = 128, multipliers: Sequence[int] = (1, 2, 2, 2),
                 res_blocks: int = 2, attention_levels: Sequence[int] = (1,), head_channels: int = 64,
                 dropout: float = 0.0, num_classes: int = 0, time_scale: float = 1.0,
                 gradient_checkpointing: bool = False):
        super().__init__(in_channels, channels, multipliers, res_blocks, attention_levels, head_channels, dropout,
                         num_classes, time_scale, gradient_checkpointing)
        self.time_embed = _time_mlp(self.channels, 4 * self.channels)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The velocity at time ``t`` (a number or (B,)), shaped like ``x``."""
        x = self._check_images(x)
        t = as_item_time(t, x, "t", "image")
        emb = self.time_embed(self.time_features(t).to(x.dtype)) + self._labels(y, x.shape[0])
        return self._backbone(x, emb)


class FlowMapUNet(_UNetBody):
    """A two-time flow map ``u(x, s, t, y=None)`` on images: the average velocity over [s, t] (module docstring).

    The arguments are :class:`UNet`'s. ``u(x, t, t)`` is a velocity (:meth:`velocity`), so one network can be
    trained by flow matching and by a flow-map objective (:class:`~flowzoo.core.fewstep.meanflow.MeanFlowLoss`).

    Example:
        >>> net = FlowMapUNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> x, s = torch.randn(2, 1, 8, 8), torch.zeros(2)
        >>> (x + (1.0 - s)[:, None, None, None] * net(x, s, torch.ones(2))).shape   # one step from s to 1
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int = 3, channels: int = 128, multipliers: Sequence[int] = (1, 2, 2, 2),
                 res_blocks: int = 2, attention_levels: Sequence[int] = (1,), head_channels: int = 64,
                 dropout: float = 0.0, num_classes: int = 0, time_scale: float = 1.0,
                 gradient_checkpointing: bool = False):
        super().__init__(in_channels, channels, multipliers, res_blocks, attention_levels, head_channels, dropout,
                         num_classes, time_scale, gradient_checkpointing)
        self.start_embed = _time_mlp(self.channels, 4 * self.channels)
        self.gap_embed = _time_mlp(self.channels, 4 * self.channels)

    def forward(self, x: Tensor, s: Tensor | float, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The average velocity from time ``s`` to time ``t`` (numbers or (B,)) of ``x`` at ``s``."""
        x = self._check_images(x)
        s, t = as_item_time(s, x, "s", "image"), as_item_time(t, x, "t", "image")
        # The gap is formed here, so a JVP along (v, 1, 0) over (x, s, t) needs no (v, 1, 1) correction.
        emb = (self.start_embed(self.time_features(s).to(x.dtype))
               + self.gap_embed(self.time_features(t - s).to(x.dtype)) + self._labels(y, x.shape[0]))
        return self._backbone(x, emb)

    def velocity(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The instantaneous velocity ``u(x, t, t)``."""
        return self(x, t, t, y)
