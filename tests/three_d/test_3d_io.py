"""flowzoo.three_d.io: PLY and XYZ round trips, and clear errors for bad files."""

import numpy as np
import pytest

from flowzoo.core.errors import ConfigError, EmptyInputError, FlowzooError, NonFiniteError
from flowzoo.three_d.io import PointCloud, read_point_cloud, write_point_cloud, write_ply


def _cloud(n=50, seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    colors = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    return PointCloud(rng.normal(size=(n, 3)), normals=normals, colors=colors)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip_with_normals_and_colours(tmp_path, binary):
    cloud = _cloud()
    path = tmp_path / "c.ply"
    write_point_cloud(path, cloud, binary=binary)
    back = read_point_cloud(path)
    np.testing.assert_allclose(back.points, cloud.points, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(back.normals, cloud.normals, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.round(back.colors * 255), np.round(cloud.colors * 255))


def test_ply_points_only_and_xyz_round_trip(tmp_path):
    pts = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    write_point_cloud(tmp_path / "p.ply", pts)
    back = read_point_cloud(tmp_path / "p.ply")
    assert back.normals is None and back.colors is None
    np.testing.assert_array_equal(back.points, pts)
    cloud = PointCloud(pts, normals=pts)
    write_point_cloud(tmp_path / "p.xyz", cloud)
    np.testing.assert_allclose(read_point_cloud(tmp_path / "p.xyz").normals, pts, rtol=1e-6)


def test_reads_a_ply_with_faces_and_double_big_endian(tmp_path):
    header = ("ply\nformat binary_big_endian 1.0\nelement vertex 3\nproperty double x\nproperty double y\n"
              "property double z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    body = np.eye(3).astype(">f8").tobytes() + bytes([3]) + np.array([0, 1, 2], ">i4").tobytes()
    (tmp_path / "m.ply").write_bytes(header.encode() + body)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "m.ply").points, np.eye(3))


def _expect(path, error):
    with pytest.raises(error) as caught:
        read_point_cloud(path)
    assert str(path) in str(caught.value)


def test_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.ply"
    empty.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                     "property float z\nend_header\n")
    _expect(empty, EmptyInputError)
    nan = tmp_path / "nan.ply"
    nan.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                   "property float z\nend_header\n0 0 0\nnan 1 2\n")
    _expect(nan, NonFiniteError)
    truncated = tmp_path / "cut.ply"
    write_ply(truncated, _cloud())
    truncated.write_bytes(truncated.read_bytes()[:-10])
    _expect(truncated, ConfigError)
    garbage = tmp_path / "junk.ply"
    garbage.write_bytes(b"not a ply file")
    _expect(garbage, ConfigError)
    blank = tmp_path / "blank.xyz"
    blank.write_text("# nothing\n")
    _expect(blank, EmptyInputError)
    _expect(tmp_path / "missing.ply", ConfigError)
    (tmp_path / "a.stl").write_text("solid")
    _expect(tmp_path / "a.stl", ConfigError)


def test_open3d_formats_error_clearly_without_open3d(tmp_path):
    try:
        import open3d  # noqa: F401
        pytest.skip("open3d is installed")
    except (ImportError, OSError):
        pass
    (tmp_path / "a.pcd").write_text("VERSION .7\n")
    with pytest.raises(FlowzooError, match="libusb"):
        read_point_cloud(tmp_path / "a.pcd")


def test_bad_arrays_raise():
    with pytest.raises(FlowzooError):
        PointCloud(np.zeros((4, 2)))
    with pytest.raises(NonFiniteError):
        PointCloud(np.full((2, 3), np.inf))
