"""Synthetic 3D data, offline and seeded: shape surfaces and upsampling pairs (scene-flow pairs:
:mod:`flowzoo.three_d.scene_pairs`; a user's own shapes: :mod:`flowzoo.three_d.shape_folders`).

Shapes are analytic surfaces in numpy (no mesh library needed), each scaled to fit the unit ball:
``sphere``, ``box``, ``torus``, ``cylinder`` and ``cone`` (both capped), ``mobius`` (a Möbius strip) and
``trefoil`` (a tube around a trefoil knot). :func:`sample_surface` draws points uniformly by area (closed forms
where they exist, rejection on the parametrisation's area element ``‖∂f/∂u × ∂f/∂v‖`` elsewhere);
``even=True`` keeps a farthest-point subset of an oversample, a Poisson-disk-like even spacing (PU-GAN, arXiv
1811.11286, uses Poisson-disk ground truth).

* :func:`random_composition` / :func:`sample_composition`: a union of 2–3 scaled, rotated, offset, each
  separately deformed primitives (``"composition"``, accepted wherever a shape name is, but not in ``SHAPES``),
  sampled by area across its parts.
* :func:`random_deformation`: a smooth non-rigid warp x ↦ x + a Σ_k w_k sin(ω_k · x + φ_k), the same map for
  every sample of a shape so the dense target and the sparse input deform together.
* :func:`make_upsampling_example`: a dense even ground truth and a sparse, noisy, non-uniform input of one
  (deformed) shape: the setting of point-cloud upsampling (PUFM, arXiv 2501.15286).

No time convention applies. Every function is a deterministic function of the ``np.random.Generator`` passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_nonnegative
from flowzoo.three_d.ops import farthest_point_sample

__all__ = ["SHAPES", "COMPOSITION", "BOX_HALF", "TORUS_RADII", "CYLINDER", "CONE", "MOBIUS_SIZE", "TREFOIL_SCALE",
           "TREFOIL_TUBE", "PARAMETRIC_SURFACES", "trefoil_centre", "check_rng", "check_shape_names", "sample_surface",
           "surface_area", "random_deformation", "Composition", "random_composition", "sample_composition",
           "UpsamplingExample", "make_upsampling_example"]


SHAPES = ("sphere", "box", "torus", "cylinder", "cone", "mobius", "trefoil")
COMPOSITION = "composition"  # a random union of primitives; not in SHAPES, so default data stays as it was
BOX_HALF = np.array([0.7, 0.5, 0.35])
TORUS_RADII = (0.7, 0.25)  # centre-line radius, tube radius
CYLINDER = (0.5, 0.7)  # radius, half-height
CONE = (0.6, 0.7)  # base radius, half-height (apex at +z)
MOBIUS_SIZE = (0.65, 0.3)  # centre-line radius, half-width
TREFOIL_SCALE, TREFOIL_TUBE = 0.28, 0.1


def check_rng(rng: object) -> np.random.Generator:
    """``rng`` itself when it is a numpy Generator; a ConfigError saying how to make one otherwise."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(expected("rng as a numpy Generator", type(rng).__name__,
                                   "pass np.random.default_rng(seed)"))
    return rng


def check_shape_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a non-empty tuple of shape names (``SHAPES`` or ``COMPOSITION``), or ConfigError.

    Example:
        >>> check_shape_names(["sphere", "composition"])
        ('sphere', 'composition')
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    bad = [name for name in names if name not in SHAPES + (COMPOSITION,)]
    if not names or bad:
        raise ConfigError(expected(f"shape names from {SHAPES + (COMPOSITION,)}", repr(bad or names),
                                   "pick from the listed shapes"))
    return names


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


# name -> (map (u, v) -> points, u range, v range); the torus, Möbius and trefoil are periodic in u (and v).
PARAMETRIC_SURFACES = {"torus": (_torus_map, (0, 2 * np.pi), (0, 2 * np.pi)),
                       "mobius": (_mobius_map, (0, 2 * np.pi), (-MOBIUS_SIZE[1], MOBIUS_SIZE[1])),
                       "trefoil": (_trefoil_map, (0, 2 * np.pi), (0, 2 * np.pi))}


def _area_element(surface: Callable, u: np.ndarray, v: np.ndarray, h: float = 1e-5) -> np.ndarray:
    du = (surface(u + h, v) - surface(u - h, v)) / (2 * h)
    dv = (surface(u, v + h) - surface(u, v - h)) / (2 * h)
    return np.linalg.norm(np.cross(du, dv), axis=-1)


