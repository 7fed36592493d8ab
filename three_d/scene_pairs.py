"""Synthetic scene-flow pairs for flowzoo.three_d, offline and seeded.

:func:`make_scene_flow_pair` draws two frames of a scene of several objects, each with its own rigid motion, seen
from a moving sensor (ego motion), re-sampled independently in each frame, with an occluded sector in frame 2,
range cropping, noise and the ground-truth flow of frame 1's points (FlowNet3D, arXiv 1806.01411; SCOOP,
arXiv 2211.14020), in metres, in each frame's sensor coordinates.

No time convention applies. Every pair is a deterministic function of the ``np.random.Generator`` passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowzoo.core.validation import check_int, check_nonnegative, check_positive
from flowzoo.three_d.data import SHAPES, check_rng, sample_surface

__all__ = ["ScenePair", "make_scene_flow_pair"]


@dataclass
class ScenePair:
    """Two frames ``pc1`` ``(N, 3)``, ``pc2`` ``(M, 3)`` in their own sensor coordinates (metres), the flow of
    ``pc1``'s points ``(N, 3)``, ``valid`` ``(N,)`` (False where the point moves into the occluded sector of
    frame 2) and each point's object index ``(N,)``."""

    pc1: np.ndarray
    pc2: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    object_ids: np.ndarray


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _sector_mask(points: np.ndarray, centre: float, width: float) -> np.ndarray:
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    return np.abs(np.angle(np.exp(1j * (azimuth - centre)))) < width / 2


def make_scene_flow_pair(rng: np.random.Generator, *, n_points: int = 2048, n_objects: int = 4,
                         extent: float = 8.0, max_translation: float = 0.8, max_rotation: float = 0.15,
                         ego_translation: float = 1.0, occlusion: float = 0.3, noise: float = 0.01) -> ScenePair:
    """A scene-flow pair: ``n_objects`` shapes (scaled 0.8–2 m, on the ground) at random places within
    ``extent`` metres, each moved by its own yaw (≤ ``max_rotation`` rad) and translation (≤ ``max_translation``
    m), while the sensor moves forward up to ``ego_translation`` m and yaws slightly; frame 2 is re-sampled,
    loses an azimuth sector ``occlusion`` rad wide, and both frames get Gaussian noise ``noise`` (m).

    Example:
        >>> pair = make_scene_flow_pair(np.random.default_rng(0), n_points=256)
        >>> pair.pc1.shape, pair.pc2.shape, pair.flow.shape, pair.valid.dtype
        ((256, 3), (256, 3), (256, 3), dtype('bool'))
    """
    rng = check_rng(rng)
    n_points = check_int(n_points, "n_points", low=1)
    n_objects = check_int(n_objects, "n_objects", low=1)
    extent = check_positive(extent, "extent")
    occlusion = check_nonnegative(occlusion, "occlusion")
    noise = check_nonnegative(noise, "noise")
    shapes = rng.choice(SHAPES, size=n_objects)
    scales = rng.uniform(0.8, 2.0, size=n_objects)
    centres = np.column_stack([rng.uniform(-extent, extent, size=(n_objects, 2)), scales])
    rotations = [_yaw(a) for a in rng.uniform(-max_rotation, max_rotation, size=n_objects)]
    moves = np.column_stack([rng.uniform(-max_translation, max_translation, size=(n_objects, 2)),
                             np.zeros(n_objects)])
    ego_rotation = _yaw(rng.uniform(-0.05, 0.05))
    ego_move = np.array([rng.uniform(0, ego_translation), rng.uniform(-0.1, 0.1), 0.0])
    share = scales ** 2 / (scales ** 2).sum()  # points ∝ surface area

    def frame(moved: bool, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = rng.choice(n_objects, size=count, p=share)
        local = np.zeros((count, 3))
        for k in range(n_objects):
            if (ids == k).any():
                local[ids == k] = sample_surface(str(shapes[k]), int((ids == k).sum()), rng)
        scaled = local * scales[ids, None]
        rest = scaled + centres[ids]
        after = np.einsum("nij,nj->ni", np.stack(rotations)[ids], scaled) + centres[ids] + moves[ids]
        in_frame2 = (after - ego_move) @ ego_rotation  # world → sensor-2 coordinates: R_egoᵀ (q − t_ego)
        return (in_frame2 if moved else rest), in_frame2 - rest, ids

    pc1, flow, ids = frame(False, n_points)
    occluded_at = rng.uniform(-np.pi, np.pi)
    pool2, _, _ = frame(True, 2 * n_points)
    visible2 = pool2[~_sector_mask(pool2, occluded_at, occlusion)]
    pc2 = visible2[rng.choice(len(visible2), size=n_points, replace=len(visible2) < n_points)]
    valid = ~_sector_mask(pc1 + flow, occluded_at, occlusion)
    pc1 = pc1 + rng.normal(scale=noise, size=pc1.shape)
    pc2 = pc2 + rng.normal(scale=noise, size=pc2.shape)
    return ScenePair(pc1.astype(np.float32), pc2.astype(np.float32), flow.astype(np.float32), valid, ids)
