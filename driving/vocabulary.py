"""GoalFlow's goal-point vocabulary, its goal-scorer targets and its trajectory normalisation.

GoalFlow (Xing et al., CVPR 2025, arXiv 2503.05689, §3.2-3.3):

* **Vocabulary**: k-means over the training trajectories' end poses ``(x, y, θ)`` (N = 4096 or 8192 on NAVSIM;
  a few hundred suit the synthetic scenes).
* **Distance-score target** (Eq. 3): ``δ_dis_i = softmax_i(−‖g_i − g_gt‖₂)`` over the vocabulary, with the
  distance taken on (x, y), trained with cross-entropy.
* **DAC target** (Eq. 4): 1 where a shadow vehicle with the ego footprint placed at ``g_i`` has all four corners
  inside the drivable area (:func:`flowzoo.driving.metrics.shadow_dac`), trained with BCE.
* **Normalisation** H of the reference code: ``(x/60, y/15, atanh(θ/π))`` per pose, then the (x, y) part copied
  under 10 fixed rotations by ``2πk/10`` with the heading channel repeated, giving ``(T, 30)``; the flow runs in
  that space. The reference inverse keeps only the unrotated copy; :func:`denormalize_trajectory` averages the
  10 de-rotated copies instead, which equals it on exact inputs and is the least-squares estimate for a model's
  output. Headings at ±π are clipped to ±π(1 − 1e-6) before atanh (the only loss of the round trip).

Flow-matching time is not involved here; the trajectory's time axis is planning time.

Example:
    >>> import torch
    >>> traj = torch.tensor([[[5.0, 0.2, 0.01], [10.0, 0.8, 0.05]]])
    >>> z = normalize_trajectory(traj)
    >>> z.shape, torch.allclose(denormalize_trajectory(z), traj, atol=1e-5)
    (torch.Size([1, 2, 30]), True)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive_int, check_tensor
from flowzoo.driving.metrics import shadow_dac

__all__ = ["SCALE", "ROTATIONS", "build_vocabulary", "distance_targets", "dac_targets", "normalize_trajectory",
           "denormalize_trajectory"]

SCALE = (60.0, 15.0)  # x and y divisors of GoalFlow's normalisation
ROTATIONS = 10
_HEADING_CLIP = 1 - 1e-6


def _poses(x: torch.Tensor, name: str) -> torch.Tensor:
    x = check_tensor(x, name, min_dim=1)
    if x.shape[-1] != 3:
        raise ShapeError(expected(f"{name} with poses (x, y, heading) on the last axis", f"shape {tuple(x.shape)}",
                                  "pass (..., 3) arrays"))
    return x


def build_vocabulary(endpoints: torch.Tensor | np.ndarray, size: int, *, seed: int = 0, iterations: int = 50,
                     ) -> torch.Tensor:
    """k-means (k-means++ seeding, Lloyd iterations) of end poses ``(N, 3)`` into ``size`` goal points.

    Deterministic for a given ``seed``. Raises EmptyInputError for no endpoints, ConfigError when ``size``
    exceeds the number of distinct endpoints.

    Example:
        >>> ends = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [10, 0, 0], [10.1, 0, 0]])
        >>> build_vocabulary(ends, 2).sort(dim=0).values[:, 0].tolist()
        [0.05000000074505806, 10.050000190734863]
    """
    endpoints = torch.as_tensor(endpoints, dtype=torch.float32)
    if endpoints.numel() == 0:
        raise EmptyInputError(expected("at least one training endpoint for the vocabulary", "none",
                                       "build the vocabulary from a non-empty scene set"))
    endpoints = _poses(endpoints, "endpoints").reshape(-1, 3)
    size = check_positive_int(size, "vocabulary size")
    iterations = check_int(iterations, "iterations", low=1)
    distinct = len(torch.unique(endpoints, dim=0))
    if size > distinct:
        raise ConfigError(expected(f"a vocabulary size of at most {distinct} (the distinct endpoints)", size,
                                   "use a smaller size or more scenes"))
    gen = torch.Generator().manual_seed(int(seed))
    centres = endpoints[torch.randint(len(endpoints), (1,), generator=gen)]
    for _ in range(size - 1):  # k-means++: next centre with probability proportional to the squared distance
        d2 = torch.cdist(endpoints, centres).min(1).values ** 2
        centres = torch.cat([centres, endpoints[torch.multinomial(d2 / d2.sum(), 1, generator=gen)]])
    for _ in range(iterations):
        assign = torch.cdist(endpoints, centres).argmin(1)
        counts = torch.bincount(assign, minlength=size).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, endpoints)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.allclose(updated, centres):
            break
        centres = updated
    return centres


def distance_targets(vocabulary: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
    """``(B, V)`` targets ``softmax_i(−‖g_i − g_gt‖₂)`` on (x, y) for true goals ``(B, 3)`` (GoalFlow Eq. 3).

    Example:
        >>> vocab = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
        >>> distance_targets(vocab, torch.tensor([[0.0, 0, 0]])).tolist()
        [[0.7310585975646973, 0.2689414322376251]]
    """
    vocabulary, goals = _poses(vocabulary, "vocabulary"), _poses(goals, "goals")
    return torch.softmax(-torch.cdist(goals[:, :2], vocabulary[:, :2]), dim=-1)


def dac_targets(vocabulary: torch.Tensor, drivable_areas: list) -> torch.Tensor:
    """``(B, V)`` shadow-vehicle DAC targets of every goal point in each scene's drivable polygon (Eq. 4)."""
    vocabulary = _poses(vocabulary, "vocabulary").detach().cpu().numpy()
    rows = [shadow_dac(vocabulary, polygon) for polygon in drivable_areas]
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


def _rotations(like: torch.Tensor) -> torch.Tensor:
    angles = 2 * math.pi * torch.arange(ROTATIONS, dtype=like.dtype, device=like.device) / ROTATIONS
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (R, 2, 2)


def normalize_trajectory(trajectory: torch.Tensor) -> torch.Tensor:
    """GoalFlow's H: poses ``(..., T, 3)`` -> ``(..., T, 3·ROTATIONS)``, rotation k in channels 3k..3k+2."""
    trajectory = _poses(trajectory, "trajectory")
    xy = trajectory[..., :2] / trajectory.new_tensor(SCALE)
    heading = torch.atanh((trajectory[..., 2:] / math.pi).clamp(-_HEADING_CLIP, _HEADING_CLIP))
    rotated = torch.einsum("rij,...j->...ri", _rotations(trajectory), xy)  # (..., T, R, 2)
    heading = heading.unsqueeze(-2).expand(*rotated.shape[:-1], 1)
    return torch.cat([rotated, heading], -1).flatten(-2)


def denormalize_trajectory(normalized: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_trajectory`: the mean of the de-rotated copies, rescaled; ``tanh(·)·π`` for
    the heading."""
    normalized = check_tensor(normalized, "normalized", min_dim=1)
    if normalized.shape[-1] != 3 * ROTATIONS:
        raise ShapeError(expected(f"normalized trajectories with {3 * ROTATIONS} channels", tuple(normalized.shape),
                                  "pass the output of normalize_trajectory (or a model trained on it)"))
    parts = normalized.unflatten(-1, (ROTATIONS, 3))
    xy = torch.einsum("rji,...rj->...ri", _rotations(normalized), parts[..., :2]).mean(-2)
    heading = torch.tanh(parts[..., 2].mean(-1, keepdim=True)) * math.pi
    return torch.cat([xy * normalized.new_tensor(SCALE), heading], -1)
