"""flowzoo.three_d.data: samples on their analytic surfaces, determinism, scene-flow ground truth."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.three_d import data, scene_pairs
from flowzoo.three_d.metrics import nn_uniformity


def _residual(shape, p):
    """Distance-like residual of points p to the analytic surface of `shape` (0 on the surface)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if shape == "sphere":
        return np.abs(np.linalg.norm(p, axis=1) - 1)
    if shape == "box":
        return np.abs((np.abs(p) / data.BOX_HALF).max(axis=1) - 1)
    if shape == "torus":
        big, small = data.TORUS_RADII
        return np.abs(np.hypot(np.hypot(x, y) - big, z) - small)
    if shape == "cylinder":
        radius, half = data.CYLINDER
        side = np.abs(np.hypot(x, y) - radius) + np.clip(np.abs(z) - half, 0, None)
        cap = np.abs(np.abs(z) - half) + np.clip(np.hypot(x, y) - radius, 0, None)
        return np.minimum(side, cap)
    if shape == "cone":
        radius, half = data.CONE
        side = np.abs(np.hypot(x, y) - radius * (half - z) / (2 * half))
        base = np.abs(z + half) + np.clip(np.hypot(x, y) - radius, 0, None)
        return np.minimum(side, base)
    if shape == "mobius":
        u = np.arctan2(y, x)
        rho = np.hypot(x, y) - data.MOBIUS_SIZE[0]
        width_ok = np.clip(np.hypot(rho, z) - data.MOBIUS_SIZE[1], 0, None)
        return np.abs(rho * np.sin(u / 2) - z * np.cos(u / 2)) + width_ok
    centre = data.trefoil_centre(np.linspace(0, 2 * np.pi, 20000))
    nearest = torch.cdist(torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(centre)).amin(1).numpy()
    return np.abs(nearest - data.TREFOIL_TUBE)


@pytest.mark.parametrize("shape", data.SHAPES)
def test_samples_lie_on_the_analytic_surface(shape):
    pts = data.sample_surface(shape, 500, np.random.default_rng(0))
    assert pts.shape == (500, 3) and pts.dtype == np.float32
    tol = 2e-3 if shape == "trefoil" else 1e-5
    assert _residual(shape, pts.astype(np.float64)).max() < tol
    assert np.linalg.norm(pts, axis=1).max() <= 1.0 + 1e-5


def test_area_uniformity_on_the_torus():
    # the outer half of a torus (cos v > 0) holds (π R + 2 r)/(2 π R) of its area, not half
    pts = data.sample_surface("torus", 20000, np.random.default_rng(1))
    big, small = data.TORUS_RADII
    outer = (np.hypot(pts[:, 0], pts[:, 1]) > big).mean()
    assert outer == pytest.approx((np.pi * big + 2 * small) / (2 * np.pi * big), abs=0.015)


def test_even_sampling_is_more_uniform():
    rng = np.random.default_rng(2)
    plain = torch.as_tensor(data.sample_surface("sphere", 400, rng))[None]
    even = torch.as_tensor(data.sample_surface("sphere", 400, rng, even=True))[None]
    assert nn_uniformity(even).item() < 0.5 * nn_uniformity(plain).item()


def test_determinism_under_a_seed():
    a = data.make_upsampling_example(np.random.default_rng(5), n_dense=256, n_sparse=64)
    b = data.make_upsampling_example(np.random.default_rng(5), n_dense=256, n_sparse=64)
    assert a.shape == b.shape and np.array_equal(a.dense, b.dense) and np.array_equal(a.sparse, b.sparse)
    p = scene_pairs.make_scene_flow_pair(np.random.default_rng(5), n_points=256)
    q = scene_pairs.make_scene_flow_pair(np.random.default_rng(5), n_points=256)
    assert all(np.array_equal(getattr(p, f), getattr(q, f)) for f in ("pc1", "pc2", "flow", "valid"))


def test_upsampling_sparse_input_is_near_the_dense_surface():
    ex = data.make_upsampling_example(np.random.default_rng(3), "sphere", n_dense=1024, n_sparse=128, noise=0.0)
    gap = torch.cdist(torch.as_tensor(ex.sparse), torch.as_tensor(ex.dense)).amin(1)
    assert gap.max() < 0.15  # same warp, even dense spacing of ~0.1


