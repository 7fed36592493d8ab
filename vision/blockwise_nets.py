r"""The network of Blockwise Flow Matching: K time segments, one small velocity block each, feature guidance.

**BFM** (Park, Lee, Joo, Kim, "Blockwise Flow Matching", NeurIPS 2025, arXiv 2510.21167, §3): the time axis is
cut at boundaries :math:`0 = b_0 < b_1 < \dots < b_K = 1` and segment :math:`k = [b_k, b_{k+1})` has its own
velocity block :math:`v_{\theta_k}` (a few adaLN-Zero transformer layers, DiT-style, arXiv 2212.09748). One
velocity evaluation at time t runs only the block of t's segment, so K blocks of depth d hold the parameters of
one network of depth K·d while each evaluation costs d layers. The patch stem, the time/label embeddings and the
output layer are shared by the blocks (as in the paper's code).

**Semantic feature guidance** (paper §3.2): a shared *feature alignment network* :math:`h_\phi(x_t, t, y)`
(``feature_depth`` transformer layers on its own patch stem) produces feature tokens that condition every
velocity block (their adaLN modulation reads the time-label vector concatenated with the token's feature), and a
projection head maps them to a prediction of a representation network's features of the *clean* image, which
the loss aligns by cosine similarity (REPA-style; :class:`~flowzoo.vision.blockwise.BlockwiseFlowMatchingLoss`).
The paper aligns with a pretrained DINOv2 encoder; flowzoo uses the penultimate features of the per-data-set
:class:`~flowzoo.vision.features.FeatureClassifier` (a global vector, so the head reads the mean of the tokens).

**Feature residual approximation** (paper §3.3): within segment k the features drift slowly, so at inference
the alignment network runs once, at the segment's start :math:`b_k`, and later evaluations use

.. math::  \tilde h(x_t, t) = h_\phi(x_{b_k}, b_k) + \frac{t - b_k}{b_{k+1} - b_k}\, r_\psi(x_t, t),

where the *feature residual network* :math:`r_\psi` (``residual_depth`` layers, ``residual_depth`` ≪
``feature_depth``) is trained afterwards with everything else frozen
(:class:`~flowzoo.vision.blockwise.FeatureResidualLoss`).

**Time.** flowzoo's t runs from 0 (noise) to 1 (data); the paper's code runs σ from 1 (noise) to 0, so its
segment [σ_{k+1}, σ_k] is flowzoo's [1 − σ_k, 1 − σ_{k+1}] and its coefficient (σ_k − σ)/(σ_k − σ_{k+1}) is the
fraction above. Rationale: specialised small blocks per noise level cut the cost of each sampling step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.validation import as_item_time, check_class_labels, check_int, check_number, check_tensor

__all__ = ["check_boundaries", "segment_index", "BlockwiseVelocity"]

Tensor = torch.Tensor


def check_boundaries(boundaries: int | Sequence[float] | Tensor) -> tuple[float, ...]:
    """Segment boundaries from a count K (equal segments) or an explicit increasing list from 0 to 1.

    Example:
        >>> check_boundaries(4)
        (0.0, 0.25, 0.5, 0.75, 1.0)
        >>> check_boundaries([0, 0.3, 1])
        (0.0, 0.3, 1.0)
    """
    if isinstance(boundaries, bool):
        raise ConfigError(expected("a segment count K >= 1 or boundaries 0 = b_0 < ... < b_K = 1", boundaries,
                                   "pass e.g. 4 or [0, 0.5, 1]"))
    if isinstance(boundaries, int) or (isinstance(boundaries, Tensor) and boundaries.dim() == 0
                                       and not boundaries.is_floating_point()):
        count = check_int(boundaries, "segments", low=1, fix="use at least one segment, e.g. segments=4")
        return tuple(k / count for k in range(count + 1))
    try:
        values = [float(b) for b in boundaries]
    except (TypeError, ValueError):
        raise ConfigError(expected("a segment count or a sequence of boundary times", repr(boundaries),
                                   "pass e.g. [0, 0.5, 1]")) from None
    fix = "pass strictly increasing times from 0 to 1, e.g. [0, 0.5, 1]"
    if len(values) < 2 or values[0] != 0.0 or values[-1] != 1.0:
        raise ConfigError(expected("boundaries starting at 0 and ending at 1", values, fix))
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(expected("strictly increasing boundaries", values, fix))
    return tuple(values)


def segment_index(t: Tensor, boundaries: Sequence[float]) -> Tensor:
    """The segment k of each time, b_k <= t < b_{k+1}; t = 1 belongs to the last segment.

    Example:
        >>> segment_index(torch.tensor([0.0, 0.49, 0.5, 1.0]), (0.0, 0.5, 1.0)).tolist()
        [0, 0, 1, 1]
    """
    inner = torch.tensor(boundaries[1:-1], dtype=t.dtype, device=t.device)
    return torch.bucketize(t.contiguous(), inner, right=True)


class _TokenBlock(nn.Module):
    """A transformer layer with adaLN-Zero whose condition may differ per token ((B, N, C) or (B, 1, C))."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, cond_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.heads = heads
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * hidden))
        nn.init.zeros_(self.modulation[1].weight)   # adaLN-Zero: the layer starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def attend(self, z: Tensor) -> Tensor:
        b, n, d = z.shape
        q, k, v = self.qkv(z).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)
        return self.proj(mixed.transpose(1, 2).reshape(b, n, d))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        z = self.norm1(h) * (1 + scale1) + shift1
        h = h + gate1 * self.attend(z)
        return h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2)


