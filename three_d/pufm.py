r"""PUFM and PUFM++ training: point-cloud upsampling by flow matching from interpolated sparse points (arXiv
2501.15286); inference (stage 3's schedule, the on-manifold projection, patch-wise upsampling) lives in
:mod:`flowzoo.three_d.pufm_sampling`.

The flow starts from the sparse input itself rather than from noise. For a sparse patch P of n points and a
ratio R:

* **Midpoints** (:func:`midpoint_interpolate`): the midpoints of every point and each of its k = 2R nearest
  neighbours (itself included, so P is kept), reduced to R·n points by farthest-point sampling.
* **Source and coupling** (:func:`pufm_source`, :func:`align_to_source`): x₀ = midpoints + σ·ε (σ = 0.02 in
  PUFM++), and the dense target x₁ is permuted by the exact EMD bijection to x₀, so each source point has its
  own target and the conditional paths barely cross.
* **Stage 1** (:class:`PUFMLoss`): x_t = t·x₁ + (1 − t)·x₀, regress v_θ(x_t, t | P) on x₁ − x₀ (the paper's
  Eq. for conditional flow matching) with t = 1 − cos(πu/2), u ~ U(0, 1) (:class:`CosineTime`, density
  (2/π)/√(t(2 − t)), skewed toward the source) and latent self-conditioning with probability 0.9.
* **Stage 2** (:class:`EndpointChamferLoss`): the one-step endpoint x̂₁ = x₀ + v_θ(x₀, 0 | P) is trained with
  the Chamfer distance to the unaligned dense cloud, which pulls the endpoint toward the target's marginal.
* **Stage 3's measurement** (:func:`loss_curve`): the per-t loss ℓ(t) on a grid, which
  :func:`flowzoo.three_d.pufm_sampling.adaptive_time_grid` inverts into the sampling steps.

Baselines in the same functions: ``source="gaussian"`` is a diffusion-style flow from x₀ ~ N(0, I) with
independent pairing. Time: 0 = source (noisy midpoints), 1 = dense cloud, as in the paper. Rationale: a source
close to the target makes a short, nearly straight flow, so one to five Euler steps suffice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from flowzoo.core.batching import reduce_weighted
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.paths import TimeSampler
from flowzoo.core.validation import check_count, check_int, check_nonnegative, check_probability

from flowzoo.three_d.metrics import chamfer_distance, emd_assignment
from flowzoo.three_d.ops import check_points, farthest_point_sample, gather_points, knn

__all__ = ["SOURCES", "CosineTime", "check_ratio", "midpoint_interpolate", "pufm_source", "align_to_source",
           "velocity_with_latents", "PUFMLoss", "EndpointChamferLoss", "loss_curve"]

SOURCES = ("midpoints", "gaussian")


class CosineTime(TimeSampler):
    r"""PUFM's cosine-skewed times t = 1 − cos(πu/2), u ~ U(0, 1): CDF F(t) = (2/π)·arccos(1 − t), density
    (2/π)/√(t(2 − t)), mean 1 − 2/π; more training near the source, where the flow starts.

    Example:
        >>> t = CosineTime().sample(20000, generator=torch.Generator().manual_seed(0))
        >>> abs(float(t.mean()) - (1 - 2 / math.pi)) < 0.01
        True
    """

    def sample(self, n, device=None, generator=None):
        u = torch.rand(check_count(n), device=device, generator=generator)
        return 1.0 - torch.cos(0.5 * math.pi * u)


def check_ratio(ratio: object) -> int:
    """``ratio`` as an int >= 2 (the upsampling factor), or a ConfigError that says how to pass it.

    Example:
        >>> check_ratio(4)
        4
    """
    return check_int(ratio, "ratio", low=2, fix="pass an integer upsampling ratio >= 2, e.g. ratio=4")


def midpoint_interpolate(points: torch.Tensor, ratio: int, *, k: int | None = None) -> torch.Tensor:
    """``ratio · n`` points ``(B, ratio·n, 3)`` from ``points`` ``(B, n, 3)``: FPS over the midpoints of each
    point and its ``k`` (default 2·ratio) nearest neighbours, itself included.

    Example:
        >>> pts = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
        >>> midpoint_interpolate(pts, 2).sort(dim=1).values[0, :, 0].tolist()
        [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    """
    points = check_points(points)
    ratio = check_ratio(ratio)
    k = check_int(2 * ratio if k is None else k, "k", low=1)
    k = min(k, points.shape[1])
    if points.shape[1] * k < ratio * points.shape[1]:
        raise ShapeError(expected(f"at least {ratio} points per cloud for ratio {ratio}", points.shape[1],
                                  "pass a larger cloud or a smaller ratio"))
    _, idx = knn(points, points, k)
    mids = 0.5 * (points[:, :, None, :] + gather_points(points, idx))
    mids = mids.reshape(points.shape[0], -1, 3)
    return gather_points(mids, farthest_point_sample(mids, ratio * points.shape[1]))


def pufm_source(sparse: torch.Tensor, ratio: int, *, source: str = "midpoints", noise: float = 0.02,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The flow's start ``(B, ratio·n, 3)``: noisy midpoints (PUFM), or N(0, I) for ``source="gaussian"``.

    Example:
        >>> pufm_source(torch.rand(2, 8, 3), 4, noise=0.0).shape
        torch.Size([2, 32, 3])
    """
    sparse = check_points(sparse, "sparse")
    if source not in SOURCES:
        raise ConfigError(expected(f"source in {SOURCES}", repr(source), "pick one of them"))
    noise = check_nonnegative(noise, "noise")
    shape = (sparse.shape[0], check_ratio(ratio) * sparse.shape[1], 3)
    eps = torch.randn(shape, generator=generator, dtype=sparse.dtype).to(sparse.device)
    if source == "gaussian":
        return eps
    return midpoint_interpolate(sparse, ratio) + noise * eps


def align_to_source(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``x1`` permuted by the exact EMD bijection to ``x0`` (row i of the result is x0[i]'s target).

    Example:
        >>> x0 = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]]); x1 = torch.tensor([[[1.1, 0, 0], [0.1, 0, 0]]])
        >>> align_to_source(x0, x1)[0, :, 0].tolist()
        [0.10000000149011612, 1.100000023841858]
    """
    return gather_points(x1, emd_assignment(x0, x1))


def _unpack(batch: object) -> tuple[torch.Tensor, torch.Tensor, int]:
    if not isinstance(batch, Mapping) or "x1" not in batch or "sparse" not in batch:
        raise ConfigError(expected('a batch dict with "x1" (dense, (B, R·n, 3)) and "sparse" ((B, n, 3))',
                                   type(batch).__name__ if not isinstance(batch, Mapping) else sorted(batch),
                                   "build batches as {'x1': dense_patches, 'sparse': sparse_patches}"))
    x1, sparse = check_points(batch["x1"], "x1"), check_points(batch["sparse"], "sparse")
    if x1.shape[0] != sparse.shape[0] or x1.shape[1] % sparse.shape[1] or x1.shape[1] < 2 * sparse.shape[1]:
        raise ShapeError(expected("x1 (B, R·n, 3) and sparse (B, n, 3) with an integer R >= 2",
                                  f"{tuple(x1.shape)} and {tuple(sparse.shape)}", "pair dense and sparse patches"))
    return x1, sparse, x1.shape[1] // sparse.shape[1]


def _midpoints(batch: Mapping[str, Any], x1: torch.Tensor) -> torch.Tensor | None:
    if batch.get("x0") is None:
        return None
    x0 = check_points(batch["x0"], "x0")
    if x0.shape != x1.shape:
        raise ShapeError(expected("x0 (precomputed midpoints) shaped like x1", f"{tuple(x0.shape)} and "
                                  f"{tuple(x1.shape)}", "pass midpoint_interpolate(sparse, ratio) as x0"))
    return x0


def velocity_with_latents(model, x: torch.Tensor, t: torch.Tensor, sparse: torch.Tensor,
                          latents: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(v, new latents)`` of a PUFM model; models without ``forward_latents`` run without self-conditioning
    (their latents are None).

    Example:
        >>> v, latents = velocity_with_latents(lambda x, t, sparse: -x, torch.ones(1, 2, 3), torch.zeros(1),
        ...                                    torch.zeros(1, 1, 3), None)
        >>> v[0, 0].tolist(), latents
        ([-1.0, -1.0, -1.0], None)
    """
    if hasattr(model, "forward_latents"):
        return model.forward_latents(x, t, sparse, latents)
    return model(x, t, sparse=sparse), None