def test_scene_flow_ground_truth_is_rigid_per_object():
    pair = scene_pairs.make_scene_flow_pair(np.random.default_rng(4), n_points=1024, noise=0.0, occlusion=0.0)
    assert pair.valid.all()
    warped = pair.pc1 + pair.flow
    for k in np.unique(pair.object_ids):
        src, dst = pair.pc1[pair.object_ids == k], warped[pair.object_ids == k]
        if len(src) < 4:
            continue
        # a rigid motion preserves pairwise distances
        d_src = np.linalg.norm(src[:, None] - src[None], axis=-1)
        d_dst = np.linalg.norm(dst[:, None] - dst[None], axis=-1)
        assert np.abs(d_src - d_dst).max() < 1e-4
    # the moved frame-1 points lie on frame 2's (re-sampled) surfaces: small Chamfer gap
    gap = torch.cdist(torch.as_tensor(warped), torch.as_tensor(pair.pc2)).amin(1)
    assert gap.median() < 0.15


def test_occlusion_marks_points_invalid():
    pair = scene_pairs.make_scene_flow_pair(np.random.default_rng(6), n_points=1024, occlusion=2.0)
    assert 0 < (~pair.valid).sum() < len(pair.valid)


def test_bad_inputs():
    with pytest.raises(ConfigError):
        data.sample_surface("teapot", 10, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        data.sample_surface("sphere", 10, 0)
    with pytest.raises(ConfigError):
        scene_pairs.make_scene_flow_pair(np.random.default_rng(0), n_points=0)


def test_surface_areas_match_closed_forms():
    big, small = data.TORUS_RADII
    assert data.surface_area("torus") == pytest.approx(4 * np.pi ** 2 * big * small, rel=1e-4)
    a = data.BOX_HALF
    assert data.surface_area("box") == pytest.approx(8 * (a[0] * a[1] + a[0] * a[2] + a[1] * a[2]))


def test_composition_points_lie_on_the_union_of_its_parts_in_area_proportion():
    """Undeformed parts, so each point maps back onto its primitive's analytic surface."""
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    comp = data.Composition(["sphere", "torus", "box"], np.array([0.5, 0.4, 0.3]), np.stack([np.eye(3), rotation,
                            np.eye(3)]), np.array([[0.3, 0, 0], [-0.3, 0.1, 0], [0, 0, 0.4]]), [lambda x: x] * 3)
    pts = comp.sample(6000, np.random.default_rng(0)).astype(np.float64)
    residuals = [_residual(shape, (pts - comp.offsets[k]) @ comp.rotations[k] / comp.scales[k]) * comp.scales[k]
                 for k, shape in enumerate(comp.shapes)]
    nearest = np.min(residuals, axis=0)
    assert nearest.max() < 1e-5  # every point is on one of the three surfaces
    owner = np.argmin(residuals, axis=0)
    areas = np.array([data.surface_area(s) * k ** 2 for s, k in zip(comp.shapes, comp.scales)])
    np.testing.assert_allclose(np.bincount(owner, minlength=3) / len(pts), areas / areas.sum(), atol=0.03)


def test_random_compositions_are_seeded_and_examples_share_one_surface():
    first = data.sample_composition(500, np.random.default_rng(1), even=True)
    assert np.array_equal(first, data.sample_composition(500, np.random.default_rng(1), even=True))
    assert np.linalg.norm(first, axis=1).max() < 1.2
    comp = data.random_composition(np.random.default_rng(2))
    assert 2 <= len(comp.shapes) <= 3 and set(comp.shapes) <= set(data.SHAPES)
    ex = data.make_upsampling_example(np.random.default_rng(0), "composition", n_dense=1024, n_sparse=128, noise=0.0)
    gap = torch.cdist(torch.from_numpy(ex.sparse), torch.from_numpy(ex.dense)).min(dim=1).values
    assert float(gap.median()) < 0.05  # sparse input drawn from the same deformed union as the dense truth
    other = data.sample_composition(2048, np.random.default_rng(9))
    assert float(torch.cdist(torch.from_numpy(ex.sparse), torch.from_numpy(other)).min(dim=1).values.median()) > 0.05
    picked = {data.make_upsampling_example(np.random.default_rng(s), n_dense=64, n_sparse=8).shape for s in range(10)}
    assert data.COMPOSITION not in data.SHAPES and picked <= set(data.SHAPES)
    only = data.make_upsampling_example(np.random.default_rng(0), n_dense=64, n_sparse=8, choices=["composition"])
    assert only.shape == "composition"
    with pytest.raises(ConfigError):
        data.make_upsampling_example(np.random.default_rng(0), choices=["blob"])
