"""Point clouds: back-projection on synthetic depth images with known geometry, cropping, farthest point sampling,
and the MuJoCo depth camera on a real Meta-World scene."""

import math

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, ShapeError
from flowzoo.robotics.pointcloud import crop, depth_to_points, farthest_point_sample

torch.set_num_threads(1)

# A camera looking along world +x: its -z axis is +x, its +y axis is world up (+z), its +x axis is world -y.
LOOK_ALONG_X = np.array([[0.0, 0.0, -1.0],
                         [-1.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0]])
# A camera looking straight down (-z world) with its image "up" along world +y.
LOOK_DOWN = np.eye(3)


def test_plane_facing_camera_matches_hand_computation():
    # fovy 90 deg on a 4-row image: focal length f = (4/2)/tan(45 deg) = 2 px.
    depth = np.full((4, 6), 3.0)
    points = depth_to_points(depth, 90.0, [0.0, 0.0, 0.0], LOOK_DOWN)
    assert points.shape == (24, 3) and points.dtype == np.float32
    # pixel (row 0, col 0): u = 0.5 - 3 = -2.5, v = 0.5 - 2 = -1.5 -> (u d/f, -v d/f, -d)
    np.testing.assert_allclose(points[0], [-2.5 * 3 / 2, 1.5 * 3 / 2, -3.0], atol=1e-6)
    # pixel (row 3, col 5): u = 2.5, v = 1.5
    np.testing.assert_allclose(points[3 * 6 + 5], [2.5 * 3 / 2, -1.5 * 3 / 2, -3.0], atol=1e-6)
    np.testing.assert_allclose(points[:, 2], -3.0)


def test_wall_seen_by_a_translated_rotated_camera_lies_on_the_wall():
    camera = np.array([1.0, 2.0, 3.0])
    fovy = 60.0
    depth = np.full((5, 7), 4.0)  # a wall at world x = 1 + 4 = 5
    points = depth_to_points(depth, fovy, camera, LOOK_ALONG_X.reshape(-1))  # flattened like data.cam_xmat
    np.testing.assert_allclose(points[:, 0], 5.0, atol=1e-5)
    focal = 2.5 / math.tan(math.radians(30.0))
    # centre row (v = 0), last column (u = 3): camera x = 3 * 4 / f is world -y; camera y = 0 is world z = 3
    np.testing.assert_allclose(points[2 * 7 + 6], [5.0, 2.0 - 3 * 4 / focal, 3.0], atol=1e-5)
    # top row is higher in the world than the bottom row
    assert points[0, 2] > 3.0 > points[-1, 2]


def test_box_on_a_floor_recovers_box_top_and_floor_heights():
    height, box_top = 2.0, 0.5
    size = 16
    depth = np.full((size, size), height)
    depth[4:8, 10:14] = height - box_top  # a box whose top face is at z = 0.5
    points = depth_to_points(depth, 45.0, [0.3, -0.2, height], LOOK_DOWN).reshape(size, size, 3)
    np.testing.assert_allclose(points[4:8, 10:14, 2], box_top, atol=1e-6)
    floor = np.ones((size, size), bool)
    floor[4:8, 10:14] = False
    np.testing.assert_allclose(points[floor][:, 2], 0.0, atol=1e-6)
    focal = (size / 2) / math.tan(math.radians(22.5))
    # the box's corner pixel (row 4, col 10): u = 10.5 - 8, v = 4.5 - 8, seen at depth 1.5
    np.testing.assert_allclose(points[4, 10, :2], [0.3 + 2.5 * 1.5 / focal, -0.2 + 3.5 * 1.5 / focal], atol=1e-6)


def test_depth_to_points_rejects_bad_input():
    with pytest.raises(ShapeError):
        depth_to_points(np.ones(5), 45.0, [0, 0, 0], np.eye(3))
    with pytest.raises(ShapeError):
        depth_to_points(np.ones((2, 2)), 45.0, [0, 0], np.eye(3))
    with pytest.raises(ShapeError):
        depth_to_points(np.ones((2, 2)), 45.0, [0, 0, 0], np.eye(2))
    with pytest.raises(ConfigError):
        depth_to_points(np.ones((2, 2)), 0.0, [0, 0, 0], np.eye(3))


