"""A user's own shapes for flowzoo.three_d: meshes sampled uniformly by area, and whole folders of meshes and point
clouds read as clouds of one size in the unit ball (what ``python -m flowzoo.three_d.train pufm --data DIR`` trains
on).

* :func:`sample_mesh`: points uniformly distributed over a triangle mesh's area (optionally evened out by farthest
  point sampling of an oversample), the way a scan's dense ground truth is drawn;
* :func:`load_shape_folder`: every mesh (:data:`flowzoo.three_d.io.MESH_SUFFIXES`) and point cloud
  (:data:`CLOUD_SUFFIXES`) under a folder, each cut to ``n_points`` and scaled into the unit ball; files that cannot
  be used are skipped with their reason, never silently.

No time convention applies. Every function is a deterministic function of the ``np.random.Generator`` passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, expected
from flowzoo.core.validation import check_int
from flowzoo.three_d.data import check_rng
from flowzoo.three_d.io import MESH_SUFFIXES, Mesh, is_mesh_file, read_mesh, read_point_cloud
from flowzoo.three_d.ops import farthest_point_sample

__all__ = ["CLOUD_SUFFIXES", "sample_mesh", "ShapeFolder", "load_shape_folder"]

CLOUD_SUFFIXES = (".ply", ".xyz", ".txt", ".pts", ".pcd")


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
    n, rng = check_int(n, "n", low=1), check_rng(rng)
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
    n_points, rng = check_int(n_points, "n_points", low=1), check_rng(rng)
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
