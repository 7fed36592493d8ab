r"""Blockwise Flow Matching (BFM): its losses, its segment-walking sampler and FLOPs per sample.

Park, Lee, Joo, Kim, "Blockwise Flow Matching", NeurIPS 2025, arXiv 2510.21167. The network
(:class:`~flowzoo.vision.blockwise_nets.BlockwiseVelocity`) has one small velocity block per time segment
:math:`[b_k, b_{k+1})`, a shared feature alignment network and, optionally, a feature residual network.

* **Training, stage 1** (:class:`BlockwiseFlowMatchingLoss`, paper §3.1-3.2): the batch is split evenly over the
  K segments and each share draws :math:`t \sim U[b_k, b_{k+1})` (as the paper's code does), so every block gets
  the same number of samples per step. With :math:`x_t = (1 - t)x_0 + t x_1` the loss is

  .. math::  \mathcal L = \tfrac1B \sum_i \|v_{\theta_{k(t_i)}}(x_{t_i}, t_i, y_i) - (x_1 - x_0)_i\|^2
             + \lambda\, \tfrac1B \sum_i \big(1 - \cos(\hat f_\phi(x_{t_i}, t_i, y_i),\ f(x_{1,i}))\big),

  the flow-matching loss of each segment's block plus the alignment of the predicted features with the
  representation network's features :math:`f` of the clean image (negative cosine similarity, REPA-style; the
  paper's weight is λ = 0.05). The feature tokens also condition the blocks, so both terms train the alignment
  network.
* **Training, stage 2** (:class:`FeatureResidualLoss`, paper §3.3): with everything else frozen, the residual
  network learns :math:`h_\phi(x_{b_k}, b_k) + \frac{t - b_k}{b_{k+1} - b_k} r_\psi(x_t, t) \approx h_\phi(x_t, t)`
  along one path (same noise and image at both times), a mean squared error on the feature tokens.
* **Sampling** (:func:`blockwise_sample`): Euler or Heun over a grid that contains every boundary, each step using
  its segment's block (Heun's second evaluation at the segment's end too, so the field is never mixed across a
  boundary); with ``residual=True`` the alignment network runs only at the first step of each segment.

**Time.** flowzoo's t runs 0 (noise) → 1 (data); the paper's code uses σ = 1 − t (noise at σ = 1), so its
segment [σ_{k+1}, σ_k] is [1 − σ_k, 1 − σ_{k+1}] here and its target (noise − image) is the negative of ours.
Rationale: each sampling step runs one small block (and, with the residual approximation, a smaller feature
network), so a sample costs fewer FLOPs than with one large network.

Example:
    >>> from flowzoo.vision.blockwise_nets import BlockwiseVelocity
    >>> net = BlockwiseVelocity(1, 8, patch=2, hidden=32, heads=2, segments=2, block_depth=1)
    >>> loss, metrics = BlockwiseFlowMatchingLoss()(net, {"x1": torch.randn(4, 1, 8, 8)})
    >>> sorted(metrics)
    ['fm', 'fm_segment_0', 'fm_segment_1', 'loss']
    >>> blockwise_sample(net, torch.randn(4, 1, 8, 8), steps=4).nfe
    4
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from flowzoo.core.batching import drop_conditions, per_sample_mean, reduce_weighted, unpack_batch
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.sampling import (SampleResult, StepRecorder, check_cond, check_end_state, integrate,
                                   uniform_grid)
from flowzoo.core.validation import check_bool, check_int, check_number, check_probability, check_tensor
from flowzoo.vision.blockwise_nets import BlockwiseVelocity, check_boundaries

__all__ = ["segment_split", "segment_times", "segment_grid", "BlockwiseFlowMatchingLoss", "FeatureResidualLoss",
           "blockwise_sample", "flops_per_sample"]

Tensor = torch.Tensor
_NET_FIX = "use a flowzoo.vision.blockwise_nets.BlockwiseVelocity"


def segment_split(n: int, segments: int, device: torch.device | None = None) -> Tensor:
    """The segment of each of ``n`` batch rows: contiguous, as even as possible, the first shares one larger.

    Example:
        >>> segment_split(7, 3).tolist()
        [0, 0, 0, 1, 1, 2, 2]
    """
    base, extra = divmod(n, segments)
    sizes = torch.tensor([base + (k < extra) for k in range(segments)], device=device)
    return torch.repeat_interleave(torch.arange(segments, device=device), sizes)


def segment_times(segment: Tensor, boundaries: Sequence[float], u: Tensor) -> Tensor:
    """Times b_k + (b_{k+1} − b_k) u of rows in segments ``segment`` from uniforms ``u`` in [0, 1).

    Example:
        >>> segment_times(torch.tensor([0, 1]), (0.0, 0.5, 1.0), torch.tensor([0.5, 0.5])).tolist()
        [0.25, 0.75]
    """
    edges = torch.tensor(boundaries, dtype=u.dtype, device=u.device)
    low = edges[segment]
    return low + (edges[segment + 1] - low) * u


def segment_grid(boundaries: int | Sequence[float], steps: int | None = None, *,
                 time_grid: Tensor | Sequence[float] | None = None) -> Tensor:
    """An increasing time grid from 0 to 1 (or over ``time_grid``) that contains every segment boundary.

    With ``steps``, each segment gets a share of the steps proportional to its length (at least one) and a
    uniform grid inside; ``time_grid`` gets the interior boundaries it lacks inserted, so no step crosses one.

    Example:
        >>> segment_grid(2, 4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> segment_grid([0, 0.5, 1], time_grid=[0.0, 0.4, 1.0]).tolist()
        [0.0, 0.4000000059604645, 0.5, 1.0]
    """
    edges = check_boundaries(boundaries)
    k = len(edges) - 1
    if (steps is None) == (time_grid is None):
        raise ConfigError(expected("either steps or time_grid", "both" if steps is not None else "neither",
                                   "pass e.g. steps=20"))
    if time_grid is not None:
        grid = check_tensor(torch.as_tensor(time_grid, dtype=torch.float32), "time_grid", min_dim=1)
        if grid.dim() != 1 or len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()) or grid[0] < 0 or grid[-1] > 1:
            raise ConfigError(expected("an increasing 1-D time_grid within [0, 1] (noise to data)",
                                       grid.tolist()[:8], "sort the grid, e.g. segment_grid(K, steps=20)"))
        inner = [b for b in edges[1:-1] if float(grid[0]) < b < float(grid[-1]) and not bool((grid == b).any())]
        return torch.sort(torch.cat([grid, torch.tensor(inner, dtype=grid.dtype)])).values
    steps = check_int(steps, "steps", low=k, fix=f"use at least one step per segment, steps >= {k}")
    lengths = [b - a for a, b in zip(edges, edges[1:])]
    shares = [max(1, round(steps * length)) for length in lengths]
    while sum(shares) != steps:  # fix rounding on the segment that is farthest from its exact share
        gaps = [(s - steps * length) * (1 if sum(shares) > steps else -1) for s, length in zip(shares, lengths)]
        order = sorted(range(k), key=lambda i: -gaps[i])
        i = next(i for i in order if sum(shares) < steps or shares[i] > 1)
        shares[i] += 1 if sum(shares) < steps else -1
    pieces = [uniform_grid(s, a, b)[:-1] for s, a, b in zip(shares, edges, edges[1:])]
    return torch.cat([*pieces, torch.ones(1)])


def _boundaries_for(model: nn.Module, segments: tuple[float, ...] | None) -> tuple[float, ...]:
    own = getattr(model, "boundaries", None)
    if segments is None:
        if own is None:
            raise ConfigError(expected("segments=K (or boundaries) for a model without .boundaries",
                                       type(model).__name__, "pass BlockwiseFlowMatchingLoss(segments=K)"))
        return tuple(own)
    if own is not None and tuple(own) != segments:
        raise ConfigError(expected(f"the model's segment boundaries {tuple(own)}", segments,
                                   "build the loss with segments=None to use the model's boundaries"))
    return segments


class BlockwiseFlowMatchingLoss:
    r"""BFM stage 1: per-segment flow matching plus feature alignment (module docstring, arXiv 2510.21167 §3).

    Args:
        segments: K or the boundaries; ``None`` reads ``model.boundaries`` at each call.
        representation: the frozen representation network, images (B, C, H, W) -> features (B, feature_dim),
            e.g. ``FeatureClassifier.features``; ``None`` drops the alignment term.
        feature_weight: λ, the weight of the alignment term (0.05 in the paper's configuration).
        cond_dropout, null_cond: classifier-free-guidance label dropout, as :class:`~flowzoo.core.objectives.FlowMatchingLoss`.

    Calling ``loss(model, batch, generator=None)`` returns ``(loss, metrics)`` with ``loss``, ``fm`` (the
    flow-matching term), ``fm_segment_<k>`` (each segment's mean) and ``feature`` (mean 1 − cosine). With K = 1 and
    no representation this is :class:`~flowzoo.core.objectives.FlowMatchingLoss` draw for draw.
    """

    def __init__(self, segments: int | Sequence[float] | None = None, *,
                 representation: Callable[[Tensor], Tensor] | None = None, feature_weight: float = 0.05,
                 cond_dropout: float = 0.0, null_cond: Mapping[str, object] | None = None):
        self.segments = None if segments is None else check_boundaries(segments)
        if representation is not None and not callable(representation):
            raise ConfigError(expected("representation as a callable images -> features", type(representation).__name__,
                                       "pass e.g. classifier.features"))
        self.representation = representation
        self.feature_weight = check_number(feature_weight, "feature_weight", low=0.0)
        self.cond_dropout = check_probability(cond_dropout, "cond_dropout")
        self.null_cond = dict(null_cond or {})
        if self.cond_dropout > 0 and not self.null_cond:
            raise ConfigError(expected("null_cond with cond_dropout > 0", "no null_cond",
                                       'pass e.g. null_cond={"y": num_classes}'))

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        boundaries = _boundaries_for(model, self.segments)
        data = unpack_batch(batch, generator)
        n, x1 = data.x1.shape[0], data.x1
        segment = segment_split(n, len(boundaries) - 1, x1.device)
        u = torch.rand(n, device=x1.device, generator=generator)   # the draw FlowMatchingLoss's UniformTime makes
        t = segment_times(segment, boundaries, u).to(x1.dtype)
        tb = t.reshape(n, *([1] * (x1.dim() - 1)))
        x_t, target = (1 - tb) * data.x0 + tb * x1, x1 - data.x0
        cond = data.cond
        if self.cond_dropout > 0:
            cond, _ = drop_conditions(cond, self.null_cond, self.cond_dropout, n, x1.device, generator)
        guided = self.representation is not None
        if guided:
            if not getattr(model, "feature_dim", 0):
                raise ConfigError(expected("a model with feature guidance (feature_dim > 0) for a representation",
                                           type(model).__name__, "build BlockwiseVelocity(feature_dim=...)"))
            prediction, features = model(x_t, t, **cond, return_features=True)
        else:
            prediction = model(x_t, t, **cond)
        if not isinstance(prediction, Tensor) or prediction.shape != x_t.shape:
            raise ShapeError(expected(f"the model to return a tensor shaped like x_t {tuple(x_t.shape)}",
                                      type(prediction).__name__, "make model(x, t, **cond) return a velocity"))
        per_sample = per_sample_mean((prediction - target) ** 2)
        fm = reduce_weighted(per_sample, data.weight)
        loss, values = fm, {"fm": fm.detach()}
        if guided:
            with torch.no_grad():
                wanted = self.representation(x1)
            if wanted.shape != features.shape:
                raise ShapeError(expected(f"representation features of shape {tuple(features.shape)}",
                                          f"shape {tuple(wanted.shape)}", "set feature_dim to the feature width"))
            alignment = reduce_weighted(1 - F.cosine_similarity(features, wanted.to(features.dtype), dim=1),
                                        data.weight)
            loss = loss + self.feature_weight * alignment
            values["feature"] = alignment.detach()
        values["loss"] = loss.detach()
        for k in range(min(n, len(boundaries) - 1)):   # a batch smaller than K leaves the last segments empty
            values[f"fm_segment_{k}"] = per_sample.detach()[segment == k].mean()
        metrics = dict(zip(values, torch.stack([v.double() for v in values.values()]).tolist()))
        return loss, metrics


class FeatureResidualLoss:
    r"""BFM stage 2: train the feature residual network r_ψ (module docstring, arXiv 2510.21167 §3.3).

    .. math::  \mathcal L = \big\|\,h_\phi(x_{b_k}, b_k) + \tfrac{t - b_k}{b_{k+1} - b_k}\, r_\psi(x_t, t)
               - h_\phi(x_t, t)\,\big\|^2,

    with :math:`x_{b_k}` and :math:`x_t` on one path, t drawn per segment as in stage 1. Only r_ψ gets gradients
    (optimise ``model.residual_parameters()``). Returns ``(loss, {"loss": ...})``.

    Example:
        >>> net = BlockwiseVelocity(1, 8, patch=2, hidden=32, heads=2, segments=2, block_depth=1, feature_dim=8,
        ...                         feature_depth=1, residual_depth=1)
        >>> loss, _ = FeatureResidualLoss()(net, {"x1": torch.randn(4, 1, 8, 8)})
        >>> loss.backward(); net.feature_blocks[0].qkv.weight.grad is None
        True
    """

    def __call__(self, model: BlockwiseVelocity, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        if not isinstance(model, BlockwiseVelocity) or not model.residual_depth:
            raise ConfigError(expected("a BlockwiseVelocity with residual_depth > 0", type(model).__name__, _NET_FIX))
        data = unpack_batch(batch, generator)
        n, x1, edges = data.x1.shape[0], data.x1, model.boundaries
        segment = segment_split(n, model.segments, x1.device)
        u = torch.rand(n, device=x1.device, generator=generator)
        t = segment_times(segment, edges, u).to(x1.dtype)
        start = segment_times(segment, edges, torch.zeros_like(u)).to(x1.dtype)
        shape = (n, *([1] * (x1.dim() - 1)))
        x_t = (1 - t.reshape(shape)) * data.x0 + t.reshape(shape) * x1
        x_start = (1 - start.reshape(shape)) * data.x0 + start.reshape(shape) * x1
        y = data.cond.get("y")
        with torch.no_grad():
            anchor = model.features(x_start, model.condition(x_start, start, y))
            c = model.condition(x_t, t, y)
            wanted = model.features(x_t, c)
        fraction = ((t - start) / (segment_times(segment, edges, torch.ones_like(u)) - start))[:, None, None]
        approx = anchor + fraction * model.residual(x_t, c)
        loss = reduce_weighted(per_sample_mean((approx - wanted) ** 2), data.weight)
        return loss, {"loss": loss.item()}


def _step_velocity(model: BlockwiseVelocity, x: Tensor, t: float, k: int, y: Tensor | None,
                   anchor: Tensor | None, residual: bool) -> tuple[Tensor, Tensor | None]:
    """One velocity evaluation in segment k; returns it and the feature tokens the evaluation computed."""
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    c = model.condition(x, tt, y)
    tokens = None
    if model.feature_dim:
        if residual and anchor is not None:
            low, high = model.boundaries[k], model.boundaries[k + 1]
            tokens = anchor + (t - low) / (high - low) * model.residual(x, c)
        else:
            tokens = model.features(x, c)
    return model.velocity(x, c, k, tokens), tokens


@torch.no_grad()
def blockwise_sample(model: BlockwiseVelocity, x: Tensor, *, steps: int | None = None,
                     time_grid: Tensor | Sequence[float] | None = None, method: str = "euler",
                     cond: Mapping[str, Any] | None = None, residual: bool = False,
                     generator: torch.Generator | None = None, callback: Callable | None = None,
                     return_trajectory: bool = False, progress: bool = False) -> SampleResult:
    """Integrate a :class:`~flowzoo.vision.blockwise_nets.BlockwiseVelocity` from noise x (t = 0) to data.

    The grid is :func:`segment_grid` (``steps`` shared over the segments, or ``time_grid`` with the boundaries
    inserted); ``method`` is ``"euler"`` or ``"heun"`` (both evaluations of a step in its segment's block).
    ``residual=True`` uses the feature residual approximation: the alignment network runs at the first step of
    each segment (at b_k when the grid starts there) and the residual network at the others. ``cond`` holds
    ``y``; ``generator`` is accepted for the shared signature (the sampler is deterministic).

    Returns a :class:`~flowzoo.core.sampling.SampleResult`; ``extras`` holds ``feature_evals`` and
    ``residual_evals`` (calls of the alignment and residual networks) and ``segment_steps`` (steps per segment).
    """
    if not isinstance(model, BlockwiseVelocity):
        raise ConfigError(expected("a BlockwiseVelocity", type(model).__name__, _NET_FIX + " (or core integrate)"))
    method = str(method)
    if method not in ("euler", "heun"):
        raise ConfigError(expected('method "euler" or "heun"', repr(method), 'pass method="euler"'))
    residual = check_bool(residual, "residual")
    if residual and not model.residual_depth:
        raise ConfigError(expected("a net with a feature residual network for residual=True",
                                   "residual_depth=0", "build it with residual_depth >= 1 and train it"))
    x = model.check_inputs(x, 0.0)[0]
    y = check_cond(cond).get("y")
    grid = segment_grid(model.boundaries, steps, time_grid=time_grid).tolist()
    times = torch.tensor(grid, dtype=x.dtype)
    recorder = StepRecorder(x, times, callback=callback, return_trajectory=return_trajectory, progress=progress)
    segments = model.segment_of(times[:-1]).tolist()
    nfe = features = residuals = 0
    anchor, current = None, -1
    for i, k in enumerate(segments):
        t, t_next = grid[i], grid[i + 1]
        if k != current:
            anchor, current = None, k
        v, tokens = _step_velocity(model, x, t, k, y, anchor, residual)
        features, residuals = features + (tokens is not None and anchor is None), residuals + (anchor is not None)
        if residual and anchor is None:
            anchor = tokens  # the alignment network's features at the segment's first time
        nfe += 1
        if method == "heun":
            v_end, _ = _step_velocity(model, x + (t_next - t) * v, t_next, k, y, anchor, residual)
            features, residuals = features + (model.feature_dim and not residual), residuals + residual
            v, nfe = 0.5 * (v + v_end), nfe + 1
        x = x + (t_next - t) * v
        if recorder.active:
            recorder.record(i, x)
    check_end_state(x, "train longer or lower the learning rate; check the inputs for NaN")
    extras = {"feature_evals": int(features), "residual_evals": int(residuals),
              "segment_steps": [segments.count(k) for k in range(model.segments)]}
    return SampleResult(x=x, nfe=nfe, trajectory=recorder.trajectory(), times=times, extras=extras)


def flops_per_sample(model: nn.Module, shape: Sequence[int], *, t: float = 0.5, cond: Mapping[str, Any] | None = None,
                     steps: int | None = None, residual: bool = False, method: str = "euler") -> float:
    """Floating-point operations of one velocity evaluation for one image of ``shape`` (C, H, W).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions; a
    multiply-add counts 2). Without ``steps``: one call ``model(x, t, **cond)`` (for BFM the block of t's
    segment plus the feature alignment network). With ``steps``: the FLOPs of a whole sampling run
    (:func:`blockwise_sample` for BFM, with ``residual`` and ``method``; the core's ``integrate`` otherwise)
    divided by its evaluations, the average cost of one evaluation. ``cond`` defaults to ``y = 0`` for a
    class-conditional net.

    Example:
        >>> net = BlockwiseVelocity(1, 8, patch=2, hidden=32, heads=2, segments=2, block_depth=1)
        >>> flops_per_sample(net, (1, 8, 8)) < flops_per_sample(BlockwiseVelocity(1, 8, patch=2, hidden=32,
        ...                                                         heads=2, segments=1, block_depth=2), (1, 8, 8))
        True
    """
    x = torch.zeros(1, *(int(s) for s in shape), device=next(model.parameters()).device)
    cond = check_cond(cond)
    if not cond and getattr(model, "num_classes", 0):
        cond = {"y": torch.zeros(1, dtype=torch.long, device=x.device)}
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            if steps is None:
                model(x, torch.full((1,), float(t), device=x.device), **cond)
                calls = 1
            elif isinstance(model, BlockwiseVelocity):
                calls = blockwise_sample(model, x, steps=steps, cond=cond, residual=residual, method=method).nfe
            else:
                calls = integrate(model, x, steps=steps, method=method, cond=cond).nfe
    finally:
        model.train(was_training)
    return counter.get_total_flops() / calls
