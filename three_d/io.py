"""Point-cloud files: PLY (ASCII and binary) and XYZ in pure numpy, PCD / OBJ / OFF through open3d.

PLY (Turk 1994; the format open3d, MeshLab and every scanner write) is read and written here without open3d,
so the base of ``flowzoo.three_d`` works on a machine where open3d does not import: the ``vertex`` element with
``x y z``, optional ``nx ny nz`` normals and optional ``red green blue`` colours (uchar, or float in [0, 1]).
Colours are float32 in [0, 1] in memory and uchar on disk. Other elements (faces) after the vertices are
ignored when reading points. XYZ is whitespace-separated text, 3 columns (xyz) or 6 (xyz + normals).

PCD, OBJ and OFF go through open3d (``pip install open3d-cpu``; on Linux it needs ``apt-get install -y
libusb-1.0-0``), imported only when such a file is asked for, as do :func:`read_mesh` (a triangle mesh with its
faces: ``.obj``, ``.off``, ``.ply``, ``.stl``) and the bridges to open3d's tensor geometry, :func:`to_open3d`
and :func:`from_open3d`, which share memory with torch through DLPack where the device and dtype allow it.
Every bad file raises a :class:`~flowzoo.core.errors.FlowzooError` naming it: no points, NaN or Inf
coordinates, a truncated binary body, a mesh file without triangles, an unknown format. No time convention
applies; the rationale is that a user's scans must load on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import (ConfigError, EmptyInputError, MissingDependencyError, NonFiniteError, ShapeError,
                                 expected)

__all__ = ["PointCloud", "Mesh", "MESH_SUFFIXES", "read_point_cloud", "write_point_cloud", "read_ply", "write_ply",
           "read_xyz", "write_xyz", "require_open3d", "is_mesh_file", "read_mesh", "to_open3d", "from_open3d"]

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl")

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_ENDIAN = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "<"}


@dataclass
class PointCloud:
    """Points ``(N, 3)`` float32, optional normals ``(N, 3)`` float32 and colours ``(N, 3)`` float32 in [0, 1].

    Example:
        >>> PointCloud(np.zeros((2, 3))).points.dtype
        dtype('float32')
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = _column_block(self.points, "points")
        if self.normals is not None:
            self.normals = _column_block(self.normals, "normals", len(self.points))
        if self.colors is not None:
            colors = np.asarray(self.colors)
            colors = colors / 255.0 if colors.dtype == np.uint8 else colors
            self.colors = np.clip(_column_block(colors, "colors", len(self.points)), 0.0, 1.0)


def _column_block(values: object, name: str, rows: int | None = None, source: str = "the input") -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 3 or (rows is not None and array.shape[0] != rows):
        want = f"({rows if rows is not None else 'N'}, 3)"
        raise ShapeError(expected(f"{name} shaped {want} in {source}", f"shape {array.shape}",
                                  f"pass one row of 3 {name} values per point"))
    if array.shape[0] == 0:
        raise EmptyInputError(expected(f"at least one point in {source}", "no points", "check the file or array"))
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise NonFiniteError(expected(f"finite {name} in {source}", f"{bad} row(s) with NaN or Inf",
                                      "remove or repair those rows"))
    return array


def _checked(cloud_parts: tuple[np.ndarray, np.ndarray | None, np.ndarray | None], path: Path) -> PointCloud:
    points, normals, colors = cloud_parts
    source = f"file {path}"
    points = _column_block(points, "points", source=source)
    normals = None if normals is None else _column_block(normals, "normals", len(points), source)
    return PointCloud(points, normals, colors)


