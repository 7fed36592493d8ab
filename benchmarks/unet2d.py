"""A two-time image U-Net of CIFAR size for timing flow-map objectives (``benchmarks/meanflow_unet_step.py``).

The layout is the ADM U-Net (Dhariwal & Nichol 2021) at the configuration torchcfm trains on CIFAR-10
(``examples/images/cifar10``: 128 channels, multipliers (1, 2, 2, 2), two residual blocks per level, attention at
16x16 with 64 channels per head, GroupNorm(32), SiLU), about 36 M parameters. It differs in one place: a flow map
u(x, s, t) needs two times, so the start time s and the gap t - s each get a sinusoidal embedding and an MLP, and
the two embeddings are summed (MeanFlow's (t, t - r) conditioning, arXiv 2505.13447 §4; in flowzoo time s is the
time of the state and t the time jumped to). A velocity model is the same network at s = t.

Attention is written as plain matrix products and a softmax, not fused ``scaled_dot_product_attention``: fused
kernels have no forward-mode derivative, and MeanFlow's JVP target needs one (the core's MeanFlowLoss docstring).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

Tensor = torch.Tensor

__all__ = ["TwoTimeUNet", "cifar_unet", "tiny_unet"]


def _sinusoid(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    # Times in [0, 1] as they are (torchcfm's convention): the fastest feature turns once per unit of time, so a
    # finite-difference derivative with a step of 5e-3 is accurate; scaled by 1000 like diffusion steps it is not.
    angles = t[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


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
        self.norm, self.qkv, self.out = _norm(channels), nn.Conv1d(channels, 3 * channels, 1), nn.Conv1d(
            channels, channels, 1)

    def forward(self, h: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h).reshape(b, c, -1)).reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, 1)
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(q.shape[1]), dim=-1)
        mixed = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, -1)
        return h + self.out(mixed).reshape(b, c, height, width)


class TwoTimeUNet(nn.Module):
    """``u(x, s, t)`` on images (B, C, H, W); ``velocity(x, t)`` is ``u(x, t, t)``."""

    def __init__(self, in_channels: int = 3, channels: int = 128, multipliers: tuple[int, ...] = (1, 2, 2, 2),
                 res_blocks: int = 2, attention_levels: tuple[int, ...] = (1,), head_channels: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.channels, emb_dim = channels, 4 * channels
        self.start_embed, self.gap_embed = (nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(),
                                                          nn.Linear(emb_dim, emb_dim)) for _ in range(2))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, skips, width = nn.ModuleList(), [channels], channels
        for level, mult in enumerate(multipliers):
            for _ in range(res_blocks):
                block = nn.ModuleList([_ResBlock(width, mult * channels, emb_dim, dropout)])
                width = mult * channels
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
                block = nn.ModuleList([_ResBlock(width + skips.pop(), mult * channels, emb_dim, dropout)])
                width = mult * channels
                if level in attention_levels:
                    block.append(_Attention(width, head_channels))
                if level > 0 and index == res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(width, width, 3, padding=1))
                self.up.append(block)
        self.head = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, in_channels, 3, padding=1))

    @staticmethod
    def _run_block(block: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, (_ResBlock, _Attention)) else layer(h)
        return h

    def forward(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        s = s.reshape(-1).to(x.dtype).expand(x.shape[0])
        t = t.reshape(-1).to(x.dtype).expand(x.shape[0])
        # The gap t - s is formed here, so a JVP along (v, 1, 0) over (x, s, t) needs no (v, 1, 1) correction.
        emb = self.start_embed(_sinusoid(s, self.channels)) + self.gap_embed(_sinusoid(t - s, self.channels))
        h = self.stem(x)
        kept = [h]
        for block in self.down:
            h = self._run_block(block, h, emb)
            kept.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for block in self.up:
            h = self._run_block(block, torch.cat([h, kept.pop()], dim=1), emb)
        return self.head(h)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        return self(x, t, t)


def cifar_unet(dropout: float = 0.0) -> TwoTimeUNet:
    """torchcfm's CIFAR-10 configuration (about 36 M parameters)."""
    return TwoTimeUNet(3, 128, (1, 2, 2, 2), 2, (1,), 64, dropout)


def tiny_unet(dropout: float = 0.0) -> TwoTimeUNet:
    """A few-thousand-parameter version of the same layout, for tests on the CPU."""
    return TwoTimeUNet(3, 16, (1, 2), 1, (1,), 16, dropout)
