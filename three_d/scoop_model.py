"""SCOOP's correspondence model: point features, one unrolled Sinkhorn iteration, soft correspondences.

SCOOP (Lang, Aiger, Cole, Avidan, Rubinstein; CVPR 2023, arXiv 2211.14020, §3.1) estimates the scene flow of a
source scan X = {x_i} towards a target scan Y = {y_j} by *matching* rather than regressing:

1. per-point features f_i = F(X)_i, g_j = F(Y)_j from three SetConv layers on a kNN graph (k = 32,
   3 → 32 → 64 → 128 channels; each layer is a shared MLP on [feature of the neighbour, x_nb − x_i] followed by
   a max over the neighbours, as in PointNet++ / FLOT, arXiv 2007.11142);
2. the cost C_ij = 1 − cos(f_i, g_j) (Eq. 1), with pairs farther apart than ``max_distance`` metres excluded;
3. **one** unrolled iteration of the unbalanced Sinkhorn algorithm (Chizat et al. 2018, arXiv 1607.05816;
   FLOT Eq. 4): K = exp(−C / ε), b = (ν / Kᵀa)^λ, a = (μ / K b)^λ, T = diag(a) K diag(b), with the
   learnable entropic weight ε = exp(ε̃) + 0.03 and mass regularisation γ = exp(γ̃), λ = γ / (γ + ε);
   λ = 1 is classic (balanced) Sinkhorn, whose row marginals are then exactly μ;
4. soft correspondences: the top-k (k = 64) entries of each row of T, normalised, average the target points,
   ŷ_i = Σ_j w_ij y_j (Eq. 2), so ŷ_i lies in the convex hull of Y; the initial flow is F_i = ŷ_i − x_i;
5. the confidence of each match c_i = max(0, Σ_j w_ij cos(f_i, g_j)) (Eq. 4).

No time convention applies (no probability path). The rationale for matching: the flow of a point is where
its features say it went, so a model trained self-supervised on a few scenes already gives a usable flow that
test-time refinement (:func:`flowzoo.three_d.scoop.refine_flow`) then sharpens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flowzoo.core.errors import ShapeError, expected
from flowzoo.core.validation import check_int, check_positive, check_tensor

from flowzoo.three_d.ops import gather_points, knn

__all__ = ["sinkhorn_step", "soft_correspondences", "SetConv", "PointFeatures", "SceneFlowEstimate",
           "SCOOPModel"]

EPSILON_FLOOR = 0.03  # ε = exp(ε̃) + 0.03 keeps the plan from collapsing to a hard assignment


def sinkhorn_step(cost: torch.Tensor, epsilon: float | torch.Tensor, gamma: float | torch.Tensor | None = None, *,
                  support: torch.Tensor | None = None, iterations: int = 1) -> torch.Tensor:
    """The transport plan ``(B, N, M)`` after ``iterations`` unrolled unbalanced Sinkhorn updates on ``cost``.

    Uniform marginals μ = 1/N, ν = 1/M; each iteration updates b then a with exponent λ = γ / (γ + ε)
    (``gamma=None``: λ = 1, balanced). ``support`` ``(B, N, M)`` (bool) zeroes the excluded pairs of the kernel.
    With λ = 1 every row of the plan sums to exactly 1/N after any number of iterations; with mass
    regularisation a row sums to μ^λ (K b)_i^(1−λ).

    Example:
        >>> plan = sinkhorn_step(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), epsilon=1.0)
        >>> plan.sum(-1).tolist()
        [[0.5, 0.5]]
    """
    iterations = check_int(iterations, "iterations", low=1)
    n, m = cost.shape[-2], cost.shape[-1]
    kernel = torch.exp(-cost / epsilon)
    if support is not None:
        kernel = kernel * support.to(kernel.dtype)
    power = 1.0 if gamma is None else gamma / (gamma + epsilon)
    mu, nu = 1.0 / n, 1.0 / m
    a = torch.full((*cost.shape[:-1], 1), mu, dtype=cost.dtype, device=cost.device)
    for _ in range(iterations):
        b = (nu / (kernel.transpose(-1, -2) @ a + 1e-8)) ** power
        a = (mu / (kernel @ b + 1e-8)) ** power
    return a * kernel * b.transpose(-1, -2)


def soft_correspondences(plan: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """Each source point's match: the normalised top-``k`` weights of its row of ``plan`` ``(B, N, M)`` averaging
    ``targets`` ``(B, M, 3)``.

    Returns ``(matched (B, N, 3), weights (B, N, k), indices (B, N, k))``; the weights of a row sum to 1, so each
    match is a convex combination of target points. ``k`` is clipped to M.

    Example:
        >>> plan = torch.tensor([[[0.3, 0.1, 0.0]]]); targets = torch.tensor([[[0.0, 0, 0], [4.0, 0, 0], [9.0, 9, 9]]])
        >>> soft_correspondences(plan, targets, 2)[0].tolist()
        [[[1.0, 0.0, 0.0]]]
    """
    k = min(check_int(k, "k", low=1), plan.shape[-1])
    top, index = plan.topk(k, dim=-1)
    weights = top / (top.sum(-1, keepdim=True) + 1e-8)
    matched = (weights[..., None] * gather_points(targets, index)).sum(-2)
    return matched, weights, index


class _InstanceNorm(nn.Module):
    """Instance normalisation of channels-last ``(B, N, K, C)`` features over the points and neighbours of each
    scan (FLOT / SCOOP's InstanceNorm2d), with a learned per-channel affine map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # moments as E[x], E[x²]: one pass, twice as fast as var
        mean = flat.mean(dim=1, keepdim=True)
        var = ((flat * flat).mean(dim=1, keepdim=True) - mean * mean).clamp(min=0.0)
        return ((flat - mean) * torch.rsqrt(var + 1e-5) * self.weight + self.bias).reshape(x.shape)


class SetConv(nn.Module):
    """A PointNet++-style graph convolution: a shared 3-layer MLP (with instance norm and leaky ReLU) on each
    edge's [neighbour feature, relative position], then a max over the neighbours.

    Example:
        >>> conv = SetConv(3, 8); pts = torch.rand(1, 10, 3)
        >>> idx = torch.arange(10).repeat(1, 10, 1)[..., :4]
        >>> conv(pts, idx, pts[:, idx[0]] - pts[..., None, :]).shape
        torch.Size([1, 10, 8])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # The first layer W·[f_nb, o] = W_f·f_nb + W_o·o: W_f is applied per point before the gather (k× cheaper).
        self.point_linear = nn.Linear(in_channels, out_channels, bias=False)
        self.offset_linear = nn.Linear(3, out_channels, bias=False)
        layers: list[nn.Module] = [_InstanceNorm(out_channels), nn.LeakyReLU(0.1)]
        for _ in range(2):
            layers += [nn.Linear(out_channels, out_channels, bias=False), _InstanceNorm(out_channels),
                       nn.LeakyReLU(0.1)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, neighbors: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        edges = gather_points(self.point_linear(features), neighbors) + self.offset_linear(offsets)
        return self.mlp(edges).amax(dim=2)


class PointFeatures(nn.Module):
    """Three SetConv layers on the kNN graph of a scan: ``(B, N, 3)`` → features ``(B, N, 4·channels)``.

    Example:
        >>> PointFeatures(channels=4, neighbors=5)(torch.rand(2, 12, 3))[0].shape
        torch.Size([2, 12, 16])
    """

    def __init__(self, channels: int = 32, neighbors: int = 32) -> None:
        super().__init__()
        self.neighbors = neighbors
        self.convs = nn.ModuleList([SetConv(3, channels), SetConv(channels, 2 * channels),
                                    SetConv(2 * channels, 4 * channels)])

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, N, C)`` and the graph's neighbour indices ``(B, N, k)`` (each point's own index first)."""
        k = min(self.neighbors, points.shape[1])
        _, neighbors = knn(points, points, k)
        offsets = gather_points(points, neighbors) - points[:, :, None]
        features = points
        for conv in self.convs:
            features = conv(features, neighbors, offsets)
        return features, neighbors


@dataclass
class SceneFlowEstimate:
    """What :class:`SCOOPModel` returns for a pair of scans: ``flow`` ``(B, N, 3)`` = ``matched`` − source,
    ``matched`` ``(B, N, 3)`` (the soft correspondences ŷ), ``confidence`` ``(B, N)`` in [0, 1] and the source's
    kNN graph ``neighbors`` ``(B, N, k)`` (own index first), reused by the smoothness term."""

    flow: torch.Tensor
    matched: torch.Tensor
    confidence: torch.Tensor
    neighbors: torch.Tensor


class SCOOPModel(nn.Module):
    """The SCOOP correspondence model (see the module doc): ``model(source, target) -> SceneFlowEstimate``.

    Args:
        channels: width of the first SetConv (the features have 4 · channels).
        neighbors: k of the feature graph.
        top_k: target points averaged per soft correspondence.
        max_distance: pairs farther apart than this (in the scans' units, metres) get no transport.
        iterations: unrolled Sinkhorn iterations (SCOOP: 1).

    The settings are kept in the ``settings`` buffer, so a checkpoint's weights rebuild the model on their own
    (:func:`flowzoo.three_d.scoop.load_scoop`).

    Example:
        >>> model = SCOOPModel(channels=4, neighbors=4, top_k=3)
        >>> est = model(torch.rand(2, 16, 3), torch.rand(2, 20, 3))
        >>> est.flow.shape, est.confidence.shape
        (torch.Size([2, 16, 3]), torch.Size([2, 16]))
    """

    def __init__(self, channels: int = 32, neighbors: int = 32, top_k: int = 64, max_distance: float = 10.0,
                 iterations: int = 1) -> None:
        super().__init__()
        channels = check_int(channels, "channels", low=1)
        neighbors = check_int(neighbors, "neighbors", low=1)
        top_k = check_int(top_k, "top_k", low=1)
        max_distance = check_positive(max_distance, "max_distance")
        iterations = check_int(iterations, "iterations", low=1)
        self.features = PointFeatures(channels, neighbors)
        self.epsilon_param = nn.Parameter(torch.zeros(1))  # ε = exp(ε̃) + 0.03
        self.gamma_param = nn.Parameter(torch.zeros(1))  # γ = exp(γ̃)
        self.register_buffer("settings", torch.tensor([channels, neighbors, top_k, max_distance, iterations],
                                                      dtype=torch.float64))

    @property
    def top_k(self) -> int:
        return int(self.settings[2])

    def transport(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor, torch.Tensor]:
        """``(plan (B, N, M), cosine similarity (B, N, M), source graph (B, N, k), source features)``."""
        source_features, neighbors = self.features(source)
        target_features, _ = self.features(target)
        f = torch.nn.functional.normalize(source_features, dim=-1, eps=1e-8)
        g = torch.nn.functional.normalize(target_features, dim=-1, eps=1e-8)
        similarity = f @ g.transpose(1, 2)
        support = torch.cdist(source, target) < float(self.settings[3])
        epsilon = torch.exp(self.epsilon_param) + EPSILON_FLOOR
        gamma = torch.exp(self.gamma_param)
        plan = sinkhorn_step(1.0 - similarity, epsilon, gamma, support=support, iterations=int(self.settings[4]))
        return plan, similarity, neighbors, source_features

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> SceneFlowEstimate:
        for name, scan in (("source", source), ("target", target)):
            check_tensor(scan, name, min_dim=3)
            if scan.dim() != 3 or scan.shape[-1] != 3:
                raise ShapeError(expected(f"{name} shaped (B, N, 3)", tuple(scan.shape), "add a batch dimension"))
        if source.shape[0] != target.shape[0]:
            raise ShapeError(expected("source and target with the same batch size",
                                      f"{source.shape[0]} and {target.shape[0]}", "pair scan i with scan i"))
        plan, similarity, neighbors, _ = self.transport(source, target)
        matched, weights, index = soft_correspondences(plan, target, self.top_k)
        confidence = (weights * similarity.gather(-1, index)).sum(-1).clamp(min=0.0)
        return SceneFlowEstimate(matched - source, matched, confidence, neighbors)