def _parse_ply_header(raw: bytes, path: Path) -> tuple[str, list[tuple[str, int, list]], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ConfigError(expected(f"a PLY file starting with 'ply' and an 'end_header' line: {path}",
                                   "no PLY header", "write the file with write_ply or another PLY exporter"))
    body_start = raw.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":  # (name, count type, item type)
                elements[-1][2].append((words[4], ("list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            else:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
    if fmt not in _ENDIAN:
        raise ConfigError(expected(f"PLY format ascii or binary_*_endian in {path}", repr(fmt), "re-export the file"))
    return fmt, elements, body_start


def _vertex_columns(table: dict[str, np.ndarray], path: Path) -> tuple:
    missing = [c for c in "xyz" if c not in table]
    if missing:
        raise ConfigError(expected(f"vertex properties x, y, z in {path}", f"missing {missing}", "re-export it"))
    points = np.stack([table[c] for c in "xyz"], axis=1)
    normals = np.stack([table[c] for c in ("nx", "ny", "nz")], axis=1) if "nx" in table else None
    colors = None
    if "red" in table:
        colors = np.stack([table[c] for c in ("red", "green", "blue")], axis=1)
        colors = colors / 255.0 if table["red"].dtype == np.uint8 else colors.astype(np.float32)
    return points, normals, colors


def read_ply(path: str | Path) -> PointCloud:
    """The vertices of a PLY file (ASCII or binary) with their normals and colours when present.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "a.ply")
        >>> write_ply(file, PointCloud(np.eye(3)), binary=False)
        >>> read_ply(file).points.tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    path = Path(path)
    raw = path.read_bytes()
    fmt, elements, offset = _parse_ply_header(raw, path)
    vertex = next((e for e in elements if e[0] == "vertex"), None)
    if vertex is None or vertex[1] == 0:
        raise EmptyInputError(expected(f"at least one point in file {path}", "no vertices",
                                       "check that the scan or export produced points"))
    before = elements[:elements.index(vertex)]
    if any(isinstance(p[1], tuple) for e in before for p in e[2]):
        raise ConfigError(expected(f"the vertex element before any list element in {path}", "faces first",
                                   "re-export the file with vertices first"))
    if fmt == "ascii":
        lines = raw[offset:].decode("ascii", errors="replace").splitlines()
        skip = sum(e[1] for e in before)
        rows = [line.split() for line in lines[skip:skip + vertex[1]]]
        if len(rows) < vertex[1] or any(len(r) < len(vertex[2]) for r in rows):
            raise ConfigError(expected(f"{vertex[1]} vertex lines in {path}", f"{len(rows)} (truncated)",
                                       "re-export the file"))
        values = np.asarray([r[:len(vertex[2])] for r in rows], dtype=np.float64)
        table = {name: values[:, i].astype(kind) for i, (name, kind) in enumerate(vertex[2])}
        return _checked(_vertex_columns(table, path), path)
    dtype = np.dtype([(name, _ENDIAN[fmt] + kind) for name, kind in vertex[2]])
    offset += sum(e[1] * np.dtype([(n, _ENDIAN[fmt] + k) for n, k in e[2]]).itemsize for e in before)
    if len(raw) < offset + vertex[1] * dtype.itemsize:
        raise ConfigError(expected(f"a binary body of {vertex[1]} vertices in {path}", "a truncated file",
                                   "copy or export the file again"))
    data = np.frombuffer(raw, dtype=dtype, count=vertex[1], offset=offset)
    table = {name: data[name].astype(data[name].dtype.newbyteorder("=")) for name, _ in vertex[2]}
    return _checked(_vertex_columns(table, path), path)


def write_ply(path: str | Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write ``cloud`` as PLY (binary little-endian by default): float xyz, float normals, uchar colours.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "b.ply")
        >>> write_ply(file, PointCloud(np.ones((4, 3)), normals=np.zeros((4, 3)), colors=np.ones((4, 3))))
        >>> cloud = read_ply(file); cloud.points.shape, float(cloud.colors.max())
        ((4, 3), 1.0)
    """
    if not isinstance(cloud, PointCloud):
        raise ConfigError(expected("a PointCloud", type(cloud).__name__, "wrap the array: PointCloud(points)"))
    fields = [(c, "f4", cloud.points[:, i]) for i, c in enumerate("xyz")]
    if cloud.normals is not None:
        fields += [(c, "f4", cloud.normals[:, i]) for i, c in enumerate(("nx", "ny", "nz"))]
    if cloud.colors is not None:
        colors = np.round(cloud.colors * 255).astype(np.uint8)
        fields += [(c, "u1", colors[:, i]) for i, c in enumerate(("red", "green", "blue"))]
    names = {"f4": "float", "u1": "uchar"}
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment written by flowzoo",
              f"element vertex {len(cloud.points)}"]
    header += [f"property {names[kind]} {name}" for name, kind, _ in fields] + ["end_header"]
    table = np.empty(len(cloud.points), dtype=[(name, "<" + kind) for name, kind, _ in fields])
    for name, _, column in fields:
        table[name] = column
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            handle.write(table.tobytes())
        else:
            formats = ["%.9g" if kind == "f4" else "%d" for _, kind, _ in fields]
            np.savetxt(handle, np.stack([table[n].astype(np.float64) for n, _, _ in fields], 1), fmt=formats)


def read_xyz(path: str | Path) -> PointCloud:
    """Whitespace-separated text: 3 columns (xyz) or 6 (xyz + normals) per line; ``#`` starts a comment.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "c.xyz")
        >>> write_xyz(file, PointCloud(np.eye(3)))
        >>> read_xyz(file).points.shape
        (3, 3)
    """
    path = Path(path)
    rows = [line.split("#")[0].split() for line in path.read_text().splitlines()]
    rows = [r for r in rows if r]
    if not rows:
        raise EmptyInputError(expected(f"at least one point in file {path}", "no points", "check the file"))
    width = len(rows[0])
    if width not in (3, 6) or any(len(r) != width for r in rows):
        widths = sorted({len(r) for r in rows})
        raise ShapeError(expected(f"3 or 6 numbers on every line of {path}", f"line widths {widths}",
                                  "write x y z [nx ny nz] per line"))
    try:
        values = np.asarray(rows, dtype=np.float64)
    except ValueError as error:
        raise ConfigError(expected(f"numbers in {path}", str(error), "remove the non-numeric text")) from error
    return _checked((values[:, :3], values[:, 3:] if width == 6 else None, None), path)


def write_xyz(path: str | Path, cloud: PointCloud) -> None:
    """Write ``cloud``'s points (and normals) as XYZ text."""
    columns = cloud.points if cloud.normals is None else np.concatenate([cloud.points, cloud.normals], axis=1)
    np.savetxt(path, columns, fmt="%.9g")


def require_open3d():
    """The ``open3d`` module, or a :class:`~flowzoo.core.errors.MissingDependencyError` that says how to install
    it (the extra and the system library ``libusb-1.0-0``)."""
    try:
        import open3d
    except (ImportError, OSError) as error:
        raise MissingDependencyError(expected(
            "open3d for PCD, OBJ and OFF files", f"it does not import ({error})",
            'pip install "flowzoo[three_d]" open3d-cpu; on Linux also apt-get install -y libusb-1.0-0 '
            "(or convert the file to PLY)")) from error
    return open3d


def _read_with_open3d(path: Path) -> PointCloud:
    o3d = require_open3d()
    if path.suffix.lower() == ".pcd":
        geometry = o3d.io.read_point_cloud(str(path))
        parts = (np.asarray(geometry.points), np.asarray(geometry.normals) if geometry.has_normals() else None,
                 np.asarray(geometry.colors) if geometry.has_colors() else None)
    else:
        geometry = _triangle_mesh(o3d, path)
        parts = (np.asarray(geometry.vertices),
                 np.asarray(geometry.vertex_normals) if geometry.has_vertex_normals() else None,
                 np.asarray(geometry.vertex_colors) if geometry.has_vertex_colors() else None)
    if len(parts[0]) == 0:
        raise EmptyInputError(expected(f"at least one point in file {path}", "no points", "check the file"))
    return _checked(parts, path)


def read_point_cloud(path: str | Path) -> PointCloud:
    """Read a point cloud by extension: ``.ply``, ``.xyz``/``.txt``/``.pts`` here; ``.pcd``, ``.obj``, ``.off``
    (mesh vertices) through open3d.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "d.ply")
        >>> write_point_cloud(file, np.zeros((5, 3)))
        >>> read_point_cloud(file).points.shape
        (5, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("an existing point-cloud file", str(path), "check the path"))
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path)
    if suffix in (".xyz", ".txt", ".pts"):
        return read_xyz(path)
    if suffix in (".pcd", ".obj", ".off"):
        return _read_with_open3d(path)
    raise ConfigError(expected("a .ply, .xyz, .txt, .pts, .pcd, .obj or .off file", str(path),
                               "convert the file to PLY"))


def write_point_cloud(path: str | Path, cloud: PointCloud | np.ndarray, *, binary: bool = True) -> None:
    """Write ``cloud`` (a :class:`PointCloud` or an ``(N, 3)`` array) as PLY, or XYZ for ``.xyz``/``.txt``."""
    cloud = cloud if isinstance(cloud, PointCloud) else PointCloud(cloud)
    if Path(path).suffix.lower() in (".xyz", ".txt"):
        write_xyz(path, cloud)
    elif Path(path).suffix.lower() == ".ply":
        write_ply(path, cloud, binary=binary)
    else:
        raise ConfigError(expected("a .ply, .xyz or .txt output path", str(path), "name the file *.ply"))


@dataclass
class Mesh:
    """A triangle mesh: vertices ``(V, 3)`` float32 and faces ``(F, 3)`` int64 indexing them (F >= 1).

    Example:
        >>> Mesh(np.eye(3), [[0, 1, 2]]).faces.dtype
        dtype('int64')
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = _column_block(self.vertices, "vertices")
        faces = np.asarray(self.faces)
        if (faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer)
                or faces.min() < 0 or faces.max() >= len(self.vertices)):
            raise ShapeError(expected("integer triangle faces (F, 3), F >= 1, indexing the vertices",
                                      f"shape {faces.shape}, dtype {faces.dtype}", "pass a triangle mesh"))
        self.faces = faces.astype(np.int64)


def _triangle_mesh(o3d, path: Path):
    """open3d's legacy mesh of ``path``, refused (naming the file) when it holds no triangles."""
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):  # our error replaces its warning
        geometry = o3d.io.read_triangle_mesh(str(path))
    if len(geometry.triangles) == 0:
        raise ConfigError(expected(f"a triangle mesh in file {path}", f"no triangles ({len(geometry.vertices)} "
                                   "vertices read): not a mesh, or a file open3d cannot parse",
                                   "export the mesh with its faces, or save the points as PLY and read them with "
                                   "read_point_cloud"))
    return geometry


def is_mesh_file(path: str | Path) -> bool:
    """Whether ``path`` holds triangles: ``.obj``, ``.off`` and ``.stl`` always, ``.ply`` when its header declares
    faces (a scan's PLY has only vertices)."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        return path.suffix.lower() in MESH_SUFFIXES
    with open(path, "rb") as handle:
        _, elements, _ = _parse_ply_header(handle.read(1 << 16), path)
    return any(name == "face" and count > 0 for name, count, _ in elements)


def read_mesh(path: str | Path) -> Mesh:
    """The triangles of a mesh file (``.obj``, ``.off``, ``.ply``, ``.stl``) through open3d.

    Example:
        >>> import tempfile, os
        >>> file = os.path.join(tempfile.mkdtemp(), "t.off")
        >>> _ = open(file, "w").write("OFF\\n3 1 0\\n0 0 0\\n1 0 0\\n0 1 0\\n3 0 1 2\\n")
        >>> read_mesh(file).faces.tolist()
        [[0, 1, 2]]
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("an existing mesh file", str(path), "check the path"))
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ConfigError(expected(f"a mesh file ({', '.join(MESH_SUFFIXES)})", str(path), "convert it to OBJ or PLY"))
    geometry = _triangle_mesh(require_open3d(), path)
    vertices = _column_block(np.asarray(geometry.vertices), "vertices", source=f"file {path}")
    return Mesh(vertices, np.asarray(geometry.triangles))


