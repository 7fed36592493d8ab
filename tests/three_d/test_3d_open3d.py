"""flowzoo.three_d with open3d: mesh files, the torch <-> open3d bridge, RaycastingScene P2F, user shape folders."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.three_d.shape_folders import load_shape_folder, sample_mesh
from flowzoo.three_d.io import Mesh, from_open3d, is_mesh_file, read_mesh, read_point_cloud, to_open3d, write_ply
from flowzoo.three_d.io import PointCloud
from flowzoo.three_d.metrics import point_to_mesh_distance

o3d = pytest.importorskip("open3d")


def _sphere_mesh(path=None, resolution=20):
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=resolution)
    if path is not None:
        o3d.io.write_triangle_mesh(str(path), mesh)
    return Mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles))


@pytest.mark.parametrize("suffix", [".obj", ".off", ".ply"])
def test_mesh_files_round_trip_through_open3d(tmp_path, suffix):
    mesh = _sphere_mesh(tmp_path / f"s{suffix}")
    back = read_mesh(tmp_path / f"s{suffix}")
    assert is_mesh_file(tmp_path / f"s{suffix}")
    assert back.faces.shape == mesh.faces.shape and back.vertices.shape == mesh.vertices.shape
    np.testing.assert_allclose(np.linalg.norm(back.vertices, axis=1), 1.0, atol=1e-5)


def test_pcd_round_trip_keeps_normals_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(rng.normal(size=(30, 3))))
    pcd.normals = o3d.utility.Vector3dVector(np.tile([0.0, 0.0, 1.0], (30, 1)))
    pcd.colors = o3d.utility.Vector3dVector(rng.random((30, 3)))
    o3d.io.write_point_cloud(str(tmp_path / "c.pcd"), pcd)
    back = read_point_cloud(tmp_path / "c.pcd")
    np.testing.assert_allclose(back.points, np.asarray(pcd.points), atol=1e-5)
    np.testing.assert_allclose(back.normals, np.asarray(pcd.normals), atol=1e-6)
    np.testing.assert_allclose(back.colors, np.asarray(pcd.colors), atol=1 / 255)  # PCD packs 8-bit rgb


def test_a_mesh_file_without_triangles_is_an_error_naming_it(tmp_path):
    points_only = tmp_path / "points.obj"
    points_only.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    for read in (read_mesh, read_point_cloud):
        with pytest.raises(ConfigError, match="points.obj"):
            read(points_only)
    (tmp_path / "junk.off").write_text("hello\n")
    with pytest.raises(ConfigError, match="junk.off"):
        read_mesh(tmp_path / "junk.off")
    write_ply(tmp_path / "scan.ply", PointCloud(np.eye(3)))
    assert not is_mesh_file(tmp_path / "scan.ply")
    with pytest.raises(ConfigError, match="scan.ply"):
        read_mesh(tmp_path / "scan.ply")
    with pytest.raises(ShapeError):
        Mesh(np.eye(3), [[0, 1, 3]])


def test_bridge_shares_memory_both_ways_and_keeps_attributes():
    points, colors = torch.rand(6, 3), torch.rand(6, 3)
    cloud = to_open3d(PointCloud(points.numpy(), colors=colors.numpy()))
    assert set(cloud.point) >= {"positions", "colors"}
    shared = torch.zeros(6, 3)
    tensors = from_open3d(to_open3d(shared))
    tensors["points"][2, 1] = 5.0
    assert shared[2, 1] == 5.0  # no copy on the way out nor back
    legacy = from_open3d(o3d.geometry.TriangleMesh.create_box())
    assert legacy["vertices"].shape == (8, 3) and legacy["faces"].shape == (12, 3)
    mesh = _sphere_mesh()
    assert from_open3d(to_open3d(mesh))["faces"].tolist() == mesh.faces.tolist()
    with pytest.raises(ConfigError):
        to_open3d("points.ply")


def test_raycasting_p2f_matches_the_exact_torch_distance():
    mesh = _sphere_mesh(resolution=10)
    query = torch.randn(1, 200, 3, generator=torch.Generator().manual_seed(0))
    vertices, faces = torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces)
    exact = point_to_mesh_distance(query, vertices, faces)
    fast = point_to_mesh_distance(query, vertices, faces, backend="open3d")
    torch.testing.assert_close(fast, exact, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError):
        point_to_mesh_distance(query, vertices, faces, backend="embree")


def test_mesh_sampling_is_uniform_by_area_and_on_the_surface():
    # A 2 x 1 rectangle split into a large and a small triangle pair: points fall by area, not by triangle count.
    mesh = Mesh([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0], [0.1, 0, 0], [0.1, 1, 0]],
                [[4, 1, 2], [4, 2, 5], [0, 4, 5], [0, 5, 3]])
    pts = sample_mesh(mesh, 20000, np.random.default_rng(0))
    assert abs((pts[:, 0] < 0.1).mean() - 0.05) < 0.01
    sphere = _sphere_mesh(resolution=30)
    even = sample_mesh(sphere, 300, np.random.default_rng(1), even=True)
    distance = point_to_mesh_distance(torch.from_numpy(even)[None], torch.from_numpy(sphere.vertices),
                                      torch.from_numpy(sphere.faces))
    assert float(distance.max()) < 1e-5


def test_shape_folder_reads_meshes_and_clouds_and_reports_skips(tmp_path):
    _sphere_mesh(tmp_path / "ball.obj")
    (tmp_path / "nested").mkdir()
    write_ply(tmp_path / "nested" / "scan.ply", PointCloud(np.random.default_rng(0).normal(size=(200, 3))))
    write_ply(tmp_path / "tiny.ply", PointCloud(np.eye(3)))
    (tmp_path / "README.md").write_text("shapes")
    data = load_shape_folder(tmp_path, 64, np.random.default_rng(0))
    assert data.names == ["ball.obj", "nested/scan.ply"] and data.clouds.shape == (2, 64, 3)
    np.testing.assert_allclose(np.linalg.norm(data.clouds, axis=2).max(axis=1), 1.0, atol=1e-5)
    assert [name for name, _ in data.skipped] == ["README.md", "tiny.ply"]
    again = load_shape_folder(tmp_path, 64, np.random.default_rng(0))
    np.testing.assert_array_equal(again.clouds, data.clouds)


def test_shape_folder_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        load_shape_folder(tmp_path / "missing", 8, np.random.default_rng(0))
    (tmp_path / "notes.txt.bak").write_text("x")
    with pytest.raises(EmptyInputError):
        load_shape_folder(tmp_path, 8, np.random.default_rng(0))
    (tmp_path / "nan.xyz").write_text("0 0 0\nnan 1 2\n1 1 1\n")
    with pytest.raises(NonFiniteError, match="nan.xyz"):
        load_shape_folder(tmp_path, 2, np.random.default_rng(0))