class BlockwiseVelocity(nn.Module):
    """A velocity model ``v(x, t, y=None)`` on images made of K per-segment blocks (module docstring).

    Args:
        in_channels: image channels. image_size: the side of the (square) images; a multiple of ``patch``.
        patch, hidden, heads, mlp_ratio: patch size, token width, attention heads, MLP width / hidden.
        segments: the number K of equal segments, or the boundaries ``[0, b_1, ..., 1]``.
        block_depth: transformer layers per segment block.
        feature_dim: width of the representation features to predict (0: no semantic feature guidance).
        feature_depth: layers of the feature alignment network (used when ``feature_dim > 0``).
        residual_depth: layers of the feature residual network (0: no residual approximation).
        num_classes: class labels for conditioning (0: none); label ``num_classes`` is the null class.

    Example:
        >>> net = BlockwiseVelocity(1, 8, patch=2, hidden=32, heads=2, segments=2, block_depth=1, feature_dim=16,
        ...                         feature_depth=1, residual_depth=1, num_classes=10)
        >>> x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 3, 10])
        >>> v, features = net(x, torch.tensor([0.1, 0.6, 1.0]), y=y, return_features=True)
        >>> v.shape, features.shape, net.segment_of(torch.tensor([0.1, 0.6, 1.0])).tolist()
        (torch.Size([3, 1, 8, 8]), torch.Size([3, 16]), [0, 1, 1])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, *, patch: int = 4, hidden: int = 64,
                 heads: int = 4, mlp_ratio: float = 4.0, segments: int | Sequence[float] = 4, block_depth: int = 2,
                 feature_dim: int = 0, feature_depth: int = 2, residual_depth: int = 0, num_classes: int = 0):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", low=1)
        self.image_size = check_int(image_size, "image_size", low=1)
        self.patch = check_int(patch, "patch", low=1, fix="use patch=2 or patch=4")
        self.hidden = check_int(hidden, "hidden", low=4)
        heads = check_int(heads, "heads", low=1)
        if self.image_size % self.patch or self.hidden % heads:
            raise ConfigError(expected("image_size a multiple of patch and hidden a multiple of heads",
                                       f"image_size={image_size}, patch={patch}, hidden={hidden}, heads={heads}",
                                       "e.g. image_size=28, patch=4, hidden=64, heads=4"))
        mlp_ratio = check_number(mlp_ratio, "mlp_ratio", low=0.0, strict_low=True)
        self.boundaries = check_boundaries(segments)
        self.block_depth = check_int(block_depth, "block_depth", low=1)
        self.feature_dim = check_int(feature_dim, "feature_dim", low=0, fix="0 (no guidance) or the feature width")
        self.feature_depth = check_int(feature_depth, "feature_depth", low=1) if self.feature_dim else 0
        self.residual_depth = check_int(residual_depth, "residual_depth", low=0)
        if self.residual_depth and not self.feature_dim:
            raise ConfigError(expected("feature guidance (feature_dim > 0) for a feature residual network",
                                       f"residual_depth={residual_depth}, feature_dim=0", "set feature_dim"))
        self.num_classes = check_int(num_classes, "num_classes", low=0)
        d, tokens = self.hidden, (self.image_size // self.patch) ** 2
        self.time_features = SinusoidalTimeEmbedding(256, scale=1.0)
        self.time_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.label_embedding = nn.Embedding(self.num_classes + 1, d) if self.num_classes else None
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, d))
        self.patchify = nn.Conv2d(self.in_channels, d, self.patch, stride=self.patch)
        cond_dim = 2 * d if self.feature_dim else d
        self.blocks = nn.ModuleList(
            nn.ModuleList(_TokenBlock(d, heads, mlp_ratio, cond_dim) for _ in range(self.block_depth))
            for _ in range(self.segments))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * d))
        self.final = nn.Linear(d, self.patch * self.patch * self.in_channels)
        for layer in (self.final_modulation[1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.feature_dim:
            self.feature_patchify = nn.Conv2d(self.in_channels, d, self.patch, stride=self.patch)
            self.feature_blocks = nn.ModuleList(_TokenBlock(d, heads, mlp_ratio, d) for _ in range(self.feature_depth))
            self.feature_head = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, self.feature_dim))
        if self.residual_depth:
            self.residual_blocks = nn.ModuleList(_TokenBlock(d, heads, mlp_ratio, d)
                                                 for _ in range(self.residual_depth))

    @property
    def segments(self) -> int:
        """The number K of time segments."""
        return len(self.boundaries) - 1

    @property
    def null_class(self) -> int:
        """The label index meaning "unconditional" (``num_classes``), for condition dropout and CFG."""
        return self.num_classes

    def segment_of(self, t: Tensor) -> Tensor:
        """The segment index (B,) of times t (B,): :func:`segment_index` with this net's boundaries."""
        return segment_index(t, self.boundaries)

    def residual_parameters(self) -> list[nn.Parameter]:
        """The feature residual network's parameters (train them alone, after the rest)."""
        return list(self.residual_blocks.parameters()) if self.residual_depth else []

    def check_inputs(self, x: object, t: object) -> tuple[Tensor, Tensor]:
        """Validate images (B, C, H, W) of this net's shape and times in [0, 1]; return them, t as (B,)."""
        x = check_tensor(x, "x", min_dim=4, finite=False)
        shape = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != shape:
            raise ShapeError(expected(f"images (B, {', '.join(map(str, shape))})", f"shape {tuple(x.shape)}",
                                      "build the net for these images (in_channels, image_size)"))
        t = as_item_time(t, x, "t", "image")
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ConfigError(expected("t in [0, 1] (0 = noise, 1 = data)", f"values in [{float(t.min()):.4g}, "
                                       f"{float(t.max()):.4g}]", "rescale the time to flowzoo's [0, 1]"))
        return x, t

    def condition(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The time-label vector c (B, hidden) shared by every part of the net."""
        c = self.time_embed(self.time_features(t).to(x.dtype))
        labels = check_class_labels(y, x.shape[0], self.num_classes)
        return c if labels is None else c + self.label_embedding(labels)

    def _tokens(self, stem: nn.Conv2d, x: Tensor) -> Tensor:
        return stem(x).flatten(2).transpose(1, 2) + self.position

    def features(self, x: Tensor, c: Tensor) -> Tensor:
        """Feature tokens (B, N, hidden) of the alignment network h_φ(x_t, t, y) (c from :meth:`condition`)."""
        h, c = self._tokens(self.feature_patchify, x), c[:, None]
        for block in self.feature_blocks:
            h = block(h, c)
        return h

    def residual(self, x: Tensor, c: Tensor) -> Tensor:
        """The feature residual r_ψ(x_t, t, y) (B, N, hidden) of the residual approximation."""
        h, c = self._tokens(self.feature_patchify, x), c[:, None]
        for block in self.residual_blocks:
            h = block(h, c)
        return h

    def project(self, tokens: Tensor) -> Tensor:
        """The predicted representation features (B, feature_dim) of feature tokens (B, N, hidden)."""
        return self.feature_head(tokens.mean(dim=1))

    def velocity(self, x: Tensor, c: Tensor, segment: Tensor | int, tokens: Tensor | None = None) -> Tensor:
        """The velocity of images x under condition c, each row through the block of its ``segment``.

        ``segment`` is one index for the whole batch or a (B,) tensor; ``tokens`` are the guidance features
        (B, N, hidden), required when the net was built with ``feature_dim > 0``.
        """
        cond = c[:, None].expand(-1, self._tokens_count(), -1)
        if self.feature_dim:
            cond = torch.cat([cond, tokens], dim=-1)
        h = self._tokens(self.patchify, x)
        if isinstance(segment, int):
            h = self._run_block(segment, h, cond)
        else:
            out = torch.empty_like(h)
            for k in torch.unique(segment).tolist():  # route each segment's rows through its own block only
                rows = (segment == k).nonzero(as_tuple=True)[0]
                out = out.index_copy(0, rows, self._run_block(k, h[rows], cond[rows]))
            h = out
        shift, scale = self.final_modulation(cond).chunk(2, dim=-1)
        patches = self.final(self.final_norm(h) * (1 + scale) + shift)
        b, p, side = x.shape[0], self.patch, self.image_size // self.patch
        patches = patches.reshape(b, side, side, p, p, self.in_channels)
        return torch.einsum("brcpqk->bkrpcq", patches).reshape(x.shape)

    def _tokens_count(self) -> int:
        return (self.image_size // self.patch) ** 2

    def _run_block(self, k: int, h: Tensor, cond: Tensor) -> Tensor:
        for layer in self.blocks[k]:
            h = layer(h, cond)
        return h

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor | None = None, *,
                return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The velocity at ``t`` (a number or (B,)), routed by t to its segment's block.

        With ``return_features`` also the predicted representation features (B, feature_dim), for the loss.
        """
        x, t = self.check_inputs(x, t)
        c = self.condition(x, t, y)
        tokens = self.features(x, c) if self.feature_dim else None
        v = self.velocity(x, c, self.segment_of(t), tokens)
        if not return_features:
            return v
        if tokens is None:
            raise ConfigError(expected("a net with feature guidance (feature_dim > 0)", "feature_dim=0",
                                       "build the net with feature_dim set, or call without return_features"))
        return v, self.project(tokens)