def _to_o3d_tensor(o3d, values: object, name: str, dtype: torch.dtype):
    """An open3d tensor sharing ``values``' memory (DLPack) when it is a contiguous tensor on a device open3d
    has; otherwise a copy on the CPU."""
    tensor = torch.as_tensor(values).to(dtype)
    if tensor.dim() != 2 or tensor.shape[1] != 3:
        raise ShapeError(expected(f"{name} shaped (N, 3)", f"shape {tuple(tensor.shape)}", "pass one row per point"))
    if tensor.is_cuda and not o3d.core.cuda.is_available():  # open3d's CPU build: copy to the host
        tensor = tensor.cpu()
    return o3d.core.Tensor.from_dlpack(torch.utils.dlpack.to_dlpack(tensor.contiguous()))


def to_open3d(geometry: object, *, normals: object = None, colors: object = None):
    """An ``open3d.t.geometry`` object of a cloud (a :class:`PointCloud`, an ``(N, 3)`` array or tensor, with
    optional ``normals`` and ``colors``) or of a :class:`Mesh`. A contiguous float32 tensor is shared, not
    copied: writes through either side are seen by the other.

    Example:
        >>> points = torch.zeros(4, 3)
        >>> cloud = to_open3d(points)
        >>> points[0, 0] = 7.0; float(cloud.point.positions[0, 0].item())
        7.0
    """
    o3d = require_open3d()
    if isinstance(geometry, Mesh):
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = _to_o3d_tensor(o3d, geometry.vertices, "vertices", torch.float32)
        mesh.triangle.indices = _to_o3d_tensor(o3d, geometry.faces, "faces", torch.int64)
        return mesh
    if isinstance(geometry, PointCloud):
        geometry, normals, colors = geometry.points, geometry.normals, geometry.colors
    if not isinstance(geometry, (torch.Tensor, np.ndarray)):
        raise ConfigError(expected("a PointCloud, a Mesh or an (N, 3) array or tensor", type(geometry).__name__,
                                   "wrap the points: PointCloud(points)"))
    points = _to_o3d_tensor(o3d, geometry, "points", torch.float32)
    cloud = o3d.t.geometry.PointCloud(points.device)
    cloud.point.positions = points
    for key, values in (("normals", normals), ("colors", colors)):
        if values is not None:
            cloud.point[key] = _to_o3d_tensor(o3d, values, key, torch.float32)
    return cloud


