"""flowzoo.three_d.shape_meshes: each generated shape's triangulation lies on its analytic surface, closed shapes are
watertight, and a deformation moves points and mesh together (the true surface for mesh P2F)."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.three_d.data import (BOX_HALF, CONE, CYLINDER, MOBIUS_SIZE, SHAPES, TORUS_RADII, TREFOIL_TUBE,
                                  make_upsampling_example, random_deformation, sample_surface, trefoil_centre)
from flowzoo.three_d.metrics import point_to_mesh_distance
from flowzoo.three_d.ops import knn
from flowzoo.three_d.shape_meshes import composition_mesh, deformed_mesh, example_mesh, shape_mesh

pytest.importorskip("open3d")


def _distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return point_to_mesh_distance(torch.as_tensor(points, dtype=torch.float32)[None],
                                  torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces),
                                  backend="open3d")[0].numpy()


def _edge_counts(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def _residual(shape: str, v: np.ndarray) -> np.ndarray:
    """How far each vertex is from satisfying the shape's implicit equation (0 on the surface)."""
    x, y, z = v.T
    r = np.hypot(x, y)
    if shape == "sphere":
        return np.abs(np.linalg.norm(v, axis=1) - 1.0)
    if shape == "box":
        return np.abs(np.abs(v / BOX_HALF).max(axis=1) - 1.0)
    if shape == "torus":
        big, small = TORUS_RADII
        return np.abs(np.hypot(r - big, z) - small)
    if shape == "cylinder":
        radius, half = CYLINDER
        side, cap = np.abs(r - radius) + np.clip(np.abs(z) - half, 0, None), np.abs(np.abs(z) - half)
        return np.minimum(side, cap + np.clip(r - radius, 0, None))
    if shape == "cone":
        radius, half = CONE
        side = np.abs(r - radius * (half - z) / (2 * half))
        return np.minimum(side, np.abs(z + half) + np.clip(r - radius, 0, None))
    if shape == "mobius":  # on the segment from the centre circle: z = v sin(u/2), r - R = v cos(u/2)
        (big, half_width), u = MOBIUS_SIZE, np.arctan2(y, x)
        w = (r - big) * np.cos(u / 2) + z * np.sin(u / 2)
        return np.hypot(r - big - w * np.cos(u / 2), z - w * np.sin(u / 2)) + np.clip(np.abs(w) - half_width, 0, None)
    # the trefoil: every vertex at the tube radius from the centre line (sampled, so only to about 1e-3)
    centre = trefoil_centre(np.linspace(0, 2 * np.pi, 5000, endpoint=False))
    nearest = np.sqrt(((v[:, None, :] - centre[None]) ** 2).sum(-1)).min(axis=1)
    return np.abs(nearest - TREFOIL_TUBE)


@pytest.mark.parametrize("shape", SHAPES)
def test_mesh_vertices_satisfy_the_shape_equation(shape):
    vertices, faces = shape_mesh(shape, 32 if shape == "trefoil" else 64)
    tol = 2e-3 if shape == "trefoil" else 1e-9  # the trefoil's check is against a sampled centre line
    assert _residual(shape, vertices).max() < tol
    assert faces.dtype == np.int64 and faces.min() >= 0 and faces.max() < len(vertices)


@pytest.mark.parametrize("shape", SHAPES)
def test_default_mesh_is_fine_and_the_shape_points_lie_on_it(shape):
    vertices, faces = shape_mesh(shape)
    assert len(faces) >= 20_000
    points = sample_surface(shape, 4000, np.random.default_rng(1))
    assert _distance(points, vertices, faces).max() < 5e-4
    # and the mesh covers the whole surface: no vertex is far from a dense sample of it
    dense = sample_surface(shape, 20_000, np.random.default_rng(2))
    dist, _ = knn(torch.from_numpy(vertices[::7].astype(np.float32))[None], torch.from_numpy(dense)[None], 1)
    assert float(dist.max()) < 0.05


@pytest.mark.parametrize("shape", ["sphere", "box", "torus", "cylinder", "cone", "trefoil"])
def test_closed_shapes_are_watertight(shape):
    counts = _edge_counts(shape_mesh(shape, 16)[1])
    assert (counts == 2).all()


def test_mobius_mesh_has_one_boundary_loop():
    counts = _edge_counts(shape_mesh("mobius", 16)[1])
    assert (counts <= 2).all() and (counts == 1).sum() == 2 * 32  # one loop, twice around the centre circle


def test_a_deformation_moves_points_and_mesh_together():
    rng = np.random.default_rng(3)
    warp = random_deformation(rng, amplitude=0.1)
    points = warp(sample_surface("torus", 3000, rng))
    vertices, faces = deformed_mesh("torus", warp)
    assert _distance(points, vertices, faces).max() < 5e-4
    undeformed = shape_mesh("torus")
    assert _distance(points, *undeformed).mean() > 20 * _distance(points, vertices, faces).mean()


@pytest.mark.parametrize("shape", ["cone", "composition"])
def test_example_mesh_is_the_surface_of_an_upsampling_example(shape):
    rng = np.random.default_rng(4)
    example = make_upsampling_example(rng, shape, n_dense=1024, n_sparse=128, noise=0.0)
    vertices, faces = example_mesh(example)
    assert _distance(example.dense, vertices, faces).max() < 1e-3
    assert _distance(example.sparse, vertices, faces).max() < 1e-3


def test_carrying_the_warp_keeps_the_examples_random_draws():
    example = make_upsampling_example(np.random.default_rng(5), "sphere", n_dense=64, n_sparse=16)
    again = make_upsampling_example(np.random.default_rng(5), "sphere", n_dense=64, n_sparse=16)
    np.testing.assert_array_equal(example.dense, again.dense)
    np.testing.assert_array_equal(example.warp(np.ones((1, 3))), again.warp(np.ones((1, 3))))


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="shape in"):
        shape_mesh("teapot")
    with pytest.raises(ConfigError):
        shape_mesh("sphere", 4)
    with pytest.raises(ConfigError, match="warp"):
        deformed_mesh("sphere", warp="not a function")
    with pytest.raises(ConfigError, match="Composition"):
        composition_mesh("sphere")
    with pytest.raises(ConfigError, match="UpsamplingExample"):
        example_mesh({"shape": "sphere"})
