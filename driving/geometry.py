"""Planar geometry of driving scenes: poses, vehicle boxes, polylines and the drivable-area polygon.

Conventions (NAVSIM, arXiv 2406.15349, and nuPlan): every coordinate is metric and in the **ego frame at the
current time** (x forward, y left, heading θ counter-clockwise from +x, in radians wrapped to (−π, π]); a pose
is ``(x, y, θ)``; a box is ``(x, y, θ, length, width)`` with ``(x, y)`` its centre. NAVSIM places the ego pose at
the rear axle; here every pose, the ego's included, is the box centre, which keeps the footprint test one line.

Shapely (``pip install "flowzoo[driving]"``) is imported here and nowhere else in the package, so a missing
installation gives one error naming the extra. Box overlap uses the separating-axis test in numpy, vectorised
over any batch shape, because collision checks run for every sampled plan at every time step.
"""

from __future__ import annotations

import numpy as np

from flowzoo.core.errors import MissingDependencyError, expected

try:
    import shapely
    from shapely.geometry import Polygon
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(expected("the shapely package (>= 2) for flowzoo.driving", "it is not installed",
                                          'pip install "flowzoo[driving]"')) from error

__all__ = [
    "EGO_LENGTH", "EGO_WIDTH", "wrap_angle", "box_corners", "boxes_overlap", "points_in_boxes", "arc_lengths",
    "resample_polyline", "poses_along", "project_onto_polyline", "offset_polyline", "polygon_from_vertices",
    "polygon_vertices", "points_inside", "closed_union",
]

EGO_LENGTH = 5.176  # nuPlan's ego vehicle (Chrysler Pacifica), the footprint NAVSIM scores
EGO_WIDTH = 2.297
_CORNER_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def wrap_angle(theta: np.ndarray | float) -> np.ndarray:
    """Angles wrapped to (−π, π].

    Example:
        >>> float(wrap_angle(3 * np.pi / 2))
        -1.5707963267948966
    """
    return np.pi - np.mod(np.pi - np.asarray(theta, dtype=float), 2 * np.pi)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners of boxes ``(..., 5)`` = (x, y, θ, length, width) as ``(..., 4, 2)``, counter-clockwise from
    front-left.

    Example:
        >>> box_corners(np.array([0.0, 0.0, 0.0, 4.0, 2.0])).tolist()
        [[2.0, 1.0], [-2.0, 1.0], [-2.0, -1.0], [2.0, -1.0]]
    """
    boxes = np.asarray(boxes, dtype=float)
    c, s = np.cos(boxes[..., 2])[..., None], np.sin(boxes[..., 2])[..., None]
    along = _CORNER_SIGNS[:, 0] * (boxes[..., 3:4] / 2)
    across = _CORNER_SIGNS[:, 1] * (boxes[..., 4:5] / 2)
    x = boxes[..., 0:1] + c * along - s * across
    y = boxes[..., 1:2] + s * along + c * across
    return np.stack([x, y], -1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether oriented boxes ``a`` and ``b`` (broadcastable ``(..., 5)``) overlap (separating-axis theorem).

    Touching boxes count as overlapping. Returns a boolean array of the broadcast batch shape.

    Example:
        >>> car = np.array([0.0, 0.0, 0.0, 4.0, 2.0])
        >>> boxes_overlap(car, np.array([[3.9, 0, 0.5, 4, 2], [6.0, 0, 0, 4, 2]])).tolist()
        [True, False]
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    shape = a.shape[:-1]
    a, b = a.reshape(-1, 5), b.reshape(-1, 5)
    # Bounding circles first: most pairs in a scene are far apart, and only the rest need the full test.
    reach = (np.hypot(a[..., 3], a[..., 4]) + np.hypot(b[..., 3], b[..., 4])) / 2
    overlap = np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]) <= reach
    if not overlap.any():
        return overlap.reshape(shape)
    a, b = a[overlap], b[overlap]
    ca, cb = box_corners(a), box_corners(b)
    separated = np.zeros(len(a), dtype=bool)
    for theta in (a[:, 2], a[:, 2] + np.pi / 2, b[:, 2], b[:, 2] + np.pi / 2):
        axis = np.stack([np.cos(theta), np.sin(theta)], -1)[:, None, :]
        pa, pb = (ca * axis).sum(-1), (cb * axis).sum(-1)
        separated |= (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
    overlap[overlap] = ~separated
    return overlap.reshape(shape)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(P, B)`` mask: whether point ``p`` (of ``(P, 2)``) lies in box ``b`` (of ``(B, 5)``).

    Example:
        >>> points_in_boxes(np.array([[0.5, 0.0], [3.0, 0.0]]), np.array([[0, 0, 0, 2, 2.0]])).ravel().tolist()
        [True, False]
    """
    points, boxes = np.asarray(points, dtype=float), np.asarray(boxes, dtype=float)
    d = points[:, None, :] - boxes[None, :, :2]
    c, s = np.cos(boxes[:, 2]), np.sin(boxes[:, 2])
    along = d[..., 0] * c + d[..., 1] * s
    across = -d[..., 0] * s + d[..., 1] * c
    return (np.abs(along) <= boxes[:, 3] / 2) & (np.abs(across) <= boxes[:, 4] / 2)