def _parametric(rng: np.random.Generator, n: int, name: str) -> np.ndarray:
    """Area-uniform samples of a parametric surface by rejection on its area element."""
    surface, (u0, u1), (v0, v1) = PARAMETRIC_SURFACES[name]
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
    rng = check_rng(rng)
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
    rng = check_rng(rng)
    amplitude, frequency = check_nonnegative(amplitude, "amplitude"), check_nonnegative(frequency, "frequency")
    terms = check_int(terms, "terms", low=1)
    omega = rng.normal(scale=frequency, size=(terms, 3))
    phase = rng.uniform(0, 2 * np.pi, size=terms)
    weights = rng.normal(size=(terms, 3)) / np.sqrt(terms)

    def warp(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        return (points + amplitude * np.sin(points @ omega.T + phase) @ weights).astype(points.dtype)

    return warp


def surface_area(shape: str) -> float:
    """The surface area of primitive ``shape`` (one of ``SHAPES``, before deformation): closed forms, or the
    integral of the area element on a 400 × 400 midpoint grid for the parametric ones.

    Example:
        >>> round(surface_area("sphere") / np.pi, 6)
        4.0
    """
    if shape not in SHAPES:
        raise ConfigError(expected(f"shape in {SHAPES}", repr(shape), "pick one of the listed shapes"))
    (a, b, c), (rc, hc), (rk, hk) = BOX_HALF, CYLINDER, CONE
    closed = {"sphere": 4 * np.pi, "box": 8 * (a * b + a * c + b * c), "cylinder": 2 * np.pi * rc * (2 * hc + rc),
              "cone": np.pi * rk * (np.hypot(rk, 2 * hk) + rk)}
    if shape in closed:
        return float(closed[shape])
    surface, (u0, u1), (v0, v1) = PARAMETRIC_SURFACES[shape]
    cells = 400
    u = u0 + (np.arange(cells) + 0.5) * (u1 - u0) / cells
    v = v0 + (np.arange(cells) + 0.5) * (v1 - v0) / cells
    grid_u, grid_v = np.meshgrid(u, v)
    return float(_area_element(surface, grid_u, grid_v).mean() * (u1 - u0) * (v1 - v0))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@dataclass
class Composition:
    """A union of primitives: part k is ``warps[k](shapes[k] points) · scales[k] @ rotations[k]ᵀ + offsets[k]``.
    :meth:`sample` draws from it; every sample of one composition lies on the same surfaces."""

    shapes: list[str]
    scales: np.ndarray
    rotations: np.ndarray
    offsets: np.ndarray
    warps: list[Callable[[np.ndarray], np.ndarray]]

    def place(self, part: int, points: np.ndarray) -> np.ndarray:
        """Points of primitive ``shapes[part]`` (in its own frame) moved onto part ``part`` of the union."""
        return (self.warps[part](points) * self.scales[part]) @ self.rotations[part].T + self.offsets[part]

    def sample(self, n: int, rng: np.random.Generator, *, even: bool = False, oversample: int = 4) -> np.ndarray:
        """``n`` points ``(n, 3)`` float32, each part's share ∝ its (undeformed) area; ``even`` as in
        :func:`sample_surface`."""
        n, rng = check_int(n, "n", low=1), check_rng(rng)
        total = n * check_int(oversample, "oversample", low=1) if even else n
        areas = np.array([surface_area(s) * k ** 2 for s, k in zip(self.shapes, self.scales)])
        counts = rng.multinomial(total, areas / areas.sum())
        points = np.concatenate([self.place(k, _draw(rng, shape, int(c))) for k, (shape, c)
                                 in enumerate(zip(self.shapes, counts)) if c > 0])[rng.permutation(total)]
        points = points.astype(np.float32)
        if not even:
            return points
        cloud = torch.from_numpy(points)[None]  # shuffled i.i.d. draws: FPS from index 0 is a random start
        return cloud[0, farthest_point_sample(cloud, n)[0]].numpy()


def random_composition(rng: np.random.Generator, parts: int | None = None, *,
                       deformation: float = 0.1) -> Composition:
    """A random union of ``parts`` primitives (2 or 3 when None) from ``SHAPES``: each scaled by 0.35–0.55,
    randomly rotated, deformed by its own :func:`random_deformation` of amplitude ``deformation`` and offset so
    that the parts overlap; the union lies roughly within the unit ball.

    Example:
        >>> comp = random_composition(np.random.default_rng(0), 2)
        >>> len(comp.shapes), comp.offsets.shape
        (2, (2, 3))
    """
    rng = check_rng(rng)
    parts = int(rng.integers(2, 4)) if parts is None else check_int(parts, "parts", low=1)
    deformation = check_nonnegative(deformation, "deformation")
    shapes = [str(s) for s in rng.choice(SHAPES, size=parts)]
    scales = rng.uniform(0.35, 0.55, size=parts)
    rotations = np.stack([_random_rotation(rng) for _ in range(parts)])
    directions = _sphere(rng, parts)
    offsets = directions * (1.0 - scales - deformation)[:, None] * rng.uniform(0.4, 0.8, size=(parts, 1))
    warps = [random_deformation(rng, amplitude=deformation) for _ in range(parts)]
    return Composition(shapes, scales, rotations, offsets, warps)


def sample_composition(n: int, rng: np.random.Generator, *, parts: int | None = None, even: bool = False,
                       deformation: float = 0.1) -> np.ndarray:
    """``n`` points ``(n, 3)`` float32 on a fresh :func:`random_composition` (seeded by ``rng``).

    Example:
        >>> sample_composition(64, np.random.default_rng(0)).shape
        (64, 3)
    """
    return random_composition(rng, parts, deformation=deformation).sample(n, rng, even=even)


@dataclass
class UpsamplingExample:
    """A dense even ground truth ``(n_dense, 3)``, a sparse noisy input ``(n_sparse, 3)`` and the shape name;
    ``warp`` is the deformation applied to the primitive's points and ``composition`` the union when ``shape`` is
    ``COMPOSITION`` (what :func:`flowzoo.three_d.shape_meshes.example_mesh` needs to rebuild the true surface)."""

    dense: np.ndarray
    sparse: np.ndarray
    shape: str
    warp: Callable[[np.ndarray], np.ndarray] | None = None
    composition: Composition | None = None


def make_upsampling_example(rng: np.random.Generator, shape: str | None = None, *, n_dense: int = 2048,
                            n_sparse: int = 512, noise: float = 0.005, nonuniformity: float = 1.0,
                            deformation: float = 0.1, choices: Sequence[str] = SHAPES) -> UpsamplingExample:
    """One upsampling example: a (deformed) shape's even dense samples, and a sparse input drawn from an
    independent surface sample with probability ∝ exp(nonuniformity · x · d) for a random direction d (denser on
    one side, as a scan is), plus Gaussian noise of std ``noise``. ``shape`` is one of ``SHAPES`` or
    ``COMPOSITION`` (a fresh :func:`random_composition`); None draws one of ``choices``.

    Example:
        >>> ex = make_upsampling_example(np.random.default_rng(0), "torus", n_dense=256, n_sparse=64)
        >>> ex.dense.shape, ex.sparse.shape
        ((256, 3), (64, 3))
    """
    rng = check_rng(rng)
    choices = check_shape_names(choices)
    shape = choices[int(rng.integers(len(choices)))] if shape is None else check_shape_names([shape])[0]
    n_sparse = check_int(n_sparse, "n_sparse", low=1)
    noise, nonuniformity = check_nonnegative(noise, "noise"), check_nonnegative(nonuniformity, "nonuniformity")
    deformation = check_nonnegative(deformation, "deformation")
    if shape == COMPOSITION:  # each part carries its own deformation
        composition = random_composition(rng, deformation=deformation)
        warp, draw = (lambda x: x), composition.sample
    else:
        composition = None
        warp, draw = random_deformation(rng, amplitude=deformation), partial(sample_surface, shape)
    dense = warp(draw(n_dense, rng, even=True))
    pool = draw(4 * n_sparse, rng)
    direction = _sphere(rng, 1)[0]
    logits = nonuniformity * (pool @ direction)
    weights = np.exp(logits - logits.max())
    chosen = rng.choice(len(pool), size=n_sparse, replace=False, p=weights / weights.sum())
    sparse = warp(pool[chosen]) + rng.normal(scale=noise, size=(n_sparse, 3)).astype(np.float32)
    return UpsamplingExample(dense.astype(np.float32), sparse.astype(np.float32), shape, warp, composition)
