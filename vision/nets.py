r"""Image backbones for flow matching: a DiT (velocity model and flow map) and the options users expect on a GPU.

**DiT** (Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023, arXiv 2212.09748, §3.2): the
image (B, C, H, W) is cut into p×p patches by a convolution of kernel and stride p (the "patchify" stem), each
patch becomes a token to which a fixed 2-D sine-cosine position embedding is added, and N transformer blocks
follow. Each block is conditioned on :math:`c = \mathrm{MLP}(\mathrm{emb}(t)) + E[y]` by **adaLN-Zero**
(paper §3.2, Fig. 3): a linear map of SiLU(c) gives per-block shifts, scales and gates,

.. math::  h \leftarrow h + \alpha_1 \odot \mathrm{Attn}\big((1 + \gamma_1)\odot \mathrm{LN}(h) + \beta_1\big),\qquad
           h \leftarrow h + \alpha_2 \odot \mathrm{MLP}\big((1 + \gamma_2)\odot \mathrm{LN}(h) + \beta_2\big),

and that linear map is initialised to zero, so every block starts as the identity. A final adaptive layer norm
and a zero-initialised linear layer map each token back to a p×p×C patch, and the patches are reassembled
("unpatchify"); the network therefore outputs exactly zero at initialisation, as DiT's does. Labels use a table
of ``num_classes + 1`` rows whose last row (``y = num_classes``, :attr:`DiT.null_class`) is the null class of
classifier-free guidance, the convention of :class:`flowzoo.core.nets.UNet`; label dropout belongs to the
objective (``FlowMatchingLoss(cond_dropout=0.1, null_cond={"y": num_classes})``).

**Time.** ``t`` runs from 0 (noise) to 1 (data), flowzoo's convention; DiT's diffusion timestep (1000 = noise)
does not enter. The time features are :class:`~flowzoo.core.nets.SinusoidalTimeEmbedding` with ``time_scale``
1 by default, as the core U-Net, so a finite-difference time derivative (MeanFlow's
``derivative="finite_difference"``) stays accurate.

**Flow map.** :class:`FlowMapDiT` is called ``model(x, s, t)`` (state at time s, average velocity over [s, t];
:mod:`flowzoo.core.fewstep.flowmap`), conditioned on the start time s and the gap t − s by two embeddings
summed, as MeanFlow's DiT conditions on (t, t − r) (Geng et al., arXiv 2505.13447 §4, its r, t renamed s, t).
The gap is formed inside the network, so a JVP along (v, 1, 0) over (x, s, t) is the total derivative d/ds.

**Attention and forward-mode AD.** Fused ``F.scaled_dot_product_attention`` kernels have no forward-mode
derivative, which MeanFlow's target needs; with ``jvp_safe=True`` (the default of :class:`FlowMapDiT`) the
attention is an explicit softmax of matrix products, equal in value. Dual tensors of
``torch.autograd.forward_ad`` (the core's :func:`~flowzoo.core.fewstep.forward_ad.jvp`, which MeanFlow uses) take
the explicit path whatever the flag; ``torch.func.jvp`` needs ``jvp_safe=True``.

GPU options: ``gradient_checkpointing=True`` recomputes each block in the backward pass
(:func:`torch.utils.checkpoint.checkpoint`; not on forward-mode dual tensors, so JVPs work as without it); the
forward runs under ``torch.autocast`` with bfloat16 (attention softmax in float32). Channels-last, compilation
and their application before training are in :mod:`flowzoo.vision.acceleration`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.validation import as_item_time, check_bool, check_class_labels, check_int, check_number, check_tensor

__all__ = ["DiTConfig", "DIT_PRESETS", "sincos_position_embedding", "DiT", "FlowMapDiT"]

Tensor = torch.Tensor
_FIX = "see DIT_PRESETS for working sizes, e.g. DiT.preset('dit_s', in_channels=3)"


@dataclass(frozen=True)
class DiTConfig:
    """The size of a DiT: token width, number of blocks, attention heads and the MLP's width ratio."""

    hidden: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