def arc_lengths(polyline: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each vertex of a ``(K, 2)`` polyline (starts at 0)."""
    steps = np.linalg.norm(np.diff(np.asarray(polyline, dtype=float), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def poses_along(polyline: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Poses ``(*s.shape, 3)`` at arc lengths ``s`` (any shape, e.g. one row per speed profile) along a ``(K, 2)``
    polyline (headings interpolated between the segments' midpoints).

    Arc lengths beyond the ends extrapolate along the first or last segment, so a vehicle that drives past the
    end of a centreline keeps going straight. Every pose depends only on its own arc length, so a batch of rows
    gives the poses of each row bit for bit while the polyline's lengths and headings are computed once.

    Example:
        >>> poses_along(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]), np.array([5.0, 15.0, 25.0])).tolist()
        [[5.0, 0.0, 0.0], [10.0, 5.0, 1.5707963267948966], [10.0, 15.0, 1.5707963267948966]]
    """
    polyline = np.asarray(polyline, dtype=float)
    s = np.asarray(s, dtype=float)
    cum = arc_lengths(polyline)
    seg = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(polyline) - 2)
    direction = polyline[seg + 1] - polyline[seg]
    length = np.maximum(cum[seg + 1] - cum[seg], 1e-12)
    xy = polyline[seg] + direction * ((s - cum[seg]) / length)[..., None]
    # Headings interpolate between segment midpoints, so that yaw rates of a vehicle following a sampled arc are
    # smooth instead of stepping at every vertex.
    segments = np.diff(polyline, axis=0)
    headings = np.unwrap(np.arctan2(segments[:, 1], segments[:, 0]))
    theta = np.interp(s, (cum[1:] + cum[:-1]) / 2, headings)
    return np.concatenate([xy, wrap_angle(theta)[..., None]], -1)


def resample_polyline(polyline: np.ndarray, count: int) -> np.ndarray:
    """``count`` points equally spaced in arc length along a ``(K, 2)`` polyline, both ends kept."""
    cum = arc_lengths(polyline)
    return poses_along(polyline, np.linspace(0.0, cum[-1], count))[:, :2]


def project_onto_polyline(points: np.ndarray, polyline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc length of the closest point of a ``(K, 2)`` polyline and the distance to it, for ``(P, 2)`` points.

    Example:
        >>> s, d = project_onto_polyline(np.array([[3.0, 1.0]]), np.array([[0.0, 0.0], [10.0, 0.0]]))
        >>> float(s[0]), float(d[0])
        (3.0, 1.0)
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    polyline = np.asarray(polyline, dtype=float)
    start, direction = polyline[:-1], np.diff(polyline, axis=0)
    length2 = np.maximum((direction ** 2).sum(-1), 1e-12)
    u = np.clip(((points[:, None] - start[None]) * direction[None]).sum(-1) / length2, 0.0, 1.0)
    closest = start[None] + u[..., None] * direction[None]
    dist = np.linalg.norm(points[:, None] - closest, axis=-1)
    best = dist.argmin(1)
    rows = np.arange(len(points))
    return arc_lengths(polyline)[best] + u[rows, best] * np.sqrt(length2[best]), dist[rows, best]


def offset_polyline(poses: np.ndarray, offset: float | np.ndarray) -> np.ndarray:
    """The ``(K, 2)`` curve at signed lateral ``offset`` (positive: left; a scalar or one per pose) of a ``(K, 3)``
    pose sequence.

    With exact headings (as from a curvature integration) this is exact for straight lines and circular arcs.
    """
    poses = np.asarray(poses, dtype=float)
    normal = np.column_stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])])
    return poses[:, :2] + np.reshape(offset, (-1, 1)) * normal


def polygon_from_vertices(vertices: np.ndarray) -> Polygon:
    """A shapely polygon from its ``(V, 2)`` exterior ring (rows of NaN, the padding of the schema, dropped)."""
    vertices = np.asarray(vertices, dtype=float)
    return Polygon(vertices[~np.isnan(vertices).any(-1)])


def polygon_vertices(polygon: Polygon) -> np.ndarray:
    """The ``(V, 2)`` exterior ring of a polygon, without the repeated closing vertex."""
    return np.asarray(polygon.exterior.coords, dtype=float)[:-1]


def points_inside(polygon: Polygon, points: np.ndarray) -> np.ndarray:
    """Mask of ``(..., 2)`` points that lie inside or on the boundary of ``polygon``.

    Example:
        >>> square = polygon_from_vertices(np.array([[0.0, 0], [2, 0], [2, 2], [0, 2]]))
        >>> points_inside(square, np.array([[1.0, 1.0], [3.0, 1.0], [2.0, 1.0]])).tolist()
        [True, False, True]
    """
    points = np.asarray(points, dtype=float)
    shapely.prepare(polygon)
    return shapely.intersects_xy(polygon, points[..., 0], points[..., 1])


def closed_union(strips: list[np.ndarray], curb_radius: float) -> Polygon:
    """The drivable area: the union of road strips (each a ``(V, 2)`` ring) with its concave corners rounded to
    ``curb_radius`` (a morphological closing), as kerbs are at real junctions. Returns one polygon."""
    union = shapely.union_all([Polygon(s) for s in strips])
    if curb_radius > 0:
        union = union.buffer(curb_radius, quad_segs=4).buffer(-curb_radius, quad_segs=4)
    if union.geom_type != "Polygon":  # strips that merely touch: keep the largest piece, which holds the ego
        union = max(union.geoms, key=lambda g: g.area)
    # Drop vertices that add under 2 cm of detail: curved roads otherwise carry a vertex per metre of kerb.
    return Polygon(Polygon(union.exterior.coords).simplify(0.02).exterior.coords)