def from_open3d(geometry: object) -> dict[str, torch.Tensor]:
    """Torch tensors of an open3d cloud (``points`` and, when present, ``normals`` and ``colors``) or triangle
    mesh (``vertices`` and ``faces``), legacy or tensor geometry; tensor geometry is shared through DLPack.

    Example:
        >>> sorted(from_open3d(to_open3d(torch.ones(2, 3), colors=torch.zeros(2, 3))))
        ['colors', 'points']
    """
    o3d = require_open3d()
    if isinstance(geometry, o3d.geometry.PointCloud):
        geometry = o3d.t.geometry.PointCloud.from_legacy(geometry)
    elif isinstance(geometry, o3d.geometry.TriangleMesh):
        geometry = o3d.t.geometry.TriangleMesh.from_legacy(geometry)
    if isinstance(geometry, o3d.t.geometry.PointCloud):
        parts = {name: geometry.point[key] for key, name in
                 (("positions", "points"), ("normals", "normals"), ("colors", "colors")) if key in geometry.point}
    elif isinstance(geometry, o3d.t.geometry.TriangleMesh):
        parts = {"vertices": geometry.vertex.positions}
        if "indices" in geometry.triangle:
            parts["faces"] = geometry.triangle.indices
    else:
        raise ConfigError(expected("an open3d point cloud or triangle mesh", type(geometry).__name__,
                                   "pass an open3d.geometry or open3d.t.geometry object"))
    return {name: torch.utils.dlpack.from_dlpack(tensor.to_dlpack()) for name, tensor in parts.items()}