class PUFMLoss:
    """Stage-1 flow matching from noisy midpoints to the EMD-aligned dense patch (or from N(0, I), unaligned).

    ``__call__(model, batch)`` with ``batch = {"x1": dense (B, R·n, 3), "sparse": (B, n, 3), "x0"?, "weight"?}``
    returns ``(loss, {"fm_loss"})``; the loss is the mean squared velocity error per point and coordinate
    (the paper sums it, a constant factor absorbed by the learning rate). A batch's ``"x0"`` holds precomputed
    midpoints with ``x1`` already EMD-aligned to them (a training set pairs each patch once: the source noise is
    far below the point spacing, so the bijection barely changes; the paper re-aligns every batch on the GPU).

    Args:
        source: ``"midpoints"`` (PUFM) or ``"gaussian"`` (the diffusion-style baseline).
        noise: std of the noise added to the midpoints.
        align: EMD pre-alignment of x₁ to x₀ (default: on for midpoints, off for the Gaussian source).
        self_condition: probability of feeding back no-grad latents (0 disables).
        time_sampler: default :class:`CosineTime`.

    Example:
        >>> from flowzoo.three_d.point_nets import PUFMBackbone, PointNetConfig
        >>> net = PUFMBackbone(PointNetConfig(dim=16, latents=4, blocks=1, compute_layers=1, heads=2, k=4))
        >>> batch = {"x1": torch.rand(2, 16, 3), "sparse": torch.rand(2, 4, 3)}
        >>> loss, metrics = PUFMLoss()(net, batch)
        >>> loss.dim(), sorted(metrics)
        (0, ['fm_loss'])
    """

    def __init__(self, source: str = "midpoints", noise: float = 0.02, align: bool | None = None,
                 self_condition: float = 0.9, time_sampler: TimeSampler | None = None):
        if source not in SOURCES:
            raise ConfigError(expected(f"source in {SOURCES}", repr(source), "pick one of them"))
        self.source, self.noise = source, check_nonnegative(noise, "noise")
        self.align = source == "midpoints" if align is None else bool(align)
        self.self_condition = check_probability(self_condition, "self_condition")
        self.time_sampler = time_sampler or CosineTime()

    def pair(self, x1: torch.Tensor, sparse: torch.Tensor, ratio: int, generator: torch.Generator | None = None,
             midpoints: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, x1)`` of one batch: the source and the (aligned) target. Precomputed ``midpoints`` (a batch's
        ``"x0"``) skip the interpolation; their ``x1`` is taken as already aligned to them."""
        if midpoints is not None and self.source == "midpoints":
            noise = torch.randn(midpoints.shape, generator=generator, dtype=midpoints.dtype).to(midpoints.device)
            return midpoints + self.noise * noise, x1
        x0 = pufm_source(sparse, ratio, source=self.source, noise=self.noise, generator=generator)
        return x0, (align_to_source(x0, x1) if self.align else x1)

    def per_sample(self, model, x0: torch.Tensor, x1: torch.Tensor, sparse: torch.Tensor, t: torch.Tensor,
                   self_condition: bool = False) -> torch.Tensor:
        """Per-sample velocity MSE ``(B,)`` at times ``t`` ``(B,)``."""
        x_t = x0 + t[:, None, None] * (x1 - x0)
        latents = None
        if self_condition:
            with torch.no_grad():
                latents = velocity_with_latents(model, x_t, t, sparse, None)[1]
        v = velocity_with_latents(model, x_t, t, sparse, latents)[0]
        return (v - (x1 - x0)).pow(2).mean(dim=(1, 2))

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        x1, sparse, ratio = _unpack(batch)
        x0, x1 = self.pair(x1, sparse, ratio, midpoints=_midpoints(batch, x1))
        t = self.time_sampler.sample(x1.shape[0], device=x1.device).to(x1.dtype)
        use_sc = self.self_condition > 0 and bool(torch.rand(()) < self.self_condition)
        loss = reduce_weighted(self.per_sample(model, x0, x1, sparse, t, use_sc), batch.get("weight"))
        return loss, {"fm_loss": float(loss.detach())}


class EndpointChamferLoss:
    """PUFM++ stage 2: Chamfer distance between the one-step endpoint x₀ + v_θ(x₀, 0 | P) and the dense cloud
    (no alignment), plus ``fm_weight`` × the stage-1 loss so that multi-step sampling stays consistent.

    Example:
        >>> from flowzoo.three_d.point_nets import PUFMBackbone, PointNetConfig
        >>> net = PUFMBackbone(PointNetConfig(dim=16, latents=4, blocks=1, compute_layers=1, heads=2, k=4))
        >>> loss, metrics = EndpointChamferLoss()(net, {"x1": torch.rand(2, 16, 3), "sparse": torch.rand(2, 4, 3)})
        >>> sorted(metrics)
        ['cd_loss', 'fm_loss']
    """

    def __init__(self, noise: float = 0.02, fm_weight: float = 1.0, flow: PUFMLoss | None = None):
        self.noise, self.fm_weight = check_nonnegative(noise, "noise"), check_nonnegative(fm_weight, "fm_weight")
        self.flow = flow or PUFMLoss(noise=noise)

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict[str, float]]:
        x1, sparse, ratio = _unpack(batch)
        mids = _midpoints(batch, x1)
        if mids is None:
            x0 = pufm_source(sparse, ratio, noise=self.noise)
        else:
            x0 = mids + self.noise * torch.randn(mids.shape, dtype=mids.dtype).to(mids.device)
        endpoint = x0 + velocity_with_latents(model, x0, torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device),
                                  sparse, None)[0]
        cd = reduce_weighted(chamfer_distance(endpoint, x1), batch.get("weight"))
        metrics = {"cd_loss": float(cd.detach())}
        if self.fm_weight == 0:
            return cd, metrics
        fm, fm_metrics = self.flow(model, batch)
        return cd + self.fm_weight * fm, {**metrics, **fm_metrics}


@torch.no_grad()
def loss_curve(model, batches: Iterable[Mapping[str, torch.Tensor]], *, points: int = 51,
               loss: PUFMLoss | None = None, generator: torch.Generator | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """PUFM++ stage 3's measurement: the stage-1 loss at each of ``points`` uniform times on [0, 1], averaged
    over ``batches``; returns ``(times, losses)``.

    Example:
        >>> from flowzoo.three_d.point_nets import PUFMBackbone, PointNetConfig
        >>> net = PUFMBackbone(PointNetConfig(dim=16, latents=4, blocks=1, compute_layers=1, heads=2, k=4))
        >>> t, l = loss_curve(net, [{"x1": torch.rand(2, 16, 3), "sparse": torch.rand(2, 4, 3)}], points=5)
        >>> t.tolist(), l.shape
        ([0.0, 0.25, 0.5, 0.75, 1.0], torch.Size([5]))
    """
    points = check_int(points, "points", low=2)
    loss = loss or PUFMLoss()
    times = torch.linspace(0.0, 1.0, points)
    total, count = torch.zeros(points), 0
    for batch in batches:
        x1, sparse, ratio = _unpack(batch)
        x0, x1 = loss.pair(x1, sparse, ratio, generator, midpoints=_midpoints(batch, x1))
        for i, t in enumerate(times.tolist()):
            tt = torch.full((x1.shape[0],), t, dtype=x1.dtype, device=x1.device)
            total[i] += loss.per_sample(model, x0, x1, sparse, tt).sum().cpu()
        count += x1.shape[0]
    if count == 0:
        raise ConfigError(expected("at least one batch", "none", "pass a list of batches"))
    return times, total / count