DIT_PRESETS: dict[str, DiTConfig] = {
    "dit_tiny": DiTConfig(hidden=64, depth=4, heads=4),
    "dit_s": DiTConfig(hidden=384, depth=12, heads=6),     # DiT-S (paper Table 1)
    "dit_b": DiTConfig(hidden=768, depth=12, heads=12),    # DiT-B
}
"""Sizes by name; the patch size is chosen separately (``DiT.preset("dit_s", patch=4)`` or ``"dit_s/4"``)."""


def sincos_position_embedding(dim: int, rows: int, cols: int) -> Tensor:
    """The fixed 2-D sine-cosine position embedding of a ``rows`` × ``cols`` token grid, (rows * cols, dim).

    Half of the features encode the row and half the column, each as 1-D transformer features
    (Vaswani et al. 2017) with frequencies ``10000 ** (-j / (dim / 4))`` (MAE / DiT, arXiv 2212.09748).

    Example:
        >>> sincos_position_embedding(8, 2, 3).shape
        torch.Size([6, 8])
    """
    dim = check_int(dim, "dim", low=4, fix="pass a multiple of 4, e.g. dim=64")
    if dim % 4:
        raise ConfigError(expected("an embedding width divisible by 4", dim, "pass a multiple of 4, e.g. dim=64"))
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                              indexing="ij")
    parts = [f(axis.reshape(-1, 1) * omega) for axis in (row, col) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1).float()


