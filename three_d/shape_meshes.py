"""Triangle meshes of the generated shapes of :mod:`flowzoo.three_d.data`: the true surface for mesh-based P2F.

Each analytic shape is triangulated on a grid of its own parameters and the same deformation that moved its points
moves the mesh's vertices, so the point-to-surface distance (P2F) of an upsampled cloud can be measured against the
surface itself (PU-GAN, arXiv 1811.11286, and PUFM, arXiv 2501.15286, report P2F against the test mesh):

* ``sphere``: a latitude–longitude grid (θ, φ) ↦ (sin θ cos φ, sin θ sin φ, cos θ) with the poles welded;
* ``box``: a square grid on each of the six faces;
* ``cylinder`` / ``cone``: a (φ, z) grid of the lateral surface (the cone's rows shrink to its apex) plus polar
  grids (r, φ) of the caps;
* ``torus``, ``mobius``, ``trefoil``: the (u, v) grid of their maps in ``PARAMETRIC_SURFACES``.

Every quad of a grid is split into two triangles; vertices at the same position (grid seams, the Möbius strip's
twisted seam, poles, apexes, cap rims) are welded and triangles left without area are dropped. A chord of a curve
of curvature κ and length h stays within κh²/8 of it, so the default grids (20k–70k triangles) lie within about
1e-4 of the analytic surfaces. A deformation x ↦ x + δ(x) applied to the vertices moves the mesh with the
surface; between vertices the mesh is the chord of the deformed surface (the same κh²/8 bound).
No time convention applies. The meshes are deterministic: no random draws, so building them changes no example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int
from flowzoo.three_d.data import (BOX_HALF, COMPOSITION, CONE, CYLINDER, PARAMETRIC_SURFACES, SHAPES, Composition,
                                  UpsamplingExample)

__all__ = ["shape_mesh", "deformed_mesh", "composition_mesh", "example_mesh"]


def _grid_faces(rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """Two triangles per cell of a (rows × cols) vertex grid stored row-major."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (i * cols + j).ravel() + offset
    b, c, d = a + 1, a + cols, a + cols + 1
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def _grid(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (rows, cols, 3) grid of points as vertices and faces."""
    rows, cols = points.shape[:2]
    return points.reshape(-1, 3), _grid_faces(rows, cols)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces)


def _weld(vertices: np.ndarray, faces: np.ndarray, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Merge coincident vertices (rounded to ``tol``) and drop triangles that lost a corner to the merge."""
    _, first, inverse = np.unique(np.round(vertices / tol).astype(np.int64), axis=0, return_index=True,
                                  return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return vertices[first], faces[keep]


def _disk(radius: float, z: float, rings: int, sectors: int) -> tuple[np.ndarray, np.ndarray]:
    r, phi = np.meshgrid(np.linspace(0.0, radius, rings + 1), np.linspace(0.0, 2 * np.pi, sectors + 1), indexing="ij")
    return _grid(np.stack([r * np.cos(phi), r * np.sin(phi), np.full_like(r, z)], axis=-1))


def _sphere(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    theta, phi = np.meshgrid(np.linspace(0.0, np.pi, n + 1), np.linspace(0.0, 2 * np.pi, 2 * n + 1), indexing="ij")
    return [_grid(np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1))]


def _box(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    parts = []
    s, t = np.meshgrid(np.linspace(-1.0, 1.0, n // 2 + 1), np.linspace(-1.0, 1.0, n // 2 + 1), indexing="ij")
    for axis in range(3):
        others = [k for k in range(3) if k != axis]
        for sign in (1.0, -1.0):
            grid = np.empty(s.shape + (3,))
            grid[..., axis] = sign
            grid[..., others[0]], grid[..., others[1]] = s, t
            parts.append(_grid(grid * BOX_HALF))
    return parts


def _cylinder(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    radius, half = CYLINDER
    z, phi = np.meshgrid(np.linspace(-half, half, n // 2 + 1), np.linspace(0.0, 2 * np.pi, 2 * n + 1), indexing="ij")
    side = _grid(np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=-1))
    return [side, _disk(radius, half, n // 4, 2 * n), _disk(radius, -half, n // 4, 2 * n)]


def _cone(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    radius, half = CONE
    s, phi = np.meshgrid(np.linspace(0.0, 1.0, n // 2 + 1), np.linspace(0.0, 2 * np.pi, 2 * n + 1), indexing="ij")
    side = _grid(np.stack([s * radius * np.cos(phi), s * radius * np.sin(phi), half - 2 * half * s], axis=-1))
    return [side, _disk(radius, -half, n // 4, 2 * n)]


def _parametric(name: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    surface, (u0, u1), (v0, v1) = PARAMETRIC_SURFACES[name]
    # The trefoil's tube is long and thin, the Möbius strip short across: cells of comparable size on each.
    u_cells, v_cells = {"torus": (2 * n, n), "mobius": (2 * n, n // 2), "trefoil": (4 * n, n // 2)}[name]
    u, v = np.meshgrid(np.linspace(u0, u1, u_cells + 1), np.linspace(v0, v1, v_cells + 1), indexing="ij")
    return [_grid(surface(u, v))]


def shape_mesh(shape: str, resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The undeformed surface of ``shape`` (one of ``SHAPES``) as vertices ``(V, 3)`` float64 and faces ``(F, 3)``
    int64; ``resolution`` (≥ 8) sets the grid: 2 · resolution cells around each closed circle (4× along the trefoil).

    Example:
        >>> vertices, faces = shape_mesh("sphere", 16)
        >>> bool(np.allclose(np.linalg.norm(vertices, axis=1), 1.0)), faces.shape[1]
        (True, 3)
    """
    if shape not in SHAPES:
        raise ConfigError(expected(f"shape in {SHAPES}", repr(shape), "pick one of the listed shapes"))
    resolution = check_int(resolution, "resolution", low=8)
    builders = {"sphere": _sphere, "box": _box, "cylinder": _cylinder, "cone": _cone}
    parts = builders[shape](resolution) if shape in builders else _parametric(shape, resolution)
    return _weld(*_merge(parts))


def deformed_mesh(shape: str, warp: Callable[[np.ndarray], np.ndarray] | None = None,
                  resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shape_mesh` with ``warp`` (e.g. a :func:`~flowzoo.three_d.data.random_deformation`, the one that
    moved the shape's points) applied to its vertices; None leaves it undeformed.

    Example:
        >>> vertices, faces = deformed_mesh("box", lambda x: 2 * x, resolution=8)
        >>> float(vertices.max()), faces.shape
        (1.4, (192, 3))
    """
    vertices, faces = shape_mesh(shape, resolution)
    if warp is None:
        return vertices, faces
    if not callable(warp):
        raise ConfigError(expected("warp as a function of (N, 3) arrays", type(warp).__name__,
                                   "pass the deformation applied to the points, or None"))
    return np.asarray(warp(vertices), dtype=np.float64), faces


def composition_mesh(composition: Composition, resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The surface of a :class:`~flowzoo.three_d.data.Composition`: each part's mesh placed (deformed, scaled,
    rotated, offset) as its points are, concatenated (the parts overlap; they are not merged into one solid).

    Example:
        >>> from flowzoo.three_d.data import random_composition
        >>> vertices, faces = composition_mesh(random_composition(np.random.default_rng(0), 2), resolution=8)
        >>> vertices.shape[1], int(faces.max()) < len(vertices)
        (3, True)
    """
    if not isinstance(composition, Composition):
        raise ConfigError(expected("a Composition", type(composition).__name__, "pass random_composition(rng)"))
    parts = []
    for k, shape in enumerate(composition.shapes):
        vertices, faces = shape_mesh(shape, resolution)
        parts.append((np.asarray(composition.place(k, vertices), dtype=np.float64), faces))
    return _merge(parts)


def example_mesh(example: UpsamplingExample, resolution: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The true (deformed) surface of one :func:`~flowzoo.three_d.data.make_upsampling_example`: what its dense
    and sparse points were drawn from (before the input's noise).

    Example:
        >>> from flowzoo.three_d.data import make_upsampling_example
        >>> ex = make_upsampling_example(np.random.default_rng(0), "torus", n_dense=64, n_sparse=16)
        >>> example_mesh(ex, resolution=16)[1].shape
        (1024, 3)
    """
    if not isinstance(example, UpsamplingExample):
        raise ConfigError(expected("an UpsamplingExample", type(example).__name__,
                                   "pass make_upsampling_example(rng, ...)"))
    if example.shape == COMPOSITION:
        if example.composition is None:
            raise ConfigError(expected("the example's composition", "None", "build it with make_upsampling_example"))
        return composition_mesh(example.composition, max(8, resolution // 2))
    return deformed_mesh(example.shape, example.warp, resolution)
