r"""PUFM / PUFM++ inference (arXiv 2501.15286): stage 3's adaptive steps, the on-manifold projection, the Euler
sampler with self-conditioning and patch-wise 4x / 16x upsampling.

* **Stage 3** (:func:`adaptive_time_grid`): the per-t loss curve ℓ(t) (:func:`flowzoo.three_d.pufm.loss_curve`)
  gives the CDF F(t) = ∫₀ᵗ ℓ / ∫₀¹ ℓ (trapezoid rule); the K sampling steps are t_k = F⁻¹(k/K), dense where the
  loss is high.
* **On-manifold projection** (:func:`project_on_manifold`): after each Euler step every point moves a small
  distance η along the normalised descent direction of its L1 distance to its nearest point of a reference
  cloud: by default the interpolated input (the patch's midpoints, where sampling starts), as the official
  evaluation does; it is R times denser than the sparse input, so its nearest point is a closer stand-in for the
  local surface.
* **Sampling** (:func:`sample_pufm`): Euler steps of v_θ(x, t | P) from the midpoints at t = 0 (source) to
  t = 1 (dense cloud), the paper's time direction, carrying the latents from step to step. Inference starts
  from the plain midpoints (``noise=0``), as the official evaluation does: the σ = 0.02 noise of training widens
  the source distribution the flow learns from, and added at inference it is noise the few steps must remove.
* **Patch-wise upsampling** (:func:`upsample`): FPS seeds + kNN patches, each normalised to the unit sphere,
  upsampled, mapped back and merged, together with the input points (as the official evaluation merges them),
  by FPS to exactly R·N points; 16x is 4x applied twice.

Rationale: the flow starts next to its target, so one to five Euler steps suffice; the projection and the
schedule spend those few steps where they reduce the error most.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.sampling import SampleResult, StepRecorder, progress_bar, resolve_grid
from flowzoo.core.validation import check_int, check_nonnegative, check_tensor

from flowzoo.three_d.ops import (check_points, denormalize, extract_patches, gather_points, knn, merge_patches,
                                 normalize_unit_sphere)
from flowzoo.three_d.pufm import check_ratio, midpoint_interpolate, pufm_source, velocity_with_latents

__all__ = ["adaptive_time_grid", "project_on_manifold", "sample_pufm", "upsample_patches", "upsample"]


def adaptive_time_grid(times: torch.Tensor, losses: torch.Tensor, steps: int) -> torch.Tensor:
    r"""PUFM++ stage 3's schedule: ``steps + 1`` times t_k = F⁻¹(k/steps), F the normalised trapezoid CDF of the
    loss curve ``losses`` on the increasing grid ``times`` (from 0 to 1); F⁻¹ interpolates linearly.

    Example:
        >>> t = torch.linspace(0, 1, 101)
        >>> [round(v, 3) for v in adaptive_time_grid(t, t, 4).tolist()]  # F(t) = t², so t_k = √(k/4)
        [0.0, 0.5, 0.707, 0.866, 1.0]
    """
    times = check_tensor(times, "times").double()
    losses = check_tensor(losses, "losses").double()
    steps = check_int(steps, "steps", low=1)
    if times.dim() != 1 or times.shape != losses.shape or times.shape[0] < 2:
        raise ShapeError(expected("times and losses as 1-D tensors of one length >= 2",
                                  f"{tuple(times.shape)} and {tuple(losses.shape)}", "pass loss_curve's output"))
    if not bool((times[1:] > times[:-1]).all()) or float(times[0]) != 0.0 or float(times[-1]) != 1.0:
        raise ConfigError(expected("strictly increasing times from 0 to 1", times.tolist()[:5],
                                   "measure the curve on torch.linspace(0, 1, n)"))
    if bool((losses < 0).any()) or float(losses.sum()) <= 0:
        raise ConfigError(expected("non-negative losses, not all zero", losses.tolist()[:5], "pass loss values"))
    areas = 0.5 * (losses[1:] + losses[:-1]) * (times[1:] - times[:-1])
    cdf = torch.cat([areas.new_zeros(1), areas.cumsum(0)]) / areas.sum()
    levels = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    j = torch.searchsorted(cdf, levels, right=True).clamp(1, len(cdf) - 1)
    lo, hi = cdf[j - 1], cdf[j]
    frac = torch.where(hi > lo, (levels - lo) / (hi - lo).clamp(min=1e-300), torch.zeros_like(levels))
    grid = times[j - 1] + frac.clamp(0, 1) * (times[j] - times[j - 1])
    grid[0], grid[-1] = 0.0, 1.0
    return grid.float()


def project_on_manifold(x: torch.Tensor, reference: torch.Tensor, step: float = 0.01) -> torch.Tensor:
    """PUFM++'s on-manifold constraint: each point of ``x`` ``(B, N, 3)`` moves ``step`` along −sign(x − p)/‖·‖,
    the normalised descent direction of its L1 distance to its nearest ``reference`` point p (no coordinate
    moves past p's).

    Example:
        >>> moved = project_on_manifold(torch.tensor([[[0.3, 0.0, 0.0]]]), torch.zeros(1, 1, 3), step=0.1)
        >>> [round(v, 4) for v in moved.squeeze().tolist()]
        [0.2, 0.0, 0.0]
    """
    _, idx = knn(x, reference, 1)
    offset = x - gather_points(reference, idx[..., 0])
    direction = offset.sign()
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1.0)
    move = torch.minimum(step * direction.abs(), offset.abs())
    return x - move * direction.sign()


def sample_pufm(model, x: torch.Tensor, *, sparse: torch.Tensor, steps: int | None = None,
                time_grid: torch.Tensor | None = None, project: float = 0.0, reference: torch.Tensor | None = None,
                self_condition: bool = True, generator: torch.Generator | None = None, callback=None,
                return_trajectory: bool = False, progress: bool = False) -> SampleResult:
    """Euler integration of v_θ(·, t | sparse) from the source ``x`` over ``steps`` or ``time_grid``, carrying
    the latents from step to step (self-conditioning) and projecting on the manifold after each step when
    ``project > 0`` (toward ``reference``, default the start ``x``: the interpolated input). ``generator`` is
    unused (deterministic).

    Example:
        >>> v = lambda x, t, sparse: torch.ones_like(x)
        >>> out = sample_pufm(v, torch.zeros(1, 4, 3), sparse=torch.zeros(1, 2, 3), steps=2)
        >>> out.x[0, 0].tolist(), out.nfe
        ([1.0, 1.0, 1.0], 2)
    """
    x, sparse = check_points(x, "x"), check_points(sparse, "sparse")
    project = check_nonnegative(project, "project")
    reference = x if reference is None else check_points(reference, "reference")
    grid = resolve_grid(steps, time_grid, x, missing_fix="pass e.g. steps=5")
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory, progress=progress,
                            desc="pufm")
    latents = None
    with torch.no_grad():
        for i in range(len(grid) - 1):
            t = grid[i].expand(x.shape[0])
            v, new = velocity_with_latents(model, x, t, sparse, latents)
            latents = new if self_condition else None
            x = x + (grid[i + 1] - grid[i]) * v
            if project > 0:
                x = project_on_manifold(x, reference, project)
            recorder.record(i, x)
    return SampleResult(x=x, nfe=len(grid) - 1, trajectory=recorder.trajectory(), times=grid)


def upsample_patches(model, sparse: torch.Tensor, ratio: int, *, source: str = "midpoints", noise: float = 0.0,
                     generator: torch.Generator | None = None, **sample_options: Any) -> torch.Tensor:
    """Upsample normalised patches ``(B, n, 3)`` by ``ratio`` (one pass): midpoints when ``model`` is None, else
    the flow from :func:`pufm_source` (``noise``: std added to the midpoints; 0, the official evaluation's
    choice, starts from the plain midpoints) through :func:`sample_pufm` (``sample_options``: steps,
    time_grid, ...).

    Example:
        >>> upsample_patches(None, torch.rand(3, 8, 3), 4).shape
        torch.Size([3, 32, 3])
    """
    if model is None:
        return midpoint_interpolate(sparse, ratio)
    x0 = pufm_source(sparse, ratio, source=source, noise=noise, generator=generator)
    return sample_pufm(model, x0, sparse=sparse, **sample_options).x


def _passes(model, ratio: int) -> tuple[int, int]:
    base = getattr(model, "ratio", ratio) if model is not None else ratio
    passes, total = 1, base
    while total < ratio:
        passes, total = passes + 1, total * base
    if total != ratio:
        raise ConfigError(expected(f"a ratio that is a power of the model's ratio {base}", ratio,
                                   f"use ratio={base} or {base * base}"))
    return base, passes


def _pass_sizes(count: int, base: int, passes: int, patch_size: int, overlap: float) -> list[tuple[int, int]]:
    """``(patch size, patches)`` of each pass over a cloud of ``count`` points."""
    sizes = []
    for _ in range(passes):
        size = min(patch_size, count)
        sizes.append((size, min(count, math.ceil(max(overlap, 1.0) * count / size))))
        count *= base
    return sizes


def _calls_per_pass(model, steps: int | None, options: dict[str, Any]) -> int:
    if model is None:
        return 1
    grid = options.get("time_grid")
    return len(grid) - 1 if grid is not None else steps


def _ticking(bar, options: dict[str, Any], patches: int) -> dict[str, Any]:
    """``options`` whose per-step callback also advances ``bar`` by ``patches`` (and calls the user's one)."""
    user = options.get("callback")

    def tick(step: dict[str, Any]) -> None:
        bar.update(patches)
        if user is not None:
            user(step)

    return {**options, "callback": tick}


def _upsample_pass(model, points: torch.Tensor, base: int, size: int, n_patches: int, *, patch_batch: int | None,
                   keep_input: bool, bar, generator: torch.Generator | None, options: dict[str, Any]) -> torch.Tensor:
    """One ``base``x pass: cut ``n_patches`` patches of ``size`` points, upsample them ``patch_batch`` at a time
    (all at once when None), map them back and merge by FPS."""
    patches, _ = extract_patches(points, n_patches, size)
    unit, centre, scale = normalize_unit_sphere(patches.reshape(-1, size, 3))
    chunk = len(unit) if patch_batch is None else patch_batch
    outputs = []
    for start in range(0, len(unit), chunk):
        part = unit[start:start + chunk]
        kwargs = options if bar is None or model is None else _ticking(bar, options, len(part))
        outputs.append(upsample_patches(model, part, base, generator=generator, **kwargs))
        if bar is not None and model is None:
            bar.update(len(part))
    union = denormalize(torch.cat(outputs), centre, scale).reshape(points.shape[0], -1, 3)
    if keep_input:
        union = torch.cat([union, points], dim=1)
    return merge_patches(union[:, None], base * points.shape[1])


def upsample(model, points: torch.Tensor, ratio: int = 4, *, steps: int | None = 1, patch_size: int = 64,
             overlap: float = 2.0, keep_input: bool = True, patch_batch: int | None = None, progress: bool = False,
             generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
    """Patch-wise upsampling of a cloud ``(N, 3)`` or ``(B, N, 3)`` to exactly ``ratio · N`` points.

    Each pass takes ⌈overlap · N / patch_size⌉ FPS seeds and their ``patch_size`` nearest points, normalises
    each patch to the unit sphere, upsamples it by the model's ratio (:func:`upsample_patches`), maps it back
    and merges the patches (and, with ``keep_input``, the pass's input points) by FPS; a ratio of the model's
    ratio squared (16 = 4 × 4) runs two passes.

    Args:
        model: a PUFM velocity model (with ``.ratio``), or None for midpoint interpolation.
        points: the sparse cloud.
        ratio: the upsampling factor: an integer >= 2, a power of ``model.ratio``.
        steps: Euler steps per pass (ignored when ``options`` has a ``time_grid``).
        patch_size, overlap: points per patch and how many times each point is covered on average.
        keep_input: let the input points compete in the FPS merge (the official evaluation does).
        patch_batch: patches per model call (None: all of a pass at once); bounds memory on large clouds.
            With a noisy source the noise is drawn chunk by chunk, so the draws differ from an unchunked run.
        progress: show a tqdm bar on stderr over the patches of every pass (advanced at every Euler step).
        options: ``source``, ``noise``, ``time_grid``, ``project``, ``self_condition``, ``callback`` (see
            :func:`upsample_patches`, :func:`sample_pufm`).

    Example:
        >>> upsample(None, torch.rand(100, 3), ratio=4, patch_size=32).shape
        torch.Size([400, 3])
    """
    if not isinstance(points, torch.Tensor) or points.dim() not in (2, 3):
        raise ShapeError(expected("points shaped (N, 3) or (B, N, 3)", getattr(points, "shape", type(points)),
                                  "pass one cloud or a batch of clouds"))
    single = points.dim() == 2
    points = check_points(points[None] if single else points)
    if points.shape[1] < 2:
        raise ShapeError(expected("a cloud of at least 2 points", points.shape[1], "pass a larger cloud"))
    base, passes = _passes(model, check_ratio(ratio))
    patch_size = check_int(patch_size, "patch_size", low=2)
    patch_batch = None if patch_batch is None else check_int(patch_batch, "patch_batch", low=1)
    if options.get("time_grid") is not None:
        steps = None
    options.pop("time_grid", None) if steps is not None else None
    options = {} if model is None else {"steps": steps, **options}
    plan = _pass_sizes(points.shape[1], base, passes, patch_size, overlap)
    total = sum(n for _, n in plan) * points.shape[0] * _calls_per_pass(model, steps, options)
    bar = progress_bar(total, progress, f"upsample {ratio}x")
    try:
        for size, n_patches in plan:
            points = _upsample_pass(model, points, base, size, n_patches, patch_batch=patch_batch,
                                    keep_input=keep_input, bar=bar, generator=generator, options=options)
    finally:
        if bar is not None:
            bar.close()
    return points[0] if single else points