def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return h * (1 + scale[:, None]) + shift[:, None]


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, jvp_safe: bool):
        super().__init__()
        self.heads, self.jvp_safe = heads, jvp_safe
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Fused kernels have no forward-mode rule: dual tensors (MeanFlow's JVP) take the explicit path too.
        if self.jvp_safe or fwAD.unpack_dual(q).tangent is not None:
            # Plain products and softmax: every op has a forward-mode rule. A half-precision softmax (autocast)
            # runs in float32 so that the small attention weights are not lost.
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            if scores.dtype in (torch.float16, torch.bfloat16):
                scores = scores.float()
            mixed = torch.softmax(scores, dim=-1).to(v.dtype) @ v
        else:
            mixed = F.scaled_dot_product_attention(q, k, v)
        return self.proj(mixed.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """A DiT block with adaLN-Zero (module docstring)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, jvp_safe: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(hidden, heads, jvp_safe)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        h = h + gate1[:, None] * self.attn(_modulate(self.norm1(h), shift1, scale1))
        return h + gate2[:, None] * self.mlp(_modulate(self.norm2(h), shift2, scale2))


class _FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.linear = nn.Linear(hidden, patch_features)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm(h), shift, scale))


def _time_mlp(features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))


class _DiTBody(nn.Module):
    """The layers shared by :class:`DiT` and :class:`FlowMapDiT`; subclasses build the conditioning vector."""

    def __init__(self, in_channels: int, patch: int, hidden: int, depth: int, heads: int, mlp_ratio: float,
                 num_classes: int, time_scale: float, frequency_dim: int, jvp_safe: bool,
                 gradient_checkpointing: bool):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", low=1, fix=_FIX)
        self.patch = check_int(patch, "patch", low=1, fix="use patch=2 or patch=4")
        self.hidden = check_int(hidden, "hidden", low=4, fix=_FIX)
        self.heads = check_int(heads, "heads", low=1, fix=_FIX)
        if self.hidden % 4 or self.hidden % self.heads:
            raise ConfigError(expected("hidden divisible by 4 (position embedding) and by heads",
                                       f"hidden={hidden}, heads={heads}", _FIX))
        depth = check_int(depth, "depth", low=1, fix=_FIX)
        mlp_ratio = check_number(mlp_ratio, "mlp_ratio", low=0.0, strict_low=True, fix="use mlp_ratio=4")
        self.num_classes = check_int(num_classes, "num_classes", low=0, fix="pass the number of classes, or 0")
        self.jvp_safe = check_bool(jvp_safe, "jvp_safe")
        self.gradient_checkpointing = check_bool(gradient_checkpointing, "gradient_checkpointing")
        self.time_features = SinusoidalTimeEmbedding(
            check_int(frequency_dim, "frequency_dim", low=2, fix="use frequency_dim=256"),
            scale=check_number(time_scale, "time_scale", low=0.0, strict_low=True))
        self.patchify = nn.Conv2d(self.in_channels, self.hidden, self.patch, stride=self.patch)
        self.label_embedding = nn.Embedding(self.num_classes + 1, self.hidden) if self.num_classes else None
        self.blocks = nn.ModuleList(_Block(self.hidden, self.heads, mlp_ratio, self.jvp_safe) for _ in range(depth))
        self.final = _FinalLayer(self.hidden, self.patch * self.patch * self.in_channels)

    @classmethod
    def preset(cls, name: str, **options):
        """A network of a named size from :data:`DIT_PRESETS`; ``"dit_s/4"`` sets the patch; ``options`` are
        the constructor's other arguments (``in_channels``, ``num_classes``, ...)."""
        size, _, patch = str(name).partition("/")
        if size not in DIT_PRESETS or (patch and not patch.isdigit()):
            raise ConfigError(expected(f"a preset in {sorted(DIT_PRESETS)}, optionally with '/<patch>'",
                                       repr(name), "e.g. DiT.preset('dit_s/2')"))
        if patch:
            options.setdefault("patch", int(patch))
        config = DIT_PRESETS[size]
        return cls(**{"hidden": config.hidden, "depth": config.depth, "heads": config.heads,
                      "mlp_ratio": config.mlp_ratio, **options})

    def _initialise(self) -> None:
        # DiT's initialisation (its initialize_weights): Xavier-uniform linear layers and patch stem, N(0, 0.02)
        # label and time MLP weights, and zero adaLN modulation and output layers, so the net starts at zero.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patchify.weight.view(self.hidden, -1))
        nn.init.zeros_(self.patchify.bias)
        if self.label_embedding is not None:
            nn.init.normal_(self.label_embedding.weight, std=0.02)
        for mlp in self._time_mlps():
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        for layer in [block.modulation[1] for block in self.blocks] + [self.final.modulation[1], self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _time_mlps(self) -> list[nn.Sequential]:
        raise NotImplementedError

    @property
    def null_class(self) -> int:
        """The label index meaning "unconditional" (``num_classes``), for condition dropout and CFG."""
        return self.num_classes

    def _check_images(self, x: object) -> Tensor:
        # No NaN check: it would synchronise with the GPU on every step (the objectives check their batches).
        x = check_tensor(x, "x", min_dim=4, finite=False)
        p = self.patch
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % p or x.shape[3] % p:
            fix = (f"pad or crop the images to multiples of {p}, or build the net with in_channels={x.shape[1]}"
                   if x.dim() == 4 else "pass a batch of images (B, C, H, W)")
            raise ShapeError(expected(f"images (B, {self.in_channels}, H, W) with H and W multiples of the patch {p}",
                                      f"shape {tuple(x.shape)}", fix))
        return x

    def _embed_time(self, mlp: nn.Sequential, t: Tensor, x: Tensor) -> Tensor:
        return mlp(self.time_features(t).to(x.dtype))

    def _labels(self, y: Tensor | None, batch: int) -> Tensor | float:
        labels = check_class_labels(y, batch, self.num_classes)
        return 0.0 if labels is None else self.label_embedding(labels)

    def _backbone(self, x: Tensor, c: Tensor) -> Tensor:
        b, channels, height, width = x.shape
        p, rows, cols = self.patch, height // self.patch, width // self.patch
        h = self.patchify(x).flatten(2).transpose(1, 2)
        h = h + sincos_position_embedding(self.hidden, rows, cols).to(h.device, h.dtype)
        # A forward-mode pass (dual tensors) is never checkpointed: its recomputation would save other tensors.
        dual = any(fwAD.unpack_dual(value).tangent is not None for value in (h, c))
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and not dual:
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)
        patches = self.final(h, c).reshape(b, rows, cols, p, p, channels)
        return torch.einsum("brcpqk->bkrpcq", patches).reshape(b, channels, height, width)


class DiT(_DiTBody):
    """A velocity model ``v(x, t, y=None)`` on images (B, C, H, W): a DiT with adaLN-Zero (module docstring).

    Args:
        in_channels: image channels (also the output's).
        patch: patch size p; H and W must be multiples of p.
        hidden, depth, heads, mlp_ratio: token width, number of blocks, attention heads, MLP width / hidden
            (:data:`DIT_PRESETS` names common sizes; :meth:`preset` builds one).
        num_classes: class labels for conditioning (0: none); label ``num_classes`` is the null class.
        time_scale: multiplies t before the sinusoidal features (1: times in [0, 1] as they are).
        frequency_dim: number of sinusoidal time features.
        jvp_safe: explicit softmax attention (forward-mode AD works) instead of fused
            ``F.scaled_dot_product_attention``.
        gradient_checkpointing: recompute each block during the backward pass (less memory, more time).

    Example:
        >>> net = DiT(in_channels=1, patch=2, hidden=32, depth=2, heads=2, num_classes=10)
        >>> x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 9, 10])      # 10: the null class
        >>> out = net(x, torch.rand(3), y=y)
        >>> out.shape, bool((out == 0).all())                               # adaLN-Zero: zero at initialisation
        (torch.Size([3, 1, 8, 8]), True)
    """

    def __init__(self, in_channels: int = 3, patch: int = 2, hidden: int = 384, depth: int = 12, heads: int = 6,
                 mlp_ratio: float = 4.0, num_classes: int = 0, time_scale: float = 1.0, frequency_dim: int = 256,
                 jvp_safe: bool = False, gradient_checkpointing: bool = False):
        super().__init__(in_channels, patch, hidden, depth, heads, mlp_ratio, num_classes, time_scale, frequency_dim,
                         jvp_safe, gradient_checkpointing)
        self.time_embed = _time_mlp(self.time_features.dim, self.hidden)
        self._initialise()

    def _time_mlps(self) -> list[nn.Sequential]:
        return [self.time_embed]

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The velocity at time ``t`` (a number or (B,)), shaped like ``x``."""
        x = self._check_images(x)
        c = self._embed_time(self.time_embed, as_item_time(t, x, "t", "image"), x) + self._labels(y, x.shape[0])
        return self._backbone(x, c)


class FlowMapDiT(_DiTBody):
    """A two-time flow map ``u(x, s, t, y=None)`` on images: the average velocity over [s, t] (module docstring).

    The arguments are :class:`DiT`'s, except that ``jvp_safe`` defaults to True (MeanFlow differentiates the
    network in forward mode). ``u(x, t, t)`` is a velocity (:meth:`velocity`).

    Example:
        >>> net = FlowMapDiT(in_channels=1, patch=2, hidden=32, depth=2, heads=2)
        >>> x, s = torch.randn(2, 1, 8, 8), torch.zeros(2)
        >>> (x + (1.0 - s)[:, None, None, None] * net(x, s, torch.ones(2))).shape   # one step from s to 1
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int = 3, patch: int = 2, hidden: int = 384, depth: int = 12, heads: int = 6,
                 mlp_ratio: float = 4.0, num_classes: int = 0, time_scale: float = 1.0, frequency_dim: int = 256,
                 jvp_safe: bool = True, gradient_checkpointing: bool = False):
        super().__init__(in_channels, patch, hidden, depth, heads, mlp_ratio, num_classes, time_scale, frequency_dim,
                         jvp_safe, gradient_checkpointing)
        self.start_embed = _time_mlp(self.time_features.dim, self.hidden)
        self.gap_embed = _time_mlp(self.time_features.dim, self.hidden)
        self._initialise()

    def _time_mlps(self) -> list[nn.Sequential]:
        return [self.start_embed, self.gap_embed]

    def forward(self, x: Tensor, s: Tensor | float, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The average velocity from time ``s`` to time ``t`` (numbers or (B,)) of ``x`` at ``s``."""
        x = self._check_images(x)
        s, t = as_item_time(s, x, "s", "image"), as_item_time(t, x, "t", "image")
        # The gap is formed here, so a JVP along (v, 1, 0) over (x, s, t) needs no (v, 1, 1) correction.
        c = (self._embed_time(self.start_embed, s, x) + self._embed_time(self.gap_embed, t - s, x)
             + self._labels(y, x.shape[0]))
        return self._backbone(x, c)

    def velocity(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The instantaneous velocity ``u(x, t, t)``."""
        return self(x, t, t, y)
