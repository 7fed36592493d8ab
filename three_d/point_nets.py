"""The PUFM++ velocity backbone: a RIN-style read–compute–write transformer over point tokens, conditioned on the
sparse input through a kNN edge-convolution encoder, with latent self-conditioning.

PUFM++ (arXiv 2501.15286, the enhanced version's ``Denoiser_backbone``) builds on Recurrent Interface Networks
(RIN, Jabri et al., arXiv 2212.11972): a small set of latent vectors *reads* the point tokens by cross-attention,
*computes* with self-attention among themselves (plus a time token and a global condition token), and *writes*
back to the point tokens; several such blocks are stacked. Self-conditioning (RIN §3.4) feeds the latents of
the previous evaluation back as an additive initialisation: ``z_0 = z_learned + P(LN(z_prev))`` with ``z_prev
= 0`` on a first call, so the network can refine what it computed one step earlier.

Conditioning: each sparse input point gets an edge-convolution feature (DGCNN, arXiv 1801.07829, Eq. 7:
``h_i = max_j MLP([p_i, p_j − p_i])`` over its k nearest neighbours); the max-pooled feature is the global
condition token; every point token of ``x_t`` max-pools ``MLP([x − p_j, h_j])`` over its k/2 nearest sparse
points p_j (where the observed surface lies around it) and ``MLP(x − x_j)`` over its k/2 nearest points of
``x_t`` itself (how crowded it is), in the manner of a point transformer's local reading.

Time: the model is a flowzoo velocity model ``model(x, t, sparse=...)`` with t in [0, 1], 0 = the source
(noisy midpoints), 1 = the dense cloud; nothing to translate. Rationale: a latent bottleneck keeps attention
cost linear in the number of points, so one network serves patches of any size; the two kNN readings give every
token the local geometry that global attention over a few latents would blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from flowzoo.core.config import option_help
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int

from flowzoo.three_d.ops import check_points, gather_points, knn

__all__ = ["PointNetConfig", "EdgeConvEncoder", "PUFMBackbone"]


@dataclass
class PointNetConfig:
    """Sizes of :class:`PUFMBackbone` (``--model.<name>`` in ``python -m flowzoo.three_d.train pufm``)."""

    dim: int = field(default=64, metadata=option_help("width of point tokens and latents"))
    latents: int = field(default=32, metadata=option_help("number of RIN latents"))
    blocks: int = field(default=2, metadata=option_help("read-compute-write blocks"))
    compute_layers: int = field(default=2, metadata=option_help("self-attention layers per block"))
    heads: int = field(default=4, metadata=option_help("attention heads"))
    k: int = field(default=16, metadata=option_help("neighbours of the kNN condition encoder"))

    def __post_init__(self) -> None:
        for name in ("dim", "latents", "blocks", "compute_layers", "heads", "k"):
            check_int(getattr(self, name), f"--model.{name}", low=1)
        if self.dim % self.heads:
            raise ConfigError(expected("--model.dim divisible by --model.heads", f"{self.dim} and {self.heads}",
                                       "e.g. --model.dim 64 --model.heads 4"))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class EdgeConvEncoder(nn.Module):
    """Per-point features ``(B, n, dim)`` and a global feature ``(B, dim)`` of a sparse cloud ``(B, n, 3)``.

    Example:
        >>> enc = EdgeConvEncoder(dim=16, k=4)
        >>> local, glob = enc(torch.rand(2, 10, 3))
        >>> local.shape, glob.shape
        (torch.Size([2, 10, 16]), torch.Size([2, 16]))
    """

    def __init__(self, dim: int = 64, k: int = 16):
        super().__init__()
        self.k = k
        self.edge = _mlp([6, dim, dim])
        self.point = _mlp([2 * dim, dim, dim])

    def forward(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.k, sparse.shape[1])
        _, idx = knn(sparse, sparse, k)  # the point itself is its first neighbour: a zero edge
        neighbours = gather_points(sparse, idx)  # (B, n, k, 3)
        centre = sparse[:, :, None, :].expand_as(neighbours)
        h = self.edge(torch.cat([centre, neighbours - centre], dim=-1)).amax(dim=2)
        glob = h.amax(dim=1)
        local = self.point(torch.cat([h, glob[:, None].expand_as(h)], dim=-1))
        return local, local.amax(dim=1)


def _time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / max(half - 1, 1))
    angles = t[:, None] * freqs[None] * 100.0
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ff, self.ff = nn.LayerNorm(dim), _mlp([dim, 2 * dim, dim])

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(context)
        query = query + self.attn(self.norm_q(query), kv, kv, need_weights=False)[0]
        return query + self.ff(self.norm_ff(query))


class _RINBlock(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        self.read, self.write = _CrossAttention(dim, heads), _CrossAttention(dim, heads)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.compute = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor, latents: torch.Tensor, extra: torch.Tensor):
        latents = self.read(latents, tokens)
        mixed = self.compute(torch.cat([latents, extra], dim=1))
        latents = mixed[:, :latents.shape[1]]
        return self.write(tokens, latents), latents


class PUFMBackbone(nn.Module):
    """Velocity network ``model(x, t, sparse=...)`` for point clouds ``x`` ``(B, N, 3)`` conditioned on a sparse
    cloud ``(B, n, 3)``; :meth:`forward_latents` also takes and returns the latents for self-conditioning.

    Args:
        config: the sizes (:class:`PointNetConfig`).
        ratio: the upsampling factor the network is trained for (stored so that samplers know it).

    Example:
        >>> net = PUFMBackbone(PointNetConfig(dim=16, latents=4, blocks=1, compute_layers=1, heads=2, k=4))
        >>> v = net(torch.rand(2, 20, 3), torch.rand(2), sparse=torch.rand(2, 5, 3))
        >>> v.shape, float(v.abs().max())  # the output layer starts at zero
        (torch.Size([2, 20, 3]), 0.0)
    """

    def __init__(self, config: PointNetConfig | None = None, ratio: int = 4):
        super().__init__()
        self.config = config = config or PointNetConfig()
        self.ratio = check_int(ratio, "ratio", low=2)
        dim = config.dim
        self.encoder = EdgeConvEncoder(dim, config.k)
        self.embed = _mlp([3, dim, dim])
        self.read_input, self.read_self = _mlp([3 + dim, dim, dim]), _mlp([3, dim, dim])
        self.time = _mlp([dim, dim, dim])
        self.latents = nn.Parameter(torch.randn(config.latents, dim) * 0.02)
        self.self_condition = nn.Sequential(nn.LayerNorm(dim), _mlp([dim, dim, dim]))
        self.blocks = nn.ModuleList(_RINBlock(dim, config.heads, config.compute_layers) for _ in range(config.blocks))
        self.out_norm, self.out = nn.LayerNorm(dim), nn.Linear(dim, 3)
        for layer in (self.out, self.self_condition[1][-1]):  # start as "no velocity" and "no self-conditioning"
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward_latents(self, x: torch.Tensor, t: torch.Tensor, sparse: torch.Tensor,
                        latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(velocity (B, N, 3), latents (B, L, dim))``; ``latents`` are the previous call's (or None)."""
        local, glob = self.encoder(sparse)
        k_in, k_self = min(self.config.k // 2, sparse.shape[1]), min(self.config.k // 2, x.shape[1] - 1)
        idx = knn(x, sparse, max(k_in, 1))[1]  # the observed surface around each point
        offsets = x[:, :, None] - gather_points(sparse, idx)
        tokens = self.embed(x) + self.read_input(torch.cat([offsets, gather_points(local, idx)], -1)).amax(dim=2)
        if k_self >= 1:  # the point's own neighbours, so that crowded points can spread out
            idx = knn(x, x, k_self, exclude_self=True)[1]
            tokens = tokens + self.read_self(x[:, :, None] - gather_points(x, idx)).amax(dim=2)
        t_token = self.time(_time_features(t.to(x.dtype), self.config.dim))
        tokens = tokens + t_token[:, None]
        extra = torch.stack([t_token, glob], dim=1)
        z = self.latents[None].expand(x.shape[0], -1, -1)
        previous = torch.zeros_like(z) if latents is None else latents
        z = z + self.self_condition(previous)
        for block in self.blocks:
            tokens, z = block(tokens, z, extra)
        return self.out(self.out_norm(tokens)), z

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, sparse: torch.Tensor,
                latents: torch.Tensor | None = None) -> torch.Tensor:
        check_points(x, "x")
        check_points(sparse, "sparse")
        return self.forward_latents(x, t, sparse, latents)[0]
