"""flowzoo.three_d.data: samples on their analytic surfaces, determinism, scene-flow ground truth."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.three_d import data
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
    p = data.make_scene_flow_pair(np.random.default_rng(5), n_points=256)
    q = data.make_scene_flow_pair(np.random.default_rng(5), n_points=256)
    assert all(np.array_equal(getattr(p, f), getattr(q, f)) for f in ("pc1", "pc2", "flow", "valid"))


def test_upsampling_sparse_input_is_near_the_dense_surface():
    ex = data.make_upsampling_example(np.random.default_rng(3), "sphere", n_dense=1024, n_sparse=128, noise=0.0)
    gap = torch.cdist(torch.as_tensor(ex.sparse), torch.as_tensor(ex.dense)).amin(1)
    assert gap.max() < 0.15  # same warp, even dense spacing of ~0.1


def test_scene_flow_ground_truth_is_rigid_per_object():
    pair = data.make_scene_flow_pair(np.random.default_rng(4), n_points=1024, noise=0.0, occlusion=0.0)
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
    pair = data.make_scene_flow_pair(np.random.default_rng(6), n_points=1024, occlusion=2.0)
    assert 0 < (~pair.valid).sum() < len(pair.valid)


def test_bad_inputs():
    with pytest.raises(ConfigError):
        data.sample_surface("teapot", 10, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        data.sample_surface("sphere", 10, 0)
    with pytest.raises(ConfigError):
        data.make_scene_flow_pair(np.random.default_rng(0), n_points=0)