def test_crop_keeps_the_box_with_bounds_included_and_drops_non_finite():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0001, 0.5, 0.5], [0.5, -0.1, 0.5],
                       [np.inf, 0.5, 0.5], [np.nan, 0.5, 0.5], [0.2, 0.3, 0.4]], dtype=np.float32)
    kept = crop(points, [0, 0, 0], [1, 1, 1])
    np.testing.assert_array_equal(kept, points[[0, 1, 6]])
    kept_torch = crop(torch.from_numpy(points), [0, 0, 0], [1, 1, 1])
    assert isinstance(kept_torch, torch.Tensor)
    np.testing.assert_array_equal(kept_torch.numpy(), points[[0, 1, 6]])
    with pytest.raises(ConfigError):
        crop(points, [0, 0, 1], [1, 1, 0])
    with pytest.raises(ShapeError):
        crop(points[:, :2], [0, 0, 0], [1, 1, 1])


def _covering_radius(points: np.ndarray, subset: np.ndarray) -> float:
    distances = np.linalg.norm(points[:, None, :] - subset[None, :, :], axis=-1)
    return float(distances.min(axis=1).max())


def test_farthest_point_sampling_is_distinct_deterministic_and_covers_better_than_random():
    rng = np.random.default_rng(0)
    # uneven density: a dense blob plus a sparse spread, where random subsets miss the sparse part
    points = np.concatenate([rng.normal(0.0, 0.05, (900, 3)), rng.uniform(-1, 1, (100, 3))]).astype(np.float32)
    sample = farthest_point_sample(points, 64, seed=3)
    assert sample.shape == (64, 3) and sample.dtype == np.float32
    assert len(np.unique(sample, axis=0)) == 64
    # every sampled point is one of the inputs
    assert all(np.any(np.all(points == p, axis=1)) for p in sample)
    np.testing.assert_array_equal(sample, farthest_point_sample(points, 64, seed=3))
    fps_radius = _covering_radius(points, sample)
    random_radii = [_covering_radius(points, points[rng.choice(len(points), 64, replace=False)]) for _ in range(20)]
    assert fps_radius < 0.6 * min(random_radii)
    # greedy FPS is a 2-approximation of the optimal covering: the chosen points are >= radius apart
    pair = np.linalg.norm(sample[:, None] - sample[None], axis=-1) + np.eye(64) * 10
    assert pair.min() >= fps_radius - 1e-6


def test_farthest_point_sampling_pads_small_clouds_and_keeps_torch_type():
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    sample = farthest_point_sample(points, 7, generator=torch.Generator().manual_seed(0))
    assert isinstance(sample, torch.Tensor) and sample.shape == (7, 3)
    assert len(torch.unique(sample, dim=0)) == 3
    with pytest.raises(EmptyInputError):
        farthest_point_sample(np.zeros((0, 3)), 4)
    with pytest.raises(ConfigError):
        farthest_point_sample(points, 0)


def test_metaworld_depth_camera_sees_the_table_and_the_object():
    from flowzoo.robotics.envs import make_env
    from flowzoo.robotics.pointcloud import METAWORLD_CAMERA, METAWORLD_WORKSPACE, DepthPointCloud

    pytest.importorskip("metaworld")

    env = make_env("push-v3", "state", seed=0)
    try:
        obs, _ = env.reset(seed=0)
        model, data = env.unwrapped.model, env.unwrapped.data
        camera = DepthPointCloud(model, "topview", size=64, num_points=128)
        raw = depth_to_points(camera.depth(data), float(model.cam_fovy[camera.camera_id]),
                              data.cam_xpos[camera.camera_id], data.cam_xmat[camera.camera_id])
        on_table = raw[(np.abs(raw[:, 0]) < 0.3) & (raw[:, 1] > 0.45) & (raw[:, 1] < 0.85)]
        # most of the table top in view is the plane z = 0: MuJoCo's camera convention is the one we invert
        assert np.mean(np.abs(on_table[:, 2]) < 2e-3) > 0.8
        camera.close()
        camera.close()  # idempotent
        corner = DepthPointCloud(model, METAWORLD_CAMERA, size=96, num_points=128)
        cloud = corner(data)
        low, high = np.array(METAWORLD_WORKSPACE[0]), np.array(METAWORLD_WORKSPACE[1])
        assert cloud.shape == (128, 3) and np.all(cloud >= low - 1e-6) and np.all(cloud <= high + 1e-6)
        # the puck (radius 2 cm, centre obs[4:7]) shows up in the cropped points within ~its radius
        puck = obs["state"][4:7]
        assert np.linalg.norm(corner.points(data) - puck, axis=1).min() < 0.03
        corner.close()
    finally:
        env.close()
