"""Backbones for sequences on the simplex: ``net(x, t) -> logits`` with x of shape (B, L, K).

Both networks read a point of the product of simplices (one probability vector over the K letters per
position), the time t (B,) in [0, 1], and return per-position logits (B, L, K) over the clean letter (the
denoiser parameterisation of :mod:`flowzoo.biology.sequences.gumbel_fm`). The input features are the probabilities
and their centred log-probabilities: on the Gumbel-softmax paths the information sits in the logits, whose
scale grows by a factor of up to e^λ over time, so each position's features are layer-normalised.

* :class:`ConvSequenceNet`: residual blocks of dilated 1-D convolutions with a time embedding added in
  every block (translation-equivariant, any length).
* :class:`TransformerSequenceNet`: a small pre-norm transformer encoder with learned positions
  (sequences up to ``max_length``).
"""

from __future__ import annotations

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_positive_int
from flowzoo.core.nets import SinusoidalTimeEmbedding

__all__ = ["ConvSequenceNet", "TransformerSequenceNet", "simplex_features", "build_sequence_net", "NETS"]

_LOG_FLOOR = -30.0


def simplex_features(x: torch.Tensor) -> torch.Tensor:
    """(B, L, 2K) features: probabilities and log-probabilities centred over the letters."""
    log_x = x.clamp_min(1e-30).log().clamp_min(_LOG_FLOOR)
    return torch.cat([x, log_x - log_x.mean(-1, keepdim=True)], dim=-1)


def _check_input(x: torch.Tensor, t: torch.Tensor, alphabet_size: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != alphabet_size:
        raise ShapeError(expected(f"x of shape (B, L, {alphabet_size})", getattr(x, "shape", type(x).__name__),
                                  "pass simplex points (batch, length, alphabet)"))
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ShapeError(expected(f"t of shape ({x.shape[0]},)", tuple(t.shape), "pass one time per sequence"))
    return t


class _ResidualConvBlock(nn.Module):
    def __init__(self, hidden: int, kernel_size: int, dilation: int, time_dim: int):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.norm1 = nn.GroupNorm(1, hidden)
        self.conv1 = nn.Conv1d(hidden, hidden, kernel_size, padding=padding, dilation=dilation)
        self.time = nn.Linear(time_dim, hidden)
        self.norm2 = nn.GroupNorm(1, hidden)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size, padding=padding, dilation=dilation)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act(self.norm1(h))) + self.time(temb)[:, :, None]
        return h + self.conv2(self.act(self.norm2(y)))


class ConvSequenceNet(nn.Module):
    """Residual dilated 1-D convolutions with a time embedding (see the module doc).

    Args:
        alphabet_size: K.
        hidden: channels.
        depth: residual blocks; block i uses dilation ``2 ** (i % 4)``.
        kernel_size: odd convolution width.
        time_dim: size of the time embedding.

    Example:
        >>> net = ConvSequenceNet(4, hidden=16, depth=2)
        >>> net(torch.full((3, 10, 4), 0.25), torch.rand(3)).shape
        torch.Size([3, 10, 4])
    """

    def __init__(self, alphabet_size: int, hidden: int = 128, depth: int = 4, kernel_size: int = 5,
                 time_dim: int = 64):
        super().__init__()
        self.alphabet_size = check_positive_int(alphabet_size, "alphabet_size")
        hidden, depth = check_positive_int(hidden, "hidden"), check_positive_int(depth, "depth")
        time_dim = check_positive_int(time_dim, "time_dim")
        if check_positive_int(kernel_size, "kernel_size") % 2 == 0:
            raise ConfigError(expected("an odd kernel_size (keeps the length)", kernel_size, "use 5"))
        self.embed_in = nn.Sequential(nn.Linear(2 * alphabet_size, hidden), nn.LayerNorm(hidden))
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, time_dim),
                                            nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.blocks = nn.ModuleList(_ResidualConvBlock(hidden, kernel_size, 2 ** (i % 4), time_dim)
                                    for i in range(depth))
        self.head = nn.Sequential(nn.GroupNorm(1, hidden), nn.SiLU(), nn.Conv1d(hidden, alphabet_size, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _check_input(x, t, self.alphabet_size)
        h = self.embed_in(simplex_features(x)).transpose(1, 2)
        temb = self.time_embedding(t)
        for block in self.blocks:
            h = block(h, temb)
        return self.head(h).transpose(1, 2)


class TransformerSequenceNet(nn.Module):
    """A small pre-norm transformer encoder over positions, time added as a learned embedding.

    Example:
        >>> net = TransformerSequenceNet(20, max_length=16, hidden=32, depth=1, heads=2)
        >>> net(torch.full((2, 16, 20), 0.05), torch.rand(2)).shape
        torch.Size([2, 16, 20])
    """

    def __init__(self, alphabet_size: int, max_length: int = 512, hidden: int = 128, depth: int = 2,
                 heads: int = 4, time_dim: int = 64):
        super().__init__()
        self.alphabet_size = check_positive_int(alphabet_size, "alphabet_size")
        self.max_length = check_positive_int(max_length, "max_length")
        hidden, depth = check_positive_int(hidden, "hidden"), check_positive_int(depth, "depth")
        heads = check_positive_int(heads, "heads")
        if hidden % heads:
            raise ConfigError(expected("hidden divisible by heads", (hidden, heads), "e.g. hidden=128, heads=4"))
        self.embed_in = nn.Sequential(nn.Linear(2 * alphabet_size, hidden), nn.LayerNorm(hidden))
        self.position = nn.Parameter(torch.randn(max_length, hidden) * 0.02)
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, hidden),
                                            nn.SiLU(), nn.Linear(hidden, hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, alphabet_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _check_input(x, t, self.alphabet_size)
        if x.shape[1] > self.max_length:
            raise ShapeError(expected(f"sequences of at most max_length={self.max_length}", x.shape[1],
                                      "build the net with a larger max_length"))
        h = self.embed_in(simplex_features(x)) + self.position[: x.shape[1]] + self.time_embedding(t)[:, None]
        return self.head(self.encoder(h))


NETS = {"conv": ConvSequenceNet, "transformer": TransformerSequenceNet}
"""Backbones by name (used by the command line and checkpoints)."""


def build_sequence_net(kind: str, alphabet_size: int, **kwargs) -> nn.Module:
    """Build a backbone by name (``"conv"`` or ``"transformer"``)."""
    if kind not in NETS:
        raise ConfigError(expected(f"a backbone in {sorted(NETS)}", repr(kind), "use 'conv'"))
    return NETS[kind](alphabet_size, **kwargs)
