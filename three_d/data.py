"""Synthetic 3D data, offline and seeded: shape surfaces, upsampling pairs and scene-flow pairs.

Shapes are analytic surfaces in numpy (no mesh library needed), each scaled to fit the unit ball:
``sphere``, ``box``, ``torus``, ``cylinder`` and ``cone`` (both capped), ``mobius`` (a Möbius strip) and
``trefoil`` (a tube around a trefoil knot). :func:`sample_surface` draws points uniformly by area (closed forms
where they exist, rejection on the parametrisation's area element ``‖∂f/∂u × ∂f/∂v‖`` elsewhere);
``even=True`` keeps a farthest-point subset of an oversample, a Poisson-disk-like even spacing (PU-GAN, arXiv
1811.11286, uses Poisson-disk ground truth).

* :func:`random_deformation`: a smooth non-rigid warp x ↦ x + a Σ_k w_k sin(ω_k · x + φ_k), the same map for
  every sample of a shape so the dense target and the sparse input deform together.
* :func:`make_upsampling_example`: a dense even ground truth and a sparse, noisy, non-uniform input of one
  (deformed) shape: the setting of point-cloud upsampling (PUFM, arXiv 2501.15286).
* :func:`make_scene_flow_pair`: two frames of a scene of several objects, each with its own rigid motion, seen
  from a moving sensor (ego motion), re-sampled independently in each frame, with an occluded sector in frame 2,
  range cropping, noise and the ground-truth flow of frame 1's points (FlowNet3D, arXiv 1806.01411; SCOOP,
  arXiv 2211.14020), in metres, in each frame's sensor coordinates.
* :func:`sample_mesh` and :func:`load_shape_folder`: a user's own shapes, any folder of meshes (sampled uniformly
  by area) and point clouds, as clouds of one size in the unit ball.

No time convention applies. Every function is a deterministic function of the ``np.random.Generator`` passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive

from flowzoo.three_d.io import MESH_SUFFIXES, Mesh, is_mesh_file, read_mesh, read_point_cloud
from flowzoo.three_d.ops import farthest_point_sample

__all__ = ["SHAPES", "BOX_HALF", "TORUS_RADII", "CYLINDER", "CONE", "MOBIUS_SIZE", "TREFOIL_SCALE", "TREFOIL_TUBE",
           "trefoil_centre", "sample_surface", "random_deformation", "UpsamplingExample", "make_upsampling_example",
           "ScenePair", "make_scene_flow_pair", "CLOUD_SUFFIXES", "sample_mesh", "ShapeFolder", "load_shape_folder"]

CLOUD_SUFFIXES = (".ply", ".xyz", ".txt", ".pts", ".pcd")

SHAPES = ("sphere", "box", "torus", "cylinder", "cone", "mobius", "trefoil")
BOX_HALF = np.array([0.7, 0.5, 0.35])
TORUS_RADII = (0.7, 0.25)  # centre-line radius, tube radius
CYLINDER = (0.5, 0.7)  # radius, half-height
CONE = (0.6, 0.7)  # base radius, half-height (apex at +z)
MOBIUS_SIZE = (0.65, 0.3)  # centre-line radius, half-width
TREFOIL_SCALE, TREFOIL_TUBE = 0.28, 0.1


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(expected("rng as a numpy Generator", type(rng).__name__,
                                   "pass np.random.default_rng(seed)"))
    return rng


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _box(rng: np.random.Generator, n: int) -> np.ndarray:
    a = BOX_HALF
    areas = np.array([a[1] * a[2], a[0] * a[2], a[0] * a[1]]).repeat(2)  # faces ±x, ±y, ±z
    face = rng.choice(6, size=n, p=areas / areas.sum())
    pts = rng.uniform(-1.0, 1.0, size=(n, 3)) * a
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    pts[np.arange(n), axis] = sign * a[axis]
    return pts


def _disk(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    r, phi = radius * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)


def _cylinder(rng: np.random.Generator, n: int) -> np.ndarray:
    radius, half = CYLINDER
    lateral, caps_area = 2 * np.pi * radius * 2 * half, 2 * np.pi * radius ** 2
    side = rng.uniform(size=n) < lateral / (lateral + caps_area)
    phi, z = rng.uniform(0, 2 * np.pi, size=n), rng.uniform(-half, half, size=n)
    pts = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=1)
    caps = _disk(rng, n, radius)
    pts[~side, :2] = caps[~side]
    pts[~side, 2] = np.where(rng.uniform(size=n) < 0.5, half, -half)[~side]
    return pts


def _cone(rng: np.random.Generator, n: int) -> np.ndarray:
    radius, half = CONE
    slant = np.hypot(radius, 2 * half)
    side = rng.uniform(size=n) < (np.pi * radius * slant) / (np.pi * radius * slant + np.pi * radius ** 2)
    s = np.sqrt(rng.uniform(size=n))  # distance from the apex ∝ √u: area grows linearly with it
    phi = rng.uniform(0, 2 * np.pi, size=n)
    pts = np.stack([s * radius * np.cos(phi), s * radius * np.sin(phi), half - s * 2 * half], axis=1)
    base = _disk(rng, n, radius)
    pts[~side, :2], pts[~side, 2] = base[~side], -half
    return pts


def _torus_map(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    big, small = TORUS_RADII
    ring = big + small * np.cos(v)
    return np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], axis=-1)


def _mobius_map(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    radius, _ = MOBIUS_SIZE
    ring = radius + v * np.cos(u / 2)
    return np.stack([ring * np.cos(u), ring * np.sin(u), v * np.sin(u / 2)], axis=-1)


def trefoil_centre(t: np.ndarray) -> np.ndarray:
    """The trefoil knot's centre line, scaled by ``TREFOIL_SCALE``.

    Example:
        >>> trefoil_centre(np.array([0.0])).round(2).tolist()
        [[0.0, -0.28, -0.0]]
    """
    return TREFOIL_SCALE * np.stack([np.sin(t) + 2 * np.sin(2 * t), np.cos(t) - 2 * np.cos(2 * t), -np.sin(3 * t)],
                                    axis=-1)


def _trefoil_map(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    tangent = TREFOIL_SCALE * np.stack([np.cos(u) + 4 * np.cos(2 * u), -np.sin(u) + 4 * np.sin(2 * u),
                                        -3 * np.cos(3 * u)], axis=-1)
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
    # The tangent is never vertical (its xy part has squared length ≥ 9 · scale²), so projecting +z is a frame.
    normal = np.array([0.0, 0.0, 1.0]) - tangent[..., 2:3] * tangent
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    binormal = np.cross(tangent, normal)
    offset = TREFOIL_TUBE * (np.cos(v)[..., None] * normal + np.sin(v)[..., None] * binormal)
    return trefoil_centre(u) + offset


_PARAMETRIC = {"torus": (_torus_map, (0, 2 * np.pi), (0, 2 * np.pi)),
               "mobius": (_mobius_map, (0, 2 * np.pi), (-MOBIUS_SIZE[1], MOBIUS_SIZE[1])),
               "trefoil": (_trefoil_map, (0, 2 * np.pi), (0, 2 * np.pi))}


def _area_element(surface: Callable, u: np.ndarray, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
    du = (surface(u + h, v) - surface(u - h, v)) / (2 * h)
    dv = (surface(u, v + h) - surface(u, v - h)) / (2 * h)
    return np.linalg.norm(np.cross(du, dv), axis=-1)


def _parametric(rng: np.random.Generator, n: int, name: str) -> np.ndarray:
    """Area-uniform samples of a parametric surface by rejection on its area element."""
    surface, (u0, u1), (v0, v1) = _PARAMETRIC[name]
    grid_u, grid_v = np.meshgrid(np.linspace(u0, u1, 200), np.linspace(v0, v1, 200))
    bound = 1.05 * _area_element(surface, grid_u, grid_v).max()
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < n:
        u, v = rng.uniform(u0, u1, size=2 * n), rng.uniform(v0, v1, size=2 * n)
        accept = rng.uniform(0, bound, size=2 * n) < _area_element(surface, u, v)
        kept.append(surface(u[accept], v[accept]))
    return np.concatenate(kept)[:n]


def _draw(rng: np.random.Generator, shape: str, n: int) -> np.ndarray:
    closed = {"sphere": _sphere, "box": _box, "cylinder": _cylinder, "cone": _cone}
    return closed[shape](rng, n) if shape in closed else _parametric(rng, n, shape)


def sample_surface(shape: str, n: int, rng: np.random.Generator, *, even: bool = False,
                   oversample: int = 4) -> np.ndarray:
    """``n`` points ``(n, 3)`` float32 on the surface of ``shape`` (one of ``SHAPES``), uniform by area;
    ``even`` keeps the farthest-point subset of ``n · oversample`` samples (even spacing).

    Example:
        >>> pts = sample_surface("sphere", 100, np.random.default_rng(0))
        >>> pts.shape, bool(np.allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-6))
        ((100, 3), True)
    """
    if shape not in SHAPES:
        raise ConfigError(expected(f"shape in {SHAPES}", repr(shape), "pick one of the listed shapes"))
    n = check_int(n, "n", low=1)
    rng = _check_rng(rng)
    if not even:
        return _draw(rng, shape, n).astype(np.float32)
    oversample = check_int(oversample, "oversample", low=1)
    # The draws are i.i.d., so starting FPS at index 0 is already a random start.
    dense = torch.as_tensor(_draw(rng, shape, n * oversample), dtype=torch.float32)[None]
    return dense[0, farthest_point_sample(dense, n)[0]].numpy()


def random_deformation(rng: np.random.Generator, amplitude: float = 0.1, frequency: float = 2.0,
                       terms: int = 4) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth random warp ``x ↦ x + amplitude · Σ_k w_k sin(ω_k · x + φ_k) / √terms``
    (ω_k ~ N(0, frequency²), w_k ~ N(0, I)), returned as a function of ``(N, 3)`` arrays.

    Example:
        >>> warp = random_deformation(np.random.default_rng(0), amplitude=0.0)
        >>> warp(np.ones((2, 3))).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    rng = _check_rng(rng)
    amplitude, frequency = check_nonnegative(amplitude, "amplitude"), check_nonnegative(frequency, "frequency")
    terms = check_int(terms, "terms", low=1)
    omega = rng.normal(scale=frequency, size=(terms, 3))
    phase = rng.uniform(0, 2 * np.pi, size=terms)
    weights = rng.normal(size=(terms, 3)) / np.sqrt(terms)

    def warp(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        return (points + amplitude * np.sin(points @ omega.T + phase) @ weights).astype(points.dtype)

    return warp


@dataclass
class UpsamplingExample:
    """A dense even ground truth ``(n_dense, 3)``, a sparse noisy input ``(n_sparse, 3)`` and the shape name."""

    dense: np.ndarray
    sparse: np.ndarray
    shape: str


def make_upsampling_example(rng: np.random.Generator, shape: str | None = None, *, n_dense: int = 2048,
                            n_sparse: int = 512, noise: float = 0.005, nonuniformity: float = 1.0,
                            deformation: float = 0.1) -> UpsamplingExample:
    """One upsampling example: a (deformed) shape's even dense samples, and a sparse input drawn from an
    independent surface sample with probability ∝ exp(nonuniformity · x · d) for a random direction d (denser on
    one side, as a scan is), plus Gaussian noise of std ``noise``. ``shape`` None draws one of ``SHAPES``.

    Example:
        >>> ex = make_upsampling_example(np.random.default_rng(0), "torus", n_dense=256, n_sparse=64)
        >>> ex.dense.shape, ex.sparse.shape
        ((256, 3), (64, 3))
    """
    rng = _check_rng(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))] if shape is None else shape
    n_sparse = check_int(n_sparse, "n_sparse", low=1)
    noise, nonuniformity = check_nonnegative(noise, "noise"), check_nonnegative(nonuniformity, "nonuniformity")
    warp = random_deformation(rng, amplitude=check_nonnegative(deformation, "deformation"))
    dense = warp(sample_surface(shape, n_dense, rng, even=True))
    pool = sample_surface(shape, 4 * n_sparse, rng)
    direction = _sphere(rng, 1)[0]
    logits = nonuniformity * (pool @ direction)
    weights = np.exp(logits - logits.max())
    chosen = rng.choice(len(pool), size=n_sparse, replace=False, p=weights / weights.sum())
    sparse = warp(pool[chosen]) + rng.normal(scale=noise, size=(n_sparse, 3)).astype(np.float32)
    return UpsamplingExample(dense.astype(np.float32), sparse.astype(np.float32), shape)


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
    rng = _check_rng(rng)
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


def sample_mesh(mesh: Mesh, n: int, rng: np.random.Generator, *, even: bool = False,
                oversample: int = 4) -> np.ndarray:
    """``n`` points ``(n, 3)`` float32 uniform by area on a triangle mesh (a triangle drawn ∝ its area, then a
    uniform point by the square-root barycentric map, Osada et al. 2002, §4.2); ``even`` keeps the farthest-point
    subset of ``n · oversample`` samples, as :func:`sample_surface` does.

    Example:
        >>> square = Mesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
        >>> pts = sample_mesh(square, 50, np.random.default_rng(0))
        >>> pts.shape, bool((pts[:, 2] == 0).all() and (pts >= 0).all() and (pts <= 1).all())
        ((50, 3), True)
    """
    if not isinstance(mesh, Mesh):
        raise ConfigError(expected("a flowzoo.three_d.io.Mesh", type(mesh).__name__, "read it with read_mesh"))
    n, rng = check_int(n, "n", low=1), _check_rng(rng)
    total = n * check_int(oversample, "oversample", low=1) if even else n
    a, b, c = (mesh.vertices[mesh.faces[:, i]].astype(np.float64) for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise ConfigError(expected("a mesh with a positive surface area", "only degenerate triangles",
                                   "repair the mesh"))
    pick = rng.choice(len(area), size=total, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(total))[:, None], rng.random(total)[:, None]
    points = ((1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick]).astype(np.float32)
    if not even:
        return points
    cloud = torch.from_numpy(points)[None]  # i.i.d. draws: FPS from index 0 is already a random start
    return cloud[0, farthest_point_sample(cloud, n)[0]].numpy()


@dataclass
class ShapeFolder:
    """Clouds ``(S, n, 3)`` read from a folder, their file ``names`` and the ``skipped`` files with the reason."""

    clouds: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]


def _unit_ball(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / max(float(np.linalg.norm(centred, axis=1).max()), 1e-12)


def load_shape_folder(folder: str | Path, n_points: int, rng: np.random.Generator, *, even: bool = True,
                      normalize: bool = True) -> ShapeFolder:
    """Every mesh (``.obj``, ``.off``, ``.stl``, a ``.ply`` with faces: sampled by :func:`sample_mesh`) and every
    point cloud (``.ply``, ``.xyz``, ``.txt``, ``.pts``, ``.pcd``: ``n_points`` of its points, by FPS when
    ``even``, else at random) under ``folder``, in sorted path order, each scaled into the unit ball when
    ``normalize``. Files of other types and clouds with fewer than ``n_points`` points are skipped, each with its
    reason in ``skipped``; a file of a supported type that does not read raises the error naming it.

    Example:
        >>> import tempfile
        >>> from flowzoo.three_d.io import write_point_cloud
        >>> folder = tempfile.mkdtemp(); write_point_cloud(f"{folder}/a.ply", np.random.rand(64, 3))
        >>> data = load_shape_folder(folder, 32, np.random.default_rng(0))
        >>> data.clouds.shape, data.names
        ((1, 32, 3), ['a.ply'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(expected("a folder of meshes or point clouds", str(folder), "check the path"))
    n_points, rng = check_int(n_points, "n_points", low=1), _check_rng(rng)
    clouds, names, skipped = [], [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if path.suffix.lower() not in CLOUD_SUFFIXES + MESH_SUFFIXES:
            skipped.append((name, f"not a mesh or point-cloud file ({path.suffix or 'no suffix'})"))
            continue
        if is_mesh_file(path):
            points = sample_mesh(read_mesh(path), n_points, rng, even=even)
        else:
            points = read_point_cloud(path).points
            if len(points) < n_points:
                skipped.append((name, f"{len(points)} points, fewer than the {n_points} asked for"))
                continue
            if even:
                cloud = torch.from_numpy(points)[None]
                start = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
                points = cloud[0, farthest_point_sample(cloud, n_points, random_start=True, generator=start)[0]].numpy()
            else:
                points = points[rng.choice(len(points), size=n_points, replace=False)]
        clouds.append(_unit_ball(points) if normalize else points)
        names.append(name)
    if not clouds:
        raise EmptyInputError(expected(f"at least one usable mesh or point cloud under {folder}",
                                       f"none ({len(skipped)} file(s) skipped: {skipped[:3]})",
                                       f"add .ply / .obj / .off / .xyz files of at least {n_points} points"))
    return ShapeFolder(np.stack(clouds).astype(np.float32), names, skipped)
